"""lime's limits made explicit, on both backends and both curves.

The skip limit (1024 message keys per received message) and the sending-chain renewal
(a new X3DH after 1000 messages without an answer) are pinned across every backend pairing
in tests/conformance/test_limits.py; here they are checked to survive a restart of the
receiving Manager. Also: OPk exhaustion, a peer whose identity key changed and the
documented recovery (delete_peer), and plaintexts of 1 MiB and 16 MiB.
"""

from __future__ import annotations

import os

import pytest

from pylime import errors
from pylime.types import PeerStatus, Policy

MIB = 1 << 20


def _dr(out):
    return out.recipients[0].dr_message


def test_opk_exhaustion_falls_back_to_x3dh_without_opk(world, server):
    """Once the server has no OPk left, senders still reach the device (X3DH without OPk)."""
    bob = world.device("bob", create=False)
    bob.manager.create_user(bob.device_id, "https://keys.example.org", world.curve, opk_batch=2)
    senders = [world.device(f"alice{i}") for i in range(3)]
    outs = [s.encrypt(bob.user, [bob], b"hi %d" % i) for i, s in enumerate(senders)]
    assert server.opk_count(bob.device_id) == 0
    flags = [_dr(o)[3] for o in outs]  # the X3DH init's OPk flag (lime-wire.md §2.3)
    assert flags == [1, 1, 0]
    for i, (s, out) in enumerate(zip(senders, outs)):
        assert bob.receive(bob.user, s, out).plaintext == b"hi %d" % i
    bob.manager.update(opk_low_limit=5, opk_batch=3)
    assert server.opk_count(bob.device_id) == 5  # max(batch, low limit - held)


def test_an_opk_is_used_once_even_if_the_first_message_is_replayed(world):
    """The second delivery of a first message fails: its OPk and message key are gone."""
    alice, bob = world.device("alice"), world.device("bob")
    out = alice.encrypt(bob.user, [bob], b"once")
    assert bob.receive(bob.user, alice, out).plaintext == b"once"
    with pytest.raises(errors.DecryptionError):
        bob.receive(bob.user, alice, out)
    assert bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"twice")).plaintext \
        == b"twice"


def _recreate(world, dev):
    """The same device id comes back with a new identity key (a reinstalled phone)."""
    dev.manager.delete_user(dev.device_id)
    dev.manager.create_user(dev.device_id, "https://keys.example.org", world.curve)


def test_a_peer_whose_identity_key_changed_is_refused_until_deleted(world):
    """Decrypt fails (IdentityKeyChangedError on the reference); delete_peer is the recovery."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hello"))
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"hello back"))
    alice.manager.set_peer_status(bob.device_id, PeerStatus.TRUSTED,
                                  bob.manager.identity_key(bob.device_id))
    old_ik = bob.manager.identity_key(bob.device_id)
    _recreate(world, bob)
    assert bob.manager.identity_key(bob.device_id) != old_ik
    first = bob.encrypt(alice.user, [alice], b"new phone")
    expected = (errors.IdentityKeyChangedError if "Reference" in type(alice.manager).__name__
                else errors.DecryptionError)
    with pytest.raises(expected):
        alice.receive(alice.user, bob, first)
    # nothing was learnt from the refused message: still trusted, with the old key
    assert alice.manager.peer_status(bob.device_id) is PeerStatus.TRUSTED
    with pytest.raises(errors.IdentityKeyMismatchError):
        alice.manager.set_peer_status(bob.device_id, PeerStatus.TRUSTED,
                                      bob.manager.identity_key(bob.device_id))
    # the documented recovery: forget the device, after verifying the new key out of band
    alice.manager.delete_peer(bob.device_id)
    assert alice.manager.peer_status(bob.device_id) is PeerStatus.UNKNOWN
    again = bob.encrypt(alice.user, [alice], b"new phone, again")
    result = alice.receive(alice.user, bob, again)
    assert (result.status, result.plaintext) == (PeerStatus.UNKNOWN, b"new phone, again")
    reply = alice.encrypt(bob.user, [bob], b"welcome back")
    assert bob.receive(bob.user, alice, reply).plaintext == b"welcome back"


def test_encrypting_to_a_recreated_peer_uses_the_old_session_until_deleted(world):
    """Until delete_peer, messages go to the old session, which the new device cannot read."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hello"))
    _recreate(world, bob)
    stale = alice.encrypt(bob.user, [bob], b"to the old phone")
    with pytest.raises(errors.DecryptionError):
        bob.receive(bob.user, alice, stale)
    alice.manager.delete_peer(bob.device_id)
    fresh = alice.encrypt(bob.user, [bob], b"to the new phone")
    assert fresh.recipients[0].status is PeerStatus.UNKNOWN
    assert bob.receive(bob.user, alice, fresh).plaintext == b"to the new phone"


