"""Messages both backends refuse; the reference says why with the right DecryptionError subclass."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pylime import errors
from pylime.types import Policy

from .conftest import Dev, Net

Tamper = Callable[[bytes], bytes]


def _flip(pos: int) -> Tamper:
    return lambda m: m[:pos] + bytes([m[pos] ^ 0x01]) + m[pos + 1:]


def _both_refuse(net: Net, sender_kind: str, make: Callable[[Dev, Dev], tuple[bytes, bytes]],
                 reason: type[errors.DecryptionError]) -> None:
    """Run ``make`` against a lime and a reference receiver; both refuse, ref with ``reason``."""
    for kind in ("lime", "ref"):
        a = net.dev("alice" + kind, sender_kind)
        b = net.dev("bob" + kind, kind)
        dr, cipher = make(a, b)
        expected = reason if kind == "ref" else errors.DecryptionError
        with pytest.raises(expected):
            b.manager.decrypt(b.device_id, b.user, a.device_id, dr, cipher)


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_replay_is_refused(net: Net, sender: str) -> None:
    """A message decrypted once does not decrypt again (ReplayError)."""
    def make(a: Dev, b: Dev) -> tuple[bytes, bytes]:
        b.open(b.user, a, a.send(b.user, [b], b"1"))
        a.open(a.user, b, b.send(a.user, [a], b"r"))
        out = a.send(b.user, [b], b"2")
        b.open(b.user, a, out)
        return out.recipients[0].dr_message, out.cipher_message
    _both_refuse(net, sender, make, errors.ReplayError)


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_replayed_first_message_names_replay_not_opk(net: Net, sender: str) -> None:
    """Replaying the X3DH message after its OPk was used is a replay."""
    def make(a: Dev, b: Dev) -> tuple[bytes, bytes]:
        out = a.send(b.user, [b], b"1")
        b.open(b.user, a, out)
        return out.recipients[0].dr_message, b""
    _both_refuse(net, sender, make, errors.ReplayError)


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_unknown_opk(net: Net, sender: str) -> None:
    """An X3DH init naming an OPk the receiver no longer holds fails with UnknownOPkError."""
    def make_consumed(a: Dev, b: Dev) -> tuple[bytes, bytes]:
        out = a.send(b.user, [b], b"1")
        b.open(b.user, a, out)
        b.manager.delete_peer(a.device_id)
        return out.recipients[0].dr_message, b""
    _both_refuse(net, sender, make_consumed, errors.UnknownOPkError)


@pytest.mark.parametrize("sender", ["lime", "ref"])
@pytest.mark.parametrize("where", ["header", "body", "tag"])
def test_altered_message_fails_authentication(net: Net, sender: str, where: str) -> None:
    """One flipped bit in the header's Ns, the ciphertext or the tag gives BadTagError."""
    def make(a: Dev, b: Dev) -> tuple[bytes, bytes]:
        b.open(b.user, a, a.send(b.user, [b], b"1"))
        a.open(a.user, b, b.send(a.user, [a], b"r"))
        dr = a.send(b.user, [b], b"some text", Policy.DR_MESSAGE).recipients[0].dr_message
        pos = {"header": 4, "body": len(dr) - 20, "tag": len(dr) - 1}[where]
        return _flip(pos)(dr), b""
    _both_refuse(net, sender, make, errors.BadTagError)


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_altered_cipher_message(net: Net, sender: str) -> None:
    """A flipped bit in the shared cipher message fails (its tag is in the DR AD)."""
    def make(a: Dev, b: Dev) -> tuple[bytes, bytes]:
        out = a.send(b.user, [b], b"x" * 40, Policy.CIPHER_MESSAGE)
        return out.recipients[0].dr_message, _flip(3)(out.cipher_message)
    _both_refuse(net, sender, make, errors.BadTagError)


@pytest.mark.parametrize("sender", ["lime", "ref"])
@pytest.mark.parametrize("damage", ["version", "curve", "truncated", "short-cipher", "mode"])
def test_malformed_messages(net: Net, sender: str, damage: str) -> None:
    """Bad version, wrong curve, truncation, a too-short cipher message or a mode mismatch."""
    def make(a: Dev, b: Dev) -> tuple[bytes, bytes]:
        out = a.send(b.user, [b], b"hello", Policy.DR_MESSAGE)
        dr = out.recipients[0].dr_message
        if damage == "version":
            return b"\x02" + dr[1:], b""
        if damage == "curve":
            return dr[:2] + bytes([3 - dr[2]]) + dr[3:], b""
        if damage == "truncated":
            return dr[:20], b""
        if damage == "short-cipher":
            return dr, b"0123456789"
        return dr, b"\x00" * 32  # DR message in direct mode, cipher message given
    _both_refuse(net, sender, make, errors.MalformedMessageError)


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_failed_decryption_changes_nothing(net: Net, sender: str) -> None:
    """After any refused message the genuine one still decrypts on both backends."""
    for kind in ("lime", "ref"):
        a, b = net.dev("a" + kind, sender), net.dev("b" + kind, kind)
        out = a.send(b.user, [b], b"genuine", Policy.DR_MESSAGE)
        dr = out.recipients[0].dr_message
        for bad in (_flip(len(dr) - 1)(dr), dr[:-1], _flip(1)(dr), _flip(10)(dr)):
            try:
                b.manager.decrypt(b.device_id, b.user, a.device_id, bad)
            except errors.DecryptionError:
                pass
        assert b.open(b.user, a, out).plaintext == b"genuine"


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_replayed_x3dh_message_without_opk(net: Net, sender: str) -> None:
    """A replayed first message without OPk decrypts again on both: lime builds a new session."""
    results = {}
    for kind in ("lime", "ref"):
        a = net.dev("alice" + kind, sender)
        b = net.dev("bob" + kind, kind, opk_batch=0)
        dr = a.send(b.user, [b], b"no opk").recipients[0].dr_message
        assert dr[3] == 0
        b.manager.decrypt(b.device_id, b.user, a.device_id, dr)
        try:
            results[kind] = b.manager.decrypt(b.device_id, b.user, a.device_id, dr).plaintext
        except errors.DecryptionError as exc:
            results[kind] = type(exc).__name__
    assert results == {"lime": b"no opk", "ref": b"no opk"}


@pytest.mark.parametrize("sender", ["lime", "ref"])
def test_bytes_between_seed_and_tag_are_ignored(net: Net, sender: str) -> None:
    """In cipher-message mode lime reads a 32-byte seed and the last 16 bytes; both accept padding."""
    for kind in ("lime", "ref"):
        a, b = net.dev("alice" + kind, sender), net.dev("bob" + kind, kind)
        out = a.send(b.user, [b], b"hello world", Policy.CIPHER_MESSAGE)
        dr = out.recipients[0].dr_message
        padded = dr[:-16] + b"PADDING" + dr[-16:]
        got = b.manager.decrypt(b.device_id, b.user, a.device_id, padded, out.cipher_message)
        assert got.plaintext == b"hello world"
