"""Messages flow: one-to-one, a user's own devices, groups, and the four policies."""

from __future__ import annotations

import pytest

from pylime import PeerStatus, Policy
from tests.wire import counters, expects_cipher_message, has_x3dh_init, ratchet_key

CONF = "sip:conference-factory@example.org;conf-id=abc"


def test_one_to_one_both_ways_with_dh_ratchet_steps(world):
    """Alternating bursts decrypt on both sides, and each turn of talk steps the DH ratchet."""
    alice, bob = world.device("alice"), world.device("bob")
    keys_seen = set()
    speakers = [(alice, bob), (bob, alice)] * 3
    for turn, (src, dst) in enumerate(speakers):
        burst = []
        for i in range(3):
            text = f"turn {turn} message {i}".encode()
            out = src.encrypt(dst.user, [dst], text)
            burst.append((text, out))
        dr = burst[0][1].recipients[0].dr_message
        keys_seen.add(ratchet_key(dr, world.curve))
        assert counters(dr, world.curve)[0] == 0, "a new sending chain starts at Ns=0"
        for text, out in burst:
            assert dst.receive(dst.user, src, out).plaintext == text
    assert len(keys_seen) == len(speakers), "every turn uses a fresh ratchet key"


def test_x3dh_init_is_sent_until_the_first_reply(world):
    """The initiator repeats its X3DH init until the peer answers, then drops it."""
    alice, bob = world.device("alice"), world.device("bob")
    first = alice.encrypt(bob.user, [bob], b"one").recipients[0].dr_message
    second = alice.encrypt(bob.user, [bob], b"two").recipients[0].dr_message
    assert has_x3dh_init(first) and has_x3dh_init(second)
    bob.decrypt(bob.user, alice, first)
    bob.decrypt(bob.user, alice, second)
    reply = bob.encrypt(alice.user, [alice], b"three")
    assert not has_x3dh_init(reply.recipients[0].dr_message)
    alice.receive(alice.user, bob, reply)
    after = alice.encrypt(bob.user, [bob], b"four").recipients[0].dr_message
    assert not has_x3dh_init(after)


def test_a_users_other_devices_read_what_it_sends(world):
    """alice1 includes alice2 among the recipients; alice2 decrypts with the same user id."""
    alice1, alice2, bob = world.device("alice"), world.device("alice"), world.device("bob")
    out = alice1.encrypt(bob.user, [bob, alice2], b"seen by my other phone")
    assert [r.device_id for r in out.recipients] == [bob.device_id, alice2.device_id]
    assert alice2.receive(bob.user, alice1, out).plaintext == b"seen by my other phone"
    assert bob.receive(bob.user, alice1, out).plaintext == b"seen by my other phone"


@pytest.mark.parametrize("policy", list(Policy), ids=lambda p: p.name)
@pytest.mark.parametrize("size", [10, 300])
def test_group_of_three_users_with_two_devices_each(world, policy, size):
    """Every member reads every other member's message; cipher_message follows the policy."""
    members = [world.device(name) for name in ("alice", "bob", "carol") for _ in range(2)]
    for sender in members:
        others = [m for m in members if m is not sender]
        text = (sender.device_id.encode() * 20)[:size]
        out = sender.encrypt(CONF, others, text, policy=policy)
        assert bool(out.cipher_message) == expects_cipher_message(policy, len(others), size)
        for member in others:
            assert member.receive(CONF, sender, out).plaintext == text


@pytest.mark.parametrize(("policy", "size"), [
    (Policy.OPTIMIZE_UPLOAD_SIZE, 80), (Policy.OPTIMIZE_UPLOAD_SIZE, 81),
    (Policy.OPTIMIZE_GLOBAL_BANDWIDTH, 176), (Policy.OPTIMIZE_GLOBAL_BANDWIDTH, 177),
    (Policy.OPTIMIZE_UPLOAD_SIZE, 5000), (Policy.CIPHER_MESSAGE, 1),
])
def test_policy_thresholds_with_two_recipients(world, policy, size):
    """The optimize policies switch to a cipher message exactly past lime's thresholds."""
    alice, bob, carol = world.device("alice"), world.device("bob"), world.device("carol")
    out = alice.encrypt(CONF, [bob, carol], b"x" * size, policy=policy)
    assert bool(out.cipher_message) == expects_cipher_message(policy, 2, size)
    if out.cipher_message:
        assert len(out.cipher_message) == size + 16
    assert bob.receive(CONF, alice, out).plaintext == b"x" * size


def test_one_recipient_never_gets_a_cipher_message_under_optimize_policies(world):
    """With one recipient both optimize policies always put the text in the DR message."""
    alice, bob = world.device("alice"), world.device("bob")
    for policy in (Policy.OPTIMIZE_UPLOAD_SIZE, Policy.OPTIMIZE_GLOBAL_BANDWIDTH):
        out = alice.encrypt(bob.user, [bob], b"y" * 5000, policy=policy)
        assert out.cipher_message == b""
        assert bob.receive(bob.user, alice, out).plaintext == b"y" * 5000


def test_unknown_recipient_fails_alone(world):
    """A device the key server does not know gets FAIL; the others are encrypted to."""
    alice, bob = world.device("alice"), world.device("bob")
    ghost = world.device("ghost", create=False)
    out = alice.encrypt(CONF, [ghost, bob], b"hello")
    assert [r.status for r in out.recipients] == [PeerStatus.FAIL, PeerStatus.UNKNOWN]
    assert out.recipients[0].dr_message == b""
    assert bob.receive(CONF, alice, out).plaintext == b"hello"


def test_empty_plaintext_round_trips(world):
    """An empty message is a message too."""
    alice, bob = world.device("alice"), world.device("bob")
    out = alice.encrypt(bob.user, [bob], b"")
    assert bob.receive(bob.user, alice, out).plaintext == b""


def test_a_large_message_to_many_devices_under_the_cipher_policy(world):
    """A 4 MiB message reaches 8 devices through one cipher message (DR buffers stay small)."""
    alice = world.device("alice")
    others = [world.device(f"peer{i}") for i in range(8)]
    text = bytes(range(256)) * (4 * 4096)
    out = alice.encrypt(CONF, others, text, policy=Policy.CIPHER_MESSAGE)
    assert len(out.cipher_message) == len(text) + 16
    assert all(len(r.dr_message) < 300 for r in out.recipients)
    assert others[-1].receive(CONF, alice, out).plaintext == text
