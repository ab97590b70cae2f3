"""diagnose() explains, from the receiving database, why liblime refused a message."""

from __future__ import annotations

import hashlib

import pytest

from pylime import diagnose, errors
from pylime.types import Policy

from .conftest import Net


def _digest(path: object) -> str:
    with open(path, "rb") as f:  # type: ignore[call-overload]
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("case,reason", [
    ("replay", errors.ReplayError),
    ("tamper", errors.BadTagError),
    ("truncated", errors.MalformedMessageError),
    ("opk", errors.UnknownOPkError),
    ("fine", None),
])
def test_diagnose_a_message_liblime_refused(net: Net, case: str,
                                            reason: type[errors.DecryptionError] | None) -> None:
    """The reason comes out of liblime's own database, which stays byte-identical."""
    a, b = net.dev("alice", "ref"), net.dev("bob", "lime")
    first = a.send(b.user, [b], b"first", Policy.DR_MESSAGE).recipients[0].dr_message
    if case == "opk":
        b.manager.decrypt(b.device_id, b.user, a.device_id, first)
        b.manager.delete_peer(a.device_id)
        dr = first
    else:
        b.manager.decrypt(b.device_id, b.user, a.device_id, first)
        dr = a.send(b.user, [b], b"second", Policy.DR_MESSAGE).recipients[0].dr_message
        if case == "replay":
            b.manager.decrypt(b.device_id, b.user, a.device_id, dr)
        elif case == "tamper":
            dr = dr[:-1] + bytes([dr[-1] ^ 1])
        elif case == "truncated":
            dr = dr[:30]
    if reason is not None:
        with pytest.raises(errors.DecryptionError):
            b.manager.decrypt(b.device_id, b.user, a.device_id, dr)
    before = _digest(b.path)
    found = diagnose(b.path, b.device_id, b.user, a.device_id, dr)
    assert _digest(b.path) == before
    if reason is None:
        assert found is None
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, dr).plaintext == b"second"
    else:
        assert isinstance(found, reason)


def test_diagnose_needs_the_user_and_the_file(net: Net) -> None:
    """An unknown local user or a missing database is an error, not a diagnosis."""
    b = net.dev("bob", "lime")
    with pytest.raises(errors.UserNotFoundError):
        diagnose(b.path, "sip:nobody@example.org", b.user, "sip:x@example.org", b"\x01")
    with pytest.raises(FileNotFoundError):
        diagnose(b.path.with_name("missing.sqlite3"), b.device_id, b.user, "sip:x", b"\x01")
