"""Out-of-order delivery, lime's skip limit (1024) and sending-chain limit (1000), on both backends."""

from __future__ import annotations

import pytest

from pylime import errors
from pylime.errors import DecryptionError, TooManySkippedError
from pylime.types import Policy

from .conftest import Dev, Net


def _dr(out: object) -> bytes:
    return out.recipients[0].dr_message  # type: ignore[attr-defined, no-any-return]


def test_out_of_order_and_across_ratchets(net: Net, pairing: tuple[str, str]) -> None:
    """Delayed messages from older chains decrypt after newer ones, on every pairing."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    chain1 = [_dr(a.send(b.user, [b], b"c1-%d" % i, Policy.DR_MESSAGE)) for i in range(5)]
    for i in (4, 0, 2):
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, chain1[i]).plaintext == b"c1-%d" % i
    a.open(a.user, b, b.send(a.user, [a], b"reply"))
    chain2 = [_dr(a.send(b.user, [b], b"c2-%d" % i, Policy.DR_MESSAGE)) for i in range(4)]
    for i in (3, 1):
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, chain2[i]).plaintext == b"c2-%d" % i
    for i in (3, 1):  # the old chain still has its skipped keys
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, chain1[i]).plaintext == b"c1-%d" % i
    for i in (0, 2):
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, chain2[i]).plaintext == b"c2-%d" % i


def _skip_setup(a: Dev, b: Dev, k: int, j: int) -> list[bytes]:
    """Alice's chain B: b gets Ns 0, misses Ns 1..k; chain C (j messages) after b's reply."""
    first = a.send(b.user, [b], b"x3dh")
    b.open(b.user, a, first)
    a.open(a.user, b, b.send(a.user, [a], b"r1"))
    chain_b = [_dr(a.send(b.user, [b], b"B%d" % i, Policy.DR_MESSAGE)) for i in range(k + 1)]
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, chain_b[0]).plaintext == b"B0"
    a.open(a.user, b, b.send(a.user, [a], b"r2"))
    return [_dr(a.send(b.user, [b], b"C%d" % i, Policy.DR_MESSAGE)) for i in range(j)]


@pytest.mark.parametrize("past", [False, True], ids=["at-limit", "one-past"])
def test_skip_limit_1024(net: Net, pairing: tuple[str, str], past: bool) -> None:
    """Skipping exactly 1024 keys across two chains works; 1025 fails (TooManySkipped on ref)."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    k = 600
    j = 1025 - k + (1 if past else 0)  # derivations skipped = k + (j - 1)
    chain_c = _skip_setup(a, b, k, j)
    last = chain_c[-1]
    if not past:
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, last).plaintext == b"C%d" % (j - 1)
        return
    expected = TooManySkippedError if b.kind == "ref" else DecryptionError
    with pytest.raises(expected):
        b.manager.decrypt(b.device_id, b.user, a.device_id, last)
    # nothing was consumed: the one before it is exactly at the limit and still decrypts
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, chain_c[-2]).plaintext == b"C%d" % (j - 2)


def test_sending_chain_limit_renews_the_session(net: Net, pairing: tuple[str, str]) -> None:
    """After 1000 messages without an answer the sender starts a new X3DH session."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    b.open(b.user, a, a.send(b.user, [b], b"hi"))
    a.open(a.user, b, b.send(a.user, [a], b"hello"))
    msgs = [_dr(a.send(b.user, [b], b"m%d" % i, Policy.DR_MESSAGE)) for i in range(1001)]
    assert not msgs[999][1] & 1, "the 1000th message is still on the old session"
    assert msgs[1000][1] & 1, "the 1001st carries a new X3DH init"
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, msgs[1000]).plaintext == b"m1000"
    # the old session is stale but still decrypts its late messages
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, msgs[999]).plaintext == b"m999"
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, msgs[3]).plaintext == b"m3"
    reply = b.send(a.user, [a], b"back")
    assert a.open(a.user, b, reply).plaintext == b"back"


@pytest.mark.parametrize("kind", ["lime", "ref"])
@pytest.mark.parametrize("after", [128, 129])
def test_skipped_keys_expire_after_128_messages_and_update(net: Net, kind: str,
                                                           after: int) -> None:
    """update() drops a skipped key once more than 128 messages were decrypted after it."""
    a = net.dev("alice", "ref" if kind == "lime" else "lime")
    b = net.dev("bob", kind)
    b.open(b.user, a, a.send(b.user, [b], b"hi"))
    a.open(a.user, b, b.send(a.user, [a], b"hello"))
    skipped = _dr(a.send(b.user, [b], b"skipped", Policy.DR_MESSAGE))
    for i in range(after + 1):
        b.open(b.user, a, a.send(b.user, [b], b"%d" % i, Policy.DR_MESSAGE))
    b.manager.update()
    if after == 128:
        assert b.manager.decrypt(b.device_id, b.user, a.device_id, skipped).plaintext == b"skipped"
    else:
        expected = errors.ReplayError if kind == "ref" else DecryptionError
        with pytest.raises(expected):
            b.manager.decrypt(b.device_id, b.user, a.device_id, skipped)
