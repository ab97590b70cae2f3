"""Keys on the server: OPk consumption and top-up, session renewal, user deletion."""

from __future__ import annotations

import pytest

from pylime import EncryptionError, UserNotFoundError
from tests.wire import has_x3dh_init


def test_opks_are_consumed_by_fetches_and_replenished_by_update(world, server):
    """Each new session takes one OPk; update() uploads a batch once below the low limit."""
    bob = world.device("bob")
    assert server.opk_count(bob.device_id) == 100
    for name in ("alice", "carol", "dave"):
        sender = world.device(name)
        bob.receive(bob.user, sender, sender.encrypt(bob.user, [bob], b"hi"))
    assert server.opk_count(bob.device_id) == 97
    bob.manager.update(opk_low_limit=50, opk_batch=25)
    assert server.opk_count(bob.device_id) == 97, "above the low limit nothing is uploaded"
    bob.manager.update(opk_low_limit=100, opk_batch=25)
    assert server.opk_count(bob.device_id) == 97 + 25
    bob.manager.update(opk_low_limit=150, opk_batch=5)
    assert server.opk_count(bob.device_id) == 150, "tops up to the low limit at least"


def test_opk_batch_size_at_creation(world, server):
    """create_user publishes exactly opk_batch OPks."""
    alice = world.device("alice", create=False)
    alice.manager.create_user(alice.device_id, "https://keys.example.org", world.curve,
                              opk_batch=7)
    assert server.opk_count(alice.device_id) == 7


def test_a_bundle_without_opk_still_opens_a_session(world, server):
    """Once a device's OPks are gone, senders still reach it through its signed prekey."""
    bob = world.device("bob", create=False)
    bob.manager.create_user(bob.device_id, "https://keys.example.org", world.curve, opk_batch=1)
    first, second = world.device("alice"), world.device("carol")
    bob.receive(bob.user, first, first.encrypt(bob.user, [bob], b"took the OPk"))
    assert server.opk_count(bob.device_id) == 0
    out = second.encrypt(bob.user, [bob], b"no OPk left")
    dr = out.recipients[0].dr_message
    assert has_x3dh_init(dr) and dr[3] == 0, "the X3DH init says no OPk was used"
    assert bob.receive(bob.user, second, out).plaintext == b"no OPk left"


def test_stale_sessions_makes_the_next_encrypt_open_a_new_session(world, server):
    """After stale_sessions the next message runs a fresh X3DH; old messages still decrypt."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hi"))
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"ack"))
    in_flight = alice.encrypt(bob.user, [bob], b"sent on the old session")
    assert not has_x3dh_init(in_flight.recipients[0].dr_message)
    before = server.opk_count(bob.device_id)
    alice.manager.stale_sessions(alice.device_id, bob.device_id)
    out = alice.encrypt(bob.user, [bob], b"new session")
    assert has_x3dh_init(out.recipients[0].dr_message)
    assert server.opk_count(bob.device_id) == before - 1
    assert bob.receive(bob.user, alice, out).plaintext == b"new session"
    assert bob.receive(bob.user, alice, in_flight).plaintext == b"sent on the old session"


def test_delete_user_removes_the_user_locally_and_on_the_server(world, server):
    """A deleted device is gone from its database and from the key server."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.manager.delete_user(bob.device_id)
    assert not bob.manager.is_user(bob.device_id)
    assert server.opk_count(bob.device_id) == 0
    with pytest.raises(UserNotFoundError):
        bob.manager.identity_key(bob.device_id)
    with pytest.raises(EncryptionError):
        alice.encrypt(bob.user, [bob], b"anyone there?")


def test_a_deleted_user_can_be_created_again(world, server):
    """The same device id can register anew after deletion, with a new identity key."""
    bob = world.device("bob")
    old_key = bob.manager.identity_key(bob.device_id)
    bob.manager.delete_user(bob.device_id)
    bob.manager.create_user(bob.device_id, "https://keys.example.org", world.curve)
    assert bob.manager.identity_key(bob.device_id) != old_key
    assert server.opk_count(bob.device_id) == 100


def test_identity_key_sizes(world):
    """Identity keys are Ed25519 (32 bytes) or Ed448 (57 bytes) public keys."""
    alice = world.device("alice")
    assert len(alice.manager.identity_key(alice.device_id)) == {1: 32, 2: 57}[world.curve]


def test_server_url_round_trip(world):
    """server_url reports the URL given at creation and set_server_url changes it."""
    alice = world.device("alice")
    assert alice.manager.server_url(alice.device_id).startswith("https://keys.example.org")
    alice.manager.set_server_url(alice.device_id, "https://other.example.org/lime")
    assert alice.manager.server_url(alice.device_id) == "https://other.example.org/lime"


def test_users_persist_across_managers(world, tmp_path):
    """A database reopened by a new Manager keeps its users and sessions."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"before"))
    path = bob.manager.path
    bob.manager.close()
    bob.manager = world.factory(path, transport=world.transport)
    assert bob.manager.is_user(bob.device_id)
    assert bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"after")).plaintext \
        == b"after"


def test_prune_stale_sessions_keeps_the_newest_and_the_conversation_going(world, server):
    """An open manager prunes its retired sessions; the active one and the newest kept live."""
    alice, bob = world.device("alice"), world.device("bob")
    for n in range(6):  # six sessions: five retired, one active
        alice.manager.stale_sessions(alice.device_id, bob.device_id)
        bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"session %d" % n))
    late = alice.encrypt(bob.user, [bob], b"in flight on the active session")
    assert bob.manager.prune_stale_sessions(keep=2) == 3
    assert bob.manager.prune_stale_sessions(keep=2) == 0
    assert bob.receive(bob.user, alice, late).plaintext == b"in flight on the active session"
    alice.manager.stale_sessions(alice.device_id, bob.device_id)
    out = alice.encrypt(bob.user, [bob], b"new session after pruning")
    assert bob.receive(bob.user, alice, out).plaintext == b"new session after pruning"


def test_pruning_a_database_a_manager_has_open_is_refused(world):
    """pylime.sessions.prune_stale_sessions on an open database raises DatabaseInUseError."""
    from pylime import DatabaseInUseError
    from pylime.sessions import prune_stale_sessions

    bob = world.device("bob")
    with pytest.raises(DatabaseInUseError):
        prune_stale_sessions(bob.manager.path, keep=0)
