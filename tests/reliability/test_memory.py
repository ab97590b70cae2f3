"""Managers dropped without close() are freed in every state, and no callback handle outlives them.

tests/binding/test_lifecycle.py covers a Manager dropped right after create_user; these go
through the states a fault leaves behind (a failed registration that reopened the C manager,
a transport interrupt, a closed-then-dropped Manager) and count file descriptors over many
Managers. The leak check under valgrind is scripts/valgrind_binding.
"""

from __future__ import annotations

import gc
import os
import typing
import weakref

import pytest
from faults import GET_BUNDLE, REGISTER, FaultyTransport

from pylime import errors

try:
    import pylime.manager as manager_module
    from pylime._callbacks import ORPHANS
    from pylime.manager import Manager
except ImportError as exc:  # pragma: no cover - only where _lime was never built
    pytest.skip(f"pylime._lime is not built ({exc})", allow_module_level=True)

URL = "https://keys.example.org"


class _Tracked(manager_module.Operation):
    """An Operation that registers a weak reference to itself on creation."""

    live: typing.ClassVar[list[weakref.ref]] = []

    def __init__(self) -> None:
        super().__init__()
        _Tracked.live.append(weakref.ref(self))


class _Counting:
    """Counts C managers created and destroyed through pylime.bindings."""

    def __init__(self, bindings) -> None:
        self.bindings = bindings
        self.init, self.destroy = bindings.manager_init, bindings.manager_destroy
        self.alive = 0

    def manager_init(self, *args):
        ptr = self.init(*args)
        self.alive += 1
        return ptr

    def manager_destroy(self, ptr):
        self.alive -= 1
        return self.destroy(ptr)


@pytest.fixture
def tracked(monkeypatch):
    """Every Operation (and so every status-callback handle) the Managers create, weakly held."""
    _Tracked.live = []
    monkeypatch.setattr(manager_module, "Operation", _Tracked)
    return _Tracked.live


@pytest.fixture
def c_managers(monkeypatch):
    """How many C managers are alive (created minus destroyed) during the test."""
    counting = _Counting(manager_module._b)
    monkeypatch.setattr(manager_module._b, "manager_init", counting.manager_init)
    monkeypatch.setattr(manager_module._b, "manager_destroy", counting.manager_destroy)
    return counting


def _drop(manager) -> tuple[weakref.ref, weakref.ref, weakref.ref]:
    """Weak references to a Manager, its state and its request queue (whose handle lime holds)."""
    return weakref.ref(manager), weakref.ref(manager._state), weakref.ref(manager._state.queue)


def _collected(*refs) -> bool:
    gc.collect()
    return all(r() is None for r in refs)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_manager_dropped_after_a_failed_registration_is_freed(tmp_path, server, tracked,
                                                                c_managers):
    """The reopen path (a registration lime could not conclude) leaks neither C nor handles."""
    faulty = FaultyTransport(server)
    manager = Manager(tmp_path / "a.sqlite3", transport=faulty)
    faulty.fail("timeout", REGISTER)
    with pytest.raises(errors.TransportError):
        manager.create_user("sip:a@example.org;gr=1", URL, 1)

    class Unplaceable:  # an answer lime cannot place: create_user ends silently, C reopened
        def post(self, url, sender, body):
            return 200, bytes((1, 0x42, 1))

    manager._transport = Unplaceable()
    with pytest.raises(errors.KeyServerError):
        manager.create_user("sip:a@example.org;gr=2", URL, 1)
    refs = _drop(manager)
    del manager
    assert _collected(*refs, *tracked)
    assert c_managers.alive == 0 and not ORPHANS


def test_a_manager_dropped_after_a_transport_interrupt_is_freed(tmp_path, server, tracked):
    """A KeyboardInterrupt in the transport answers lime, and the dropped Manager is freed."""
    bob = Manager(tmp_path / "b.sqlite3", transport=server)
    bob.create_user("sip:b@example.org;gr=1", URL, 1)

    class Interrupting:
        def post(self, url, sender, body):
            if body[1] == GET_BUNDLE:
                raise KeyboardInterrupt
            return server.post(url, sender, body)

    alice = Manager(tmp_path / "a.sqlite3", transport=Interrupting())
    alice.create_user("sip:a@example.org;gr=1", URL, 1)
    with pytest.raises(KeyboardInterrupt):
        alice.encrypt("sip:a@example.org;gr=1", "sip:b@example.org", ["sip:b@example.org;gr=1"],
                      b"interrupted")
    refs = _drop(alice) + _drop(bob)
    del alice, bob
    assert _collected(*refs, *tracked)


def test_closing_then_dropping_frees_everything_once(tmp_path, server, tracked, c_managers):
    """close() runs the finalizer; dropping afterwards neither crashes nor destroys twice."""
    manager = Manager(tmp_path / "a.sqlite3", transport=server)
    manager.create_user("sip:a@example.org;gr=1", URL, 2)
    manager.close()
    manager.close()
    assert c_managers.alive == 0
    refs = _drop(manager)
    del manager
    assert _collected(*refs, *tracked)
    assert c_managers.alive == 0


def test_many_dropped_managers_release_their_files_and_handles(tmp_path, server, tracked,
                                                               c_managers):
    """Two hundred Managers created, used and dropped: file descriptors and handles come back."""
    gc.collect()
    fds = _fds()
    refs = []
    for i in range(200):
        manager = Manager(tmp_path / f"m{i % 5}.sqlite3", transport=server)
        if i < 5:
            manager.create_user(f"sip:m{i}@example.org;gr=1", URL, 1)
        else:
            assert manager.is_user(f"sip:m{i % 5}@example.org;gr=1")
        refs.extend(_drop(manager))
        del manager
    assert _collected(*refs, *tracked)
    assert c_managers.alive == 0
    assert _fds() <= fds + 1
