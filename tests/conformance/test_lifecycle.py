"""Session staling and renewal, OPk exhaustion and top-up, SPk rotation, identity-key change."""

from __future__ import annotations

import sqlite3

import pytest

from pylime.errors import DecryptionError, EncryptionError, IdentityKeyChangedError, UnknownOPkError
from pylime.types import Curve, PeerStatus

from .conftest import URL, Dev, Net


def _init_flag_and_spk(msg: bytes, curve: Curve) -> tuple[int, int]:
    """(OPk flag, SPk id) of the X3DH init in a DR message."""
    assert msg[1] & 1
    e, x = (32, 32) if curve == Curve.C25519 else (57, 56)
    pos = 3 + 1 + e + x
    return msg[3], int.from_bytes(msg[pos:pos + 4], "big")


def _travel(dev: Dev, table: str, days: int) -> None:
    """Move every timestamp of ``table`` in a device's database ``days`` back (lime's forwardTime)."""
    with sqlite3.connect(dev.path) as c:
        c.execute(f"UPDATE {table} SET timeStamp = datetime(timeStamp, '-{days} day')")


def test_stale_sessions_forces_a_new_x3dh(net: Net, pairing: tuple[str, str]) -> None:
    """stale_sessions makes the next message start a new session; old ones still decrypt."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    b.open(b.user, a, a.send(b.user, [b], b"1"))
    a.open(a.user, b, b.send(a.user, [a], b"2"))
    late = a.send(b.user, [b], b"late")
    assert not late.recipients[0].dr_message[1] & 1
    a.manager.stale_sessions(a.device_id, b.device_id)
    renewed = a.send(b.user, [b], b"renewed")
    assert renewed.recipients[0].dr_message[1] & 1
    assert b.open(b.user, a, renewed).plaintext == b"renewed"
    assert b.open(b.user, a, late).plaintext == b"late"
    assert a.open(a.user, b, b.send(a.user, [a], b"ok")).plaintext == b"ok"


def test_crossed_initiations_converge(net: Net, pairing: tuple[str, str]) -> None:
    """Two devices that start sessions at the same time end up on one active session."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    from_a = a.send(b.user, [b], b"from a")
    from_b = b.send(a.user, [a], b"from b")
    assert a.open(a.user, b, from_b).plaintext == b"from b"
    assert b.open(b.user, a, from_a).plaintext == b"from a"
    for i in range(3):
        assert b.open(b.user, a, a.send(b.user, [b], b"a%d" % i)).plaintext == b"a%d" % i
        assert a.open(a.user, b, b.send(a.user, [a], b"b%d" % i)).plaintext == b"b%d" % i
    last = a.send(b.user, [b], b"settled").recipients[0].dr_message
    assert not last[1] & 1


def test_opk_exhaustion_gives_a_bundle_without_opk(net: Net, pairing: tuple[str, str]) -> None:
    """When the server has no OPk left the X3DH init carries none, and both ends agree."""
    b = net.dev("bob", pairing[1], opk_batch=1)
    first = net.dev("alice", pairing[0])
    second = net.dev("carol", pairing[0])
    m1 = first.send(b.user, [b], b"with opk")
    m2 = second.send(b.user, [b], b"without opk")
    assert _init_flag_and_spk(m1.recipients[0].dr_message, net.curve)[0] == 1
    assert _init_flag_and_spk(m2.recipients[0].dr_message, net.curve)[0] == 0
    assert net.server.opk_count(b.device_id) == 0
    assert b.open(b.user, second, m2).plaintext == b"without opk"
    assert b.open(b.user, first, m1).plaintext == b"with opk"
    assert second.open(second.user, b, b.send(second.user, [second], b"r")).plaintext == b"r"