@pytest.mark.parametrize("size", [MIB, 16 * MIB], ids=["1MiB", "16MiB"])
@pytest.mark.parametrize("policy", [Policy.DR_MESSAGE, Policy.CIPHER_MESSAGE])
def test_large_plaintexts_round_trip(world, size, policy):
    """lime sets no size limit of its own: 1 MiB and 16 MiB plaintexts encrypt and decrypt."""
    if world.curve != world.curve.C25519 and size > MIB:
        pytest.skip("the curve does not matter for the payload size; 16 MiB once is enough")
    alice, bob = world.device("alice"), world.device("bob")
    plaintext = os.urandom(size)
    out = alice.encrypt(bob.user, [bob], plaintext, policy=policy)
    if policy is Policy.DR_MESSAGE:
        assert len(_dr(out)) > size + 16  # header + plaintext + tag
        assert out.cipher_message == b""
    else:
        assert len(out.cipher_message) == size + 16
    assert bob.receive(bob.user, alice, out).plaintext == plaintext


def test_an_empty_plaintext_round_trips(world):
    """The smallest message: zero bytes of plaintext."""
    alice, bob = world.device("alice"), world.device("bob")
    assert bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"")).plaintext == b""


@pytest.mark.slow
@pytest.mark.parametrize("past", [False, True], ids=["at-limit", "one-past"])
def test_the_skip_limit_holds_across_a_restart(world, past):
    """Skipped keys and the 1024 limit live in the database: a reopened Manager enforces them."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"x3dh"))
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"r1"))
    k = 600
    chain_b = [_dr(alice.encrypt(bob.user, [bob], b"B%d" % i, Policy.DR_MESSAGE))
               for i in range(k + 1)]
    assert bob.decrypt(bob.user, alice, chain_b[0]).plaintext == b"B0"
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"r2"))
    j = 1025 - k + (1 if past else 0)
    chain_c = [_dr(alice.encrypt(bob.user, [bob], b"C%d" % i, Policy.DR_MESSAGE))
               for i in range(j)]
    bob.manager.close()
    bob.manager = world.factory(bob.manager.path, transport=world.transport)  # closed by world
    if past:
        with pytest.raises(errors.DecryptionError):
            bob.decrypt(bob.user, alice, chain_c[-1])
        assert bob.decrypt(bob.user, alice, chain_c[-2]).plaintext == b"C%d" % (j - 2)
    else:
        assert bob.decrypt(bob.user, alice, chain_c[-1]).plaintext == b"C%d" % (j - 1)
    # a skipped key stored before the restart still opens its message
    assert bob.decrypt(bob.user, alice, chain_b[k]).plaintext == b"B%d" % k


class _Recorder:
    """Forwards to a key server and keeps every request body it sent."""

    def __init__(self, server):
        self.server = server
        self.bodies = []

    def post(self, url, sender, body):
        self.bodies.append(bytes(body))
        return self.server.post(url, sender, body)


def test_a_recipient_id_longer_than_the_protocol_allows_is_refused_up_front(world):
    """A device id over 65535 bytes cannot be encoded: ValueError, and no request goes out.

    getPeerBundle carries each device id behind a 16-bit length; liblime alone would write
    it modulo 65536 and send a malformed request.
    """
    recorder = _Recorder(world.transport)
    alice = world.device("alice", transport=recorder)
    sent = len(recorder.bodies)
    too_long = "sip:" + "l" * 70000 + "@example.org;gr=1"
    with pytest.raises(ValueError):
        alice.manager.encrypt(alice.device_id, "sip:l@example.org", [too_long], b"x")
    assert len(recorder.bodies) == sent
