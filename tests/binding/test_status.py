"""Peer device statuses: what lime reports and what the application may set."""

from __future__ import annotations

import pytest

from pylime import IdentityKeyMismatchError, PeerStatus


def test_first_contact_is_unknown_then_untrusted(world):
    """Both sides see UNKNOWN on first contact and UNTRUSTED afterwards."""
    alice, bob = world.device("alice"), world.device("bob")
    out = alice.encrypt(bob.user, [bob], b"hi")
    assert out.recipients[0].status is PeerStatus.UNKNOWN
    assert bob.receive(bob.user, alice, out).status is PeerStatus.UNKNOWN
    assert bob.manager.peer_status(alice.device_id) is PeerStatus.UNTRUSTED
    out = alice.encrypt(bob.user, [bob], b"again")
    assert out.recipients[0].status is PeerStatus.UNTRUSTED
    assert bob.receive(bob.user, alice, out).status is PeerStatus.UNTRUSTED


def test_never_met_device_is_unknown(world):
    """A device lime never met reports UNKNOWN."""
    alice = world.device("alice")
    assert alice.manager.peer_status("sip:nobody@example.org;gr=x") is PeerStatus.UNKNOWN


def test_trusted_with_the_right_identity_key(world):
    """Trusting a peer with its real identity key makes both directions report TRUSTED."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hi"))
    bob.manager.set_peer_status(alice.device_id, PeerStatus.TRUSTED,
                                alice.manager.identity_key(alice.device_id))
    assert bob.manager.peer_status(alice.device_id) is PeerStatus.TRUSTED
    assert bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"2")).status \
        is PeerStatus.TRUSTED
    out = bob.encrypt(alice.user, [alice], b"3")
    assert out.recipients[0].status is PeerStatus.TRUSTED


def test_trusting_before_first_contact_is_checked_at_x3dh(world):
    """A device trusted with a key before any message stays TRUSTED when that key is used."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.manager.set_peer_status(alice.device_id, PeerStatus.TRUSTED,
                                alice.manager.identity_key(alice.device_id))
    out = alice.encrypt(bob.user, [bob], b"hi")
    assert bob.receive(bob.user, alice, out).status is PeerStatus.TRUSTED


def test_trusting_with_a_wrong_identity_key_raises(world):
    """A key other than the stored one raises and leaves the status as it was."""
    alice, bob, carol = world.device("alice"), world.device("bob"), world.device("carol")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hi"))
    wrong = carol.manager.identity_key(carol.device_id)
    with pytest.raises(IdentityKeyMismatchError):
        bob.manager.set_peer_status(alice.device_id, PeerStatus.TRUSTED, wrong)
    assert bob.manager.peer_status(alice.device_id) is PeerStatus.UNTRUSTED


def test_trusted_needs_a_well_formed_key(world):
    """TRUSTED without a key, or with a key of impossible length, is refused up front."""
    alice = world.device("alice")
    with pytest.raises(ValueError):
        alice.manager.set_peer_status("sip:bob@example.org;gr=1", PeerStatus.TRUSTED)
    with pytest.raises(ValueError):
        alice.manager.set_peer_status("sip:bob@example.org;gr=1", PeerStatus.TRUSTED, b"abc")
    for status in (PeerStatus.FAIL, PeerStatus.UNKNOWN):
        with pytest.raises(ValueError):
            alice.manager.set_peer_status("sip:bob@example.org;gr=1", status)


def test_unsafe_devices_still_decrypt_and_unsafe_is_sticky(world):
    """UNSAFE is reported on every message, and setting UNTRUSTED does not clear it."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hi"))
    bob.manager.set_peer_status(alice.device_id, PeerStatus.UNSAFE)
    result = bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"still readable"))
    assert result == (PeerStatus.UNSAFE, b"still readable")
    bob.manager.set_peer_status(alice.device_id, PeerStatus.UNTRUSTED)
    assert bob.manager.peer_status(alice.device_id) is PeerStatus.UNSAFE


def test_unsafe_before_first_contact_stays_unsafe(world):
    """A device flagged UNSAFE before any message stays UNSAFE after its X3DH."""
    alice, bob = world.device("alice"), world.device("bob")
    alice.manager.set_peer_status(bob.device_id, PeerStatus.UNSAFE)
    out = alice.encrypt(bob.user, [bob], b"hi")
    assert out.recipients[0].status is PeerStatus.UNSAFE
    assert bob.receive(bob.user, alice, out).plaintext == b"hi"
    assert alice.manager.peer_status(bob.device_id) is PeerStatus.UNSAFE


def test_delete_peer_forgets_the_device_and_its_sessions(world):
    """After delete_peer the device is UNKNOWN and talking to it starts a new session."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hi"))
    bob.manager.delete_peer(alice.device_id)
    assert bob.manager.peer_status(alice.device_id) is PeerStatus.UNKNOWN
    out = bob.encrypt(alice.user, [alice], b"who are you again?")
    assert out.recipients[0].status is PeerStatus.UNKNOWN
    assert alice.receive(alice.user, bob, out).plaintext == b"who are you again?"
