"""The reference's database layer asks SQLite little, and never at the price of a behaviour.

Pins what the round-trip savings rely on: what is remembered is forgotten on every write,
a one-statement save is committed at once, the Ik seed is read only when used, and a
message on an established session costs two statements.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Iterator

import pytest

from pylime import errors
from pylime.keyserver import KeyServer
from pylime.reference import ReferenceManager
from pylime.reference.storage import Db, LocalUser
from pylime.types import Curve, PeerStatus

from ..conftest import SERVER_URL, Device, World


@pytest.fixture
def ref_world(tmp_path: pathlib.Path, server: KeyServer, curve: Curve) -> Iterator[World]:
    """Reference devices on each curve."""
    w = World(tmp_path, server, curve, ReferenceManager)
    yield w
    w.close()


def _pair(world: World) -> tuple[Device, Device]:
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"hello"))
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"hi"))
    return alice, bob


def _statements(manager: ReferenceManager) -> list[str]:
    """Record every statement the manager's connection runs from now on."""
    seen: list[str] = []
    manager._db.conn.set_trace_callback(seen.append)  # type: ignore[union-attr]
    return seen


def test_established_message_costs_two_statements_each_way(ref_world: World) -> None:
    """encrypt: one query and one UPDATE; decrypt: one query and one UPDATE (no BEGIN)."""
    alice, bob = _pair(ref_world)
    sent, received = _statements(alice.manager), _statements(bob.manager)
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"ping"))
    assert [s.split()[0] for s in sent] == ["SELECT", "UPDATE"]
    assert [s.split()[0] for s in received] == ["SELECT", "UPDATE"]


def test_one_statement_save_is_committed(ref_world: World) -> None:
    """Another connection sees the sending chain advanced right after encrypt returns."""
    alice, bob = _pair(ref_world)
    before = sqlite3.connect(alice.manager.path).execute(
        "SELECT max(Ns) FROM DR_sessions").fetchone()[0]
    alice.encrypt(bob.user, [bob], b"ping")
    after = sqlite3.connect(alice.manager.path).execute(
        "SELECT max(Ns) FROM DR_sessions").fetchone()[0]
    assert after == before + 1


def test_messages_on_established_sessions_never_read_the_seed(
        ref_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ik seed is loaded for an X3DH or a signature only."""
    alice, bob = _pair(ref_world)
    reads: list[str] = []
    real = Db.load_seed

    def counting(db: Db, user: LocalUser) -> None:
        reads.append(user.device_id)
        real(db, user)

    monkeypatch.setattr(Db, "load_seed", counting)
    for _ in range(3):
        bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"ping"))
        alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"pong"))
    assert reads == []
    carol = ref_world.device("carol")  # create_user signs its SPk: one read
    assert reads == [carol.device_id]
    reads.clear()
    carol.receive(carol.user, alice, alice.encrypt(carol.user, [carol], b"new peer"))
    assert reads == [alice.device_id, carol.device_id]


def test_remembered_users_follow_every_write(ref_world: World) -> None:
    """A new server URL, a deletion and a re-creation are seen at once."""
    alice, bob = _pair(ref_world)
    m = alice.manager
    m.set_server_url(alice.device_id, "https://elsewhere.example.org/lime")
    assert m.server_url(alice.device_id) == "https://elsewhere.example.org/lime"
    m.set_server_url(alice.device_id, SERVER_URL)
    old_ik = m.identity_key(alice.device_id)
    m.delete_user(alice.device_id)
    assert not m.is_user(alice.device_id)
    with pytest.raises(errors.UserNotFoundError):
        m.encrypt(alice.device_id, bob.user, [bob.device_id], b"x")
    m.create_user(alice.device_id, SERVER_URL, ref_world.curve)
    assert m.is_user(alice.device_id) and m.identity_key(alice.device_id) != old_ik


def test_refused_registration_is_forgotten(ref_world: World,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A registration the server refuses leaves no remembered user behind."""
    dev = ref_world.device("dave", create=False)
    real_post = ref_world.transport.post

    def refuse(url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        return 200, bytes([1, 0xFF, body[2], 3]) + b"no"

    monkeypatch.setattr(ref_world.transport, "post", refuse)
    with pytest.raises(errors.KeyServerError):
        dev.manager.create_user(dev.device_id, SERVER_URL, ref_world.curve)
    assert not dev.manager.is_user(dev.device_id)
    monkeypatch.setattr(ref_world.transport, "post", real_post)
    dev.manager.create_user(dev.device_id, SERVER_URL, ref_world.curve)
    assert dev.manager.is_user(dev.device_id)


def test_many_recipients_load_in_two_queries(ref_world: World) -> None:
    """An encryption to many known devices reads statuses and sessions in two queries."""
    hub = ref_world.device("hub")
    peers = [ref_world.device(f"p{i}") for i in range(5)]
    first = hub.encrypt("sip:room@example.org", peers, b"hello")
    for p in peers:
        p.receive("sip:room@example.org", hub, first)
    hub.manager.set_peer_status(peers[0].device_id, PeerStatus.UNSAFE)
    seen = _statements(hub.manager)
    out = hub.encrypt("sip:room@example.org", peers, b"again")
    assert [s.split()[0] for s in seen].count("SELECT") == 2
    assert [r.status for r in out.recipients] == [
        PeerStatus.UNSAFE, *[PeerStatus.UNTRUSTED] * 4]
    for p in peers:
        assert p.receive("sip:room@example.org", hub, out).plaintext == b"again"
