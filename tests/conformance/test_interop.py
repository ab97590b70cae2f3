"""liblime and the reference talk to each other: every pairing, curve, policy and direction."""

from __future__ import annotations

import pytest

from pylime.errors import DecryptionError
from pylime.types import PeerStatus, Policy

from .conftest import Net

SHORT = b"Short Message"
LONG = bytes(range(256)) * 2  # 512 bytes: beyond both thresholds with two recipients


@pytest.mark.parametrize("policy", list(Policy), ids=[p.name for p in Policy])
@pytest.mark.parametrize("initiator", ["first", "second"])
def test_conversation_every_pairing_and_policy(net: Net, pairing: tuple[str, str],
                                               policy: Policy, initiator: str) -> None:
    """Alternating bursts decrypt both ways whichever backend starts, under every policy."""
    a = net.dev("alice", pairing[0])
    b = net.dev("bob", pairing[1])
    if initiator == "second":
        a, b = b, a
    for rnd, burst in enumerate([1, 3, 2, 1]):
        sender, receiver = (a, b) if rnd % 2 == 0 else (b, a)
        for i in range(burst):
            text = SHORT + bytes([rnd, i]) if i % 2 else LONG + bytes([rnd])
            out = sender.send(receiver.user, [receiver], text, policy)
            if policy == Policy.CIPHER_MESSAGE:
                assert out.cipher_message
            status, plain = receiver.open(receiver.user, sender, out)
            assert plain == text
            expected = PeerStatus.UNKNOWN if (rnd, i) == (0, 0) else PeerStatus.UNTRUSTED
            assert status == expected


def test_first_message_sizes_match_the_spec(net: Net, pairing: tuple[str, str]) -> None:
    """Both backends emit the same message sizes (X3DH init with OPk, both payload modes)."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    x, e = (32, 32) if net.curve == 1 else (56, 57)
    header = 3 + 1 + e + x + 4 + 4 + 4 + x
    out = a.send(b.user, [b], b"123456789", Policy.DR_MESSAGE)
    assert len(out.recipients[0].dr_message) == header + 9 + 16
    out2 = a.send(b.user, [b], b"123456789" * 3, Policy.CIPHER_MESSAGE)
    assert len(out2.recipients[0].dr_message) == header + 48
    assert len(out2.cipher_message) == 27 + 16
    assert b.open(b.user, a, out2).plaintext == b"123456789" * 3
    assert b.open(b.user, a, out).plaintext == b"123456789"


@pytest.mark.parametrize("policy", list(Policy), ids=[p.name for p in Policy])
def test_group_mixing_backends(net: Net, policy: Policy) -> None:
    """One encryption to a mixed group (both backends, own other device) decrypts everywhere."""
    alice1 = net.dev("alice", "ref")
    alice2 = net.dev("alice", "lime")
    members = [net.dev("bob", "lime"), net.dev("bob", "ref"), net.dev("carol", "ref"), alice2]
    room = "sip:room@conf.example.org"
    for length in (5, 90, 200, 700):
        text = bytes([length % 256]) * length
        out = alice1.send(room, members, text, policy)
        assert [r.device_id for r in out.recipients] == [m.device_id for m in members]
        for m in members:
            assert m.open(room, alice1, out).plaintext == text
    # and a lime member answers the whole room, reference devices included
    out = members[0].send(room, [alice1, members[1], members[2]], b"ack", policy)
    for m in (alice1, members[1], members[2]):
        assert m.open(room, members[0], out).plaintext == b"ack"


@pytest.mark.parametrize("n,length,direct", [
    (1, 5000, True), (2, 80, True), (2, 81, False), (3, 10, True),
])
def test_optimize_upload_size_choice_matches_lime(net: Net, n: int, length: int,
                                                  direct: bool) -> None:
    """optimizeUploadSize picks the same mode on both backends at the thresholds."""
    for kind in ("lime", "ref"):
        sender = net.dev("s" + kind, kind)
        peers = [net.dev(f"p{kind}{i}", "ref" if i % 2 else "lime") for i in range(n)]
        out = sender.send("sip:x@example.org", peers, b"x" * length)
        assert (out.cipher_message == b"") is direct
        for p in peers:
            assert p.open("sip:x@example.org", sender, out).plaintext == b"x" * length


@pytest.mark.parametrize("length,direct", [(176, True), (177, False)])
def test_optimize_global_bandwidth_threshold(net: Net, length: int, direct: bool) -> None:
    """optimizeGlobalBandwidth switches at 176 bytes with two recipients, as liblime does."""
    for kind in ("lime", "ref"):
        sender = net.dev("s" + kind, kind)
        peers = [net.dev(f"q{kind}{i}", kind) for i in range(2)]
        out = sender.send("sip:x@example.org", peers, b"y" * length,
                          Policy.OPTIMIZE_GLOBAL_BANDWIDTH)
        assert (out.cipher_message == b"") is direct


def test_wrong_recipient_user_id_fails_on_both(net: Net, pairing: tuple[str, str]) -> None:
    """Decrypting under another recipient user id fails, whichever backend sent."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    out = a.send(b.user, [b], b"hello")
    with pytest.raises(DecryptionError):
        b.open("sip:someone-else@example.org", a, out)
    assert b.open(b.user, a, out).plaintext == b"hello"


def test_x3dh_init_until_first_reply(net: Net, pairing: tuple[str, str]) -> None:
    """The initiator repeats its X3DH init until it decrypts a reply, on both backends."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    m1 = a.send(b.user, [b], b"1").recipients[0].dr_message
    m2 = a.send(b.user, [b], b"2").recipients[0].dr_message
    assert m1[1] & 1 and m2[1] & 1
    b.open(b.user, a, a.send(b.user, [b], b"3"))
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, m1).plaintext == b"1"
    reply = b.send(a.user, [a], b"r")
    assert not reply.recipients[0].dr_message[1] & 1
    a.open(a.user, b, reply)
    m4 = a.send(b.user, [b], b"4").recipients[0].dr_message
    assert not m4[1] & 1
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, m4).plaintext == b"4"
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, m2).plaintext == b"2"
