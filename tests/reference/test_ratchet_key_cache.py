"""The reference keeps curve448 ratchet keys loaded between operations, invisibly.

Loading a raw X448 key into OpenSSL costs a scalar multiplication; the reference's
database layer keeps the loaded current ratchet key of recent sessions so a DH ratchet
step loads only the key it generates. The cache must change nothing a caller can see.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from pylime.keyserver import KeyServer
from pylime.reference import ReferenceManager, storage
from pylime.reference import primitives as p
from pylime.types import Curve

from ..conftest import Device, World


@pytest.fixture
def ref_world(tmp_path: pathlib.Path, server: KeyServer) -> Iterator[World]:
    """Reference devices on curve448."""
    w = World(tmp_path, server, Curve.C448, ReferenceManager)
    yield w
    w.close()


def _loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count raw X448 private keys loaded into OpenSSL."""
    calls: list[int] = []
    real = p.x448.X448PrivateKey.from_private_bytes

    class Counting:
        @staticmethod
        def from_private_bytes(data: bytes) -> p.x448.X448PrivateKey:
            calls.append(1)
            return real(data)

    monkeypatch.setattr(p.x448, "X448PrivateKey", Counting)
    return calls


def _exchange(world: World) -> tuple[Device, Device]:
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hello"))
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"hi"))
    return alice, bob


def test_round_trip_loads_only_the_generated_keys(ref_world: World,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An established round trip loads two X448 keys (the two new ratchet keys), not four."""
    alice, bob = _exchange(ref_world)
    loads = _loads(monkeypatch)
    for _ in range(3):
        bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"ping"))
        alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"pong"))
    assert len(loads) == 3 * 2


def test_reopened_manager_continues_without_the_cache(ref_world: World) -> None:
    """A manager reopened on the database (empty cache) decrypts and replies as before."""
    alice, bob = _exchange(ref_world)
    path = bob.manager.path
    bob.manager.close()
    bob.manager = ReferenceManager(path, transport=ref_world.transport)
    assert bob.manager._db._ratchet_keys == {}
    out = alice.encrypt(bob.user, [bob], b"after reopen")
    assert bob.receive(bob.user, alice, out).plaintext == b"after reopen"
    out = bob.encrypt(alice.user, [alice], b"reply")
    assert alice.receive(alice.user, bob, out).plaintext == b"reply"


def test_a_key_is_used_only_for_its_own_ratchet_key(ref_world: World) -> None:
    """An entry whose public key differs from the row's DHs is ignored (row keys rule)."""
    alice, bob = _exchange(ref_world)
    db = bob.manager._db
    (sid,) = list(db._ratchet_keys)
    stranger = p.XKey(Curve.C448, bytearray(p.x_keypair(Curve.C448)[1]))
    db._ratchet_keys[sid] = (b"\x01" * 56, stranger)
    out = alice.encrypt(bob.user, [bob], b"still fine")
    assert bob.receive(bob.user, alice, out).plaintext == b"still fine"
    out = bob.encrypt(alice.user, [alice], b"and back")
    assert alice.receive(alice.user, bob, out).plaintext == b"and back"


def test_deleting_sessions_or_closing_drops_the_keys(ref_world: World) -> None:
    """delete_peer, update and close leave no loaded ratchet key behind."""
    alice, bob = _exchange(ref_world)
    db = alice.manager._db
    assert db._ratchet_keys
    alice.manager.delete_peer(bob.device_id)
    assert not db._ratchet_keys
    bob_db = bob.manager._db
    assert bob_db._ratchet_keys
    bob.manager.close()
    assert not bob_db._ratchet_keys


def test_the_cache_is_bounded(ref_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """No more than RATCHET_KEY_CACHE sessions keep a loaded key."""
    monkeypatch.setattr(storage, "RATCHET_KEY_CACHE", 2)
    hub = ref_world.device("hub")
    for i in range(4):
        peer = ref_world.device(f"peer{i}")
        peer.receive(peer.user, hub, hub.encrypt(peer.user, [peer], b"hello"))
        hub.receive(hub.user, peer, peer.encrypt(hub.user, [hub], b"hi"))
    assert len(hub.manager._db._ratchet_keys) == 2


def test_curve25519_keeps_nothing(tmp_path: pathlib.Path, server: KeyServer) -> None:
    """On curve25519 libsodium takes raw keys: nothing is kept between operations."""
    w = World(tmp_path, server, Curve.C25519, ReferenceManager)
    try:
        alice, bob = _exchange(w)
        assert not alice.manager._db._ratchet_keys
        assert not bob.manager._db._ratchet_keys
    finally:
        w.close()