@pytest.mark.parametrize("kind", ["lime", "ref"])
def test_update_tops_up_opks(net: Net, kind: str) -> None:
    """update() uploads max(batch, low limit - held) OPks when the server holds too few."""
    b = net.dev("bob", kind, opk_batch=5)
    assert net.server.opk_count(b.device_id) == 5
    b.manager.update(opk_low_limit=10, opk_batch=4)
    assert net.server.opk_count(b.device_id) == 10
    b.manager.update(opk_low_limit=10, opk_batch=4)
    assert net.server.opk_count(b.device_id) == 10
    a = net.dev("alice", "ref" if kind == "lime" else "lime")
    a.send(b.user, [b], b"uses one")
    b.manager.update(opk_low_limit=10, opk_batch=4)
    assert net.server.opk_count(b.device_id) == 13
    with sqlite3.connect(b.path) as c:
        assert c.execute("SELECT count(*) FROM X3DH_OPK WHERE Status = 1").fetchone() == (13,)
        assert c.execute("SELECT count(*) FROM X3DH_OPK WHERE Status = 0").fetchone() == (1,)


@pytest.mark.parametrize("kind", ["lime", "ref"])
def test_spk_rotation_keeps_old_spk_then_deletes_it(net: Net, kind: str) -> None:
    """An SPk older than 7 days is replaced; the old one serves 30 more days, then goes."""
    other = "ref" if kind == "lime" else "lime"
    b = net.dev("bob", kind)
    early = net.dev("alice", other)
    m_early = early.send(b.user, [b], b"early")
    latest = net.dev("dave", other)
    m_latest = latest.send(b.user, [b], b"latest")
    _, spk_old = _init_flag_and_spk(m_early.recipients[0].dr_message, net.curve)
    b.manager.update()
    assert _init_flag_and_spk(net.dev("x", other).send(b.user, [b], b"-").recipients[0]
                              .dr_message, net.curve)[1] == spk_old, "fresh SPk is kept"
    _travel(b, "X3DH_SPK", 8)
    b.manager.update()
    fresh = net.dev("carol", other)
    m_fresh = fresh.send(b.user, [b], b"fresh")
    _, spk_new = _init_flag_and_spk(m_fresh.recipients[0].dr_message, net.curve)
    assert spk_new != spk_old
    assert b.open(b.user, early, m_early).plaintext == b"early"
    assert b.open(b.user, fresh, m_fresh).plaintext == b"fresh"
    _travel(b, "X3DH_SPK", 31)
    b.manager.update()
    with sqlite3.connect(b.path) as c:
        rows = dict(c.execute("SELECT SPKid, Status FROM X3DH_SPK").fetchall())
    # the old SPk is gone; the second one is now old too, so it was rotated and kept stale
    assert spk_old not in rows and rows[spk_new] == 0 and sorted(rows.values()) == [0, 1]
    expected = UnknownOPkError if kind == "ref" else DecryptionError
    with pytest.raises(expected):
        b.open(b.user, latest, m_latest)


