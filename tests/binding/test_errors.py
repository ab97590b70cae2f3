"""Misuse gets the right typed error, never a crash."""

from __future__ import annotations

import pytest

from pylime import (
    Curve,
    InvalidCurveError,
    ManagerClosedError,
    PeerStatus,
    UserExistsError,
    UserNotFoundError,
)

GHOST = "sip:ghost@example.org;gr=urn:uuid:dead"


def _calls(manager, peer):
    return {
        "encrypt": lambda: manager.encrypt(GHOST, "sip:x@example.org", [peer], b"hi"),
        "decrypt": lambda: manager.decrypt(GHOST, "sip:x@example.org", peer, b"\x01\x02\x01" * 40),
        "delete_user": lambda: manager.delete_user(GHOST),
        "identity_key": lambda: manager.identity_key(GHOST),
        "stale_sessions": lambda: manager.stale_sessions(GHOST, peer),
        "server_url": lambda: manager.server_url(GHOST),
        "set_server_url": lambda: manager.set_server_url(GHOST, "https://elsewhere.example.org"),
    }


@pytest.mark.parametrize("call", sorted(_calls(None, None)))
def test_unknown_local_user_raises_user_not_found(world, call):
    """Every per-user call on a user this database does not hold raises UserNotFoundError."""
    alice = world.device("alice")
    with pytest.raises(UserNotFoundError) as caught:
        _calls(alice.manager, alice.device_id)[call]()
    assert isinstance(caught.value, LookupError)
    assert alice.manager.is_user(alice.device_id), "the manager is still usable"


def test_is_user_is_false_for_an_unknown_user(world):
    """is_user answers False rather than raising."""
    alice = world.device("alice")
    assert alice.manager.is_user(GHOST) is False


@pytest.mark.parametrize("bad", [0, 6, 25519, -1])
def test_bad_curve_raises_invalid_curve(world, bad):
    """A curve id lime has not (neither 5.1's 1-2 nor 5.4's 3-5) raises InvalidCurveError (a
    ValueError); the post-quantum 3-5 are tests/reference/test_post_quantum.py's."""
    alice = world.device("alice", create=False)
    with pytest.raises(InvalidCurveError) as caught:
        alice.manager.create_user(alice.device_id, "https://k.example.org", bad)
    assert isinstance(caught.value, ValueError)
    assert not alice.manager.is_user(alice.device_id)


def test_creating_an_existing_user_raises(world):
    """create_user on an active user raises UserExistsError and keeps its keys."""
    alice = world.device("alice")
    key = alice.manager.identity_key(alice.device_id)
    with pytest.raises(UserExistsError):
        alice.manager.create_user(alice.device_id, "https://k.example.org", world.curve)
    assert alice.manager.identity_key(alice.device_id) == key


def test_nul_characters_and_wrong_types_are_refused(world):
    """Strings C would truncate, and arguments of the wrong type, raise before reaching lime."""
    alice = world.device("alice")
    with pytest.raises(ValueError):
        alice.manager.is_user(alice.device_id + "\0suffix")
    with pytest.raises(TypeError):
        alice.manager.is_user(b"sip:bytes@example.org")
    with pytest.raises(TypeError):
        alice.manager.encrypt(alice.device_id, "sip:x@example.org", "sip:not-a-list", b"hi")
    with pytest.raises(ValueError):
        alice.manager.encrypt(alice.device_id, "sip:x@example.org", [], b"hi")
    with pytest.raises(ValueError):
        alice.manager.encrypt(alice.device_id, "sip:x@example.org", ["sip:b"], b"hi", policy=7)
    with pytest.raises(ValueError):
        alice.manager.create_user("sip:new@example.org;gr=1", "https://k", Curve.C25519,
                                  opk_batch=70000)


def test_a_closed_manager_raises(world):
    """Every call after close() raises ManagerClosedError."""
    alice = world.device("alice")
    alice.manager.close()
    for call in (lambda: alice.manager.is_user(alice.device_id),
                 lambda: alice.manager.peer_status(GHOST),
                 lambda: alice.manager.update(),
                 lambda: alice.manager.set_peer_status(GHOST, PeerStatus.UNSAFE)):
        with pytest.raises(ManagerClosedError):
            call()
