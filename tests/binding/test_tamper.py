"""Delivery faults and tampering: out of order, replays and flipped bytes."""

from __future__ import annotations

import pytest

from pylime import DecryptionError, Policy
from tests.wire import header_size


def test_out_of_order_delivery_decrypts(world):
    """Messages delivered in any order within the skip limit all decrypt."""
    alice, bob = world.device("alice"), world.device("bob")
    outs = [alice.encrypt(bob.user, [bob], f"m{i}".encode()) for i in range(6)]
    for i in (4, 0, 5, 2, 1, 3):
        assert bob.receive(bob.user, alice, outs[i]).plaintext == f"m{i}".encode()


def test_out_of_order_across_a_ratchet_step(world):
    """A message from a previous sending chain still decrypts after the ratchet turned."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"open"))
    late = alice.encrypt(bob.user, [bob], b"late")
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"reply"))
    fresh = alice.encrypt(bob.user, [bob], b"fresh")
    assert bob.receive(bob.user, alice, fresh).plaintext == b"fresh"
    assert bob.receive(bob.user, alice, late).plaintext == b"late"


def test_a_replayed_message_fails(world):
    """Each message decrypts once; a replay raises DecryptionError."""
    alice, bob = world.device("alice"), world.device("bob")
    outs = [alice.encrypt(bob.user, [bob], b"once"), alice.encrypt(bob.user, [bob], b"twice")]
    bob.receive(bob.user, alice, outs[1])
    bob.receive(bob.user, alice, outs[0])  # a skipped key, consumed here
    for out in outs:
        with pytest.raises(DecryptionError):
            bob.receive(bob.user, alice, out)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize("established", [False, True], ids=["x3dh", "session"])
def test_every_flipped_byte_of_a_dr_message_is_refused(world, established):
    """Flipping any single byte of the header or the payload raises; the genuine copy decrypts."""
    alice, bob = world.device("alice"), world.device("bob")
    if established:
        bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"open"))
        alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"ack"))
    dr = alice.encrypt(bob.user, [bob], b"attack at dawn").recipients[0].dr_message
    for index in range(len(dr)):
        with pytest.raises(DecryptionError):
            bob.decrypt(bob.user, alice, _flip(dr, index))
    assert bob.decrypt(bob.user, alice, dr).plaintext == b"attack at dawn"


def test_truncated_and_extended_messages_are_refused(world):
    """A DR message cut short or with bytes appended raises; the genuine copy decrypts."""
    alice, bob = world.device("alice"), world.device("bob")
    dr = alice.encrypt(bob.user, [bob], b"whole").recipients[0].dr_message
    for bad in (dr[:-1], dr[:header_size(dr, world.curve)], dr[:3], b"", dr + b"\0"):
        with pytest.raises(DecryptionError):
            bob.decrypt(bob.user, alice, bad)
    assert bob.decrypt(bob.user, alice, dr).plaintext == b"whole"


def test_a_flipped_cipher_message_is_refused_and_the_next_message_decrypts(world):
    """Tampering with the shared cipher message raises; the conversation goes on.

    lime 5.1.64 consumes the DR message key before it checks the cipher message, so the
    genuine copy of a tampered cipher message no longer decrypts: the next one does.
    """
    alice, bob = world.device("alice"), world.device("bob")
    text = b"long enough for a cipher message " * 4
    for index in (0, 10, len(text) - 1, len(text), len(text) + 15):
        out = alice.encrypt(bob.user, [bob], text, policy=Policy.CIPHER_MESSAGE)
        dr = out.recipients[0].dr_message
        with pytest.raises(DecryptionError):
            bob.decrypt(bob.user, alice, dr, _flip(out.cipher_message, index))
    out = alice.encrypt(bob.user, [bob], text, policy=Policy.CIPHER_MESSAGE)
    assert bob.receive(bob.user, alice, out).plaintext == text


def test_a_cipher_message_under_the_wrong_mode_is_refused(world):
    """A DR message made for a cipher message does not decrypt without it, and vice versa."""
    alice, bob = world.device("alice"), world.device("bob")
    with_cipher = alice.encrypt(bob.user, [bob], b"c" * 100, policy=Policy.CIPHER_MESSAGE)
    direct = alice.encrypt(bob.user, [bob], b"d" * 100, policy=Policy.DR_MESSAGE)
    with pytest.raises(DecryptionError):
        bob.decrypt(bob.user, alice, with_cipher.recipients[0].dr_message)
    with pytest.raises(DecryptionError):
        bob.decrypt(bob.user, alice, direct.recipients[0].dr_message, with_cipher.cipher_message)
    assert bob.receive(bob.user, alice, direct).plaintext == b"d" * 100


def test_wrong_recipient_user_id_is_refused(world):
    """The recipient user id is authenticated: another one fails, the right one decrypts."""
    alice, bob = world.device("alice"), world.device("bob")
    out = alice.encrypt(bob.user, [bob], b"for bob's 1:1 room")
    with pytest.raises(DecryptionError):
        bob.receive("sip:some-group@example.org", alice, out)
    assert bob.receive(bob.user, alice, out).plaintext == b"for bob's 1:1 room"


def test_a_message_from_a_spoofed_sender_is_refused(world):
    """Claiming another sender device id makes the message fail."""
    alice, bob, carol = world.device("alice"), world.device("bob"), world.device("carol")
    out = alice.encrypt(bob.user, [bob], b"from alice")
    with pytest.raises(DecryptionError):
        bob.receive(bob.user, carol, out)
    assert bob.receive(bob.user, alice, out).plaintext == b"from alice"


def test_a_message_cut_short_by_its_tag_does_not_cost_the_genuine_copy(world):
    """Refusing a DR message without its tag leaves the genuine copy decryptable.

    liblime 5.1.64 alone loses it: the refused attempt advances its cached session, and the
    genuine message is then tried on that copy only. pylime reloads from the database.
    """
    alice, bob = world.device("alice"), world.device("bob")
    outs = [alice.encrypt(bob.user, [bob], b"m%d" % i, policy=Policy.DR_MESSAGE)
            for i in range(3)]
    assert bob.receive(bob.user, alice, outs[0]).plaintext == b"m0"
    for n, out in enumerate(outs[1:], start=1):
        dr = out.recipients[0].dr_message
        with pytest.raises(DecryptionError):
            bob.decrypt(bob.user, alice, dr[:-16])
        assert bob.decrypt(bob.user, alice, dr).plaintext == b"m%d" % n