def test_identity_key_change_is_refused(net: Net, pairing: tuple[str, str]) -> None:
    """A device re-created with a new Ik cannot decrypt to or from a peer until it is deleted."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    b.open(b.user, a, a.send(b.user, [b], b"hi"))
    a.manager.delete_user(a.device_id)
    a.manager.create_user(a.device_id, URL, net.curve)
    out = a.send(b.user, [b], b"new key")
    expected = IdentityKeyChangedError if b.kind == "ref" else DecryptionError
    with pytest.raises(expected):
        b.open(b.user, a, out)
    assert b.manager.peer_status(a.device_id) == PeerStatus.UNTRUSTED
    b.manager.stale_sessions(b.device_id, a.device_id)
    with pytest.raises(EncryptionError):  # the bundle carries the new Ik
        b.send(a.user, [a], b"to the new key")
    b.manager.delete_peer(a.device_id)
    assert b.open(b.user, a, out) == (PeerStatus.UNKNOWN, b"new key")


def test_unsafe_device_gets_its_real_ik_and_stays_unsafe(net: Net, pairing: tuple[str, str]) -> None:
    """A device set unsafe before contact keeps UNSAFE and gets its key at the first X3DH."""
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    a.manager.set_peer_status(b.device_id, PeerStatus.UNSAFE)
    out = a.send(b.user, [b], b"careful")
    assert out.recipients[0].status == PeerStatus.UNSAFE
    assert b.open(b.user, a, out).plaintext == b"careful"
    reply = b.send(a.user, [a], b"ok")
    assert a.open(a.user, b, reply) == (PeerStatus.UNSAFE, b"ok")
    a.manager.set_peer_status(b.device_id, PeerStatus.TRUSTED, b.manager.identity_key(b.device_id))
    assert a.manager.peer_status(b.device_id) == PeerStatus.TRUSTED


@pytest.mark.parametrize("kind", ["lime", "ref"])
def test_update_republishes_a_user_the_server_lost(net: Net, kind: str) -> None:
    """A user_not_found answer to getSelfOPks makes update() register the user again."""
    from pylime.keyserver.protocol import DeleteUser

    b = net.dev("bob", kind, opk_batch=3)
    ik = b.manager.identity_key(b.device_id)
    net.server.handle(b.device_id, DeleteUser(net.curve).to_bytes())
    assert net.server.opk_count(b.device_id) == 0
    b.manager.update(opk_low_limit=5, opk_batch=2)
    assert net.server.opk_count(b.device_id) == 5
    assert b.manager.identity_key(b.device_id) == ik
    with sqlite3.connect(b.path) as c:  # the old OPks are marked dispatched, new ones active
        assert c.execute("SELECT Status, count(*) FROM X3DH_OPK GROUP BY Status").fetchall() \
            == [(0, 3), (1, 5)]
    a = net.dev("alice", "ref" if kind == "lime" else "lime")
    assert b.open(b.user, a, a.send(b.user, [b], b"found you")).plaintext == b"found you"


def test_duplicate_recipients_are_refused_and_the_own_device_allowed(
        net: Net, pairing: tuple[str, str]) -> None:
    """A repeated device id is a ValueError on both backends; the sender may include itself.

    liblime 5.1.64 gives a repeated device two messages on one session while the session is
    in its cache, but dereferences a null session (SIGSEGV) once it comes from the database
    (after a restart or a refused decrypt): pylime refuses the list before lime sees it.
    """
    a, b = net.dev("alice", pairing[0]), net.dev("bob", pairing[1])
    with pytest.raises(ValueError, match="repeat"):
        a.manager.encrypt(a.device_id, b.user, [b.device_id, a.device_id, b.device_id],
                          b"twice", policy=0)
    out = a.manager.encrypt(a.device_id, b.user, [b.device_id, a.device_id], b"once",
                            policy=0)
    first, own = out.recipients
    assert b.manager.decrypt(b.device_id, b.user, a.device_id, first.dr_message).plaintext \
        == b"once"
    assert a.manager.decrypt(a.device_id, b.user, a.device_id, own.dr_message).plaintext \
        == b"once"


@pytest.mark.parametrize("kind", ["lime", "ref"])
def test_update_deletes_old_stale_sessions_and_dispatched_opks(net: Net, kind: str) -> None:
    """Stale sessions go after 30 days, dispatched OPks after 37, both at update time."""
    a = net.dev("alice", "ref" if kind == "lime" else "lime")
    b = net.dev("bob", kind, opk_batch=4)
    b.open(b.user, a, a.send(b.user, [b], b"hi"))
    b.open(b.user, a, a.send(b.user, [b], b"again"))
    b.manager.stale_sessions(b.device_id, a.device_id)
    late = a.send(b.user, [b], b"late")
    b.manager.update(opk_low_limit=1, opk_batch=1)
    with sqlite3.connect(b.path) as c:  # as if the server had handed them all out
        c.execute("UPDATE X3DH_OPK SET Status = 0")
    _travel(b, "DR_sessions", 29)
    _travel(b, "X3DH_OPK", 36)
    b.manager.update(opk_low_limit=1, opk_batch=1)
    with sqlite3.connect(b.path) as c:
        assert c.execute("SELECT count(*) FROM DR_sessions").fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM X3DH_OPK WHERE Status = 0").fetchone() == (3,)
    _travel(b, "DR_sessions", 2)
    _travel(b, "X3DH_OPK", 2)
    b.manager.update(opk_low_limit=1, opk_batch=1)
    with sqlite3.connect(b.path) as c:
        assert c.execute("SELECT count(*) FROM DR_sessions").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM X3DH_OPK WHERE Status = 0").fetchone() == (0,)
    with pytest.raises(DecryptionError):
        b.open(b.user, a, late)
