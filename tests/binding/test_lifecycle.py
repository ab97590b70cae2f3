"""Managers own their C object: deterministic close, a finalizer backstop, private files."""

from __future__ import annotations

import gc
import os
import stat
import weakref

from pylime.manager import Manager


def test_close_is_idempotent_and_the_manager_is_a_context_manager(tmp_path, server):
    """close() may be called any number of times; `with` closes."""
    with Manager(tmp_path / "a.sqlite3", transport=server) as manager:
        assert not manager.closed
    assert manager.closed
    manager.close()
    assert manager.closed


def test_database_is_created_owner_only(tmp_path, server):
    """A new database file is readable and writable by its owner only."""
    path = tmp_path / "private.sqlite3"
    with Manager(path, transport=server) as manager:
        manager.create_user("sip:a@example.org;gr=1", "https://k", 1)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_dropped_manager_is_freed_without_close(tmp_path, server):
    """A Manager nobody references is collected and its C manager destroyed."""
    manager = Manager(tmp_path / "dropped.sqlite3", transport=server)
    manager.create_user("sip:a@example.org;gr=1", "https://k", 1)
    state = manager._state
    ref = weakref.ref(manager)
    del manager
    gc.collect()
    assert ref() is None
    assert state.ptr is None and not state.pending


def test_callback_handles_are_released_after_each_operation(lime_world):
    """No operation handle outlives its operation."""
    alice, bob = lime_world.device("alice"), lime_world.device("bob")
    for _ in range(5):
        bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hi"))
    alice.manager.update()
    assert not alice.manager._state.pending
    assert not alice.manager._state.queue


def test_repr_shows_no_secret(world):
    """Reprs of managers and results show sizes and ids, never keys or plaintexts."""
    alice, bob = world.device("alice"), world.device("bob")
    out = alice.encrypt(bob.user, [bob], b"top secret plaintext")
    result = bob.receive(bob.user, alice, out)
    text = repr(alice.manager) + repr(out) + repr(result)
    assert "top secret" not in text
    assert repr(out.recipients[0].dr_message)[2:20] not in text
