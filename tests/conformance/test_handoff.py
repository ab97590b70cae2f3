"""A database moves between liblime and the reference mid-conversation, both ways, both curves."""

from __future__ import annotations

import sqlite3

import pytest

from pylime.reference import ReferenceManager
from pylime.reference.storage import SCHEMA
from pylime.types import Policy

from .conftest import FACTORIES, Net


def _talk(a, b, rounds: int, tag: bytes) -> None:  # type: ignore[no-untyped-def]
    for r in range(rounds):
        for policy in (Policy.DR_MESSAGE, Policy.CIPHER_MESSAGE):
            text = tag + b"-%d-%d" % (r, policy)
            assert b.open(b.user, a, a.send(b.user, [b], text, policy)).plaintext == text
            assert a.open(a.user, b, b.send(a.user, [a], text[::-1], policy)).plaintext == text[::-1]


@pytest.mark.parametrize("start,then", [("lime", "ref"), ("ref", "lime")])
def test_database_handoff_mid_conversation(net: Net, start: str, then: str) -> None:
    """Both ends switch backend on their own database and the conversation goes on."""
    a = net.dev("alice", start)
    b = net.dev("bob", start)
    # leave undelivered messages and skipped keys behind to cross the handoff
    pending = [a.send(b.user, [b], b"late-%d" % i) for i in range(3)]
    _talk(a, b, 2, b"before")
    early = a.send(b.user, [b], b"early")
    ik_a, ik_b = a.manager.identity_key(a.device_id), b.manager.identity_key(b.device_id)
    a.reopen(then, net.server)
    b.reopen(then, net.server)
    assert a.manager.identity_key(a.device_id) == ik_a
    assert b.manager.identity_key(b.device_id) == ik_b
    assert b.manager.server_url(b.device_id).startswith("https://")
    _talk(a, b, 2, b"after")
    assert b.open(b.user, a, early).plaintext == b"early"
    for i, out in enumerate(pending):
        assert b.open(b.user, a, out).plaintext == b"late-%d" % i
    # and back again, with a new device joining the ongoing group
    a.reopen(start, net.server)
    c = net.dev("carol", then)
    out = a.send("sip:room@example.org", [b, c], b"group")
    assert b.open("sip:room@example.org", a, out).plaintext == b"group"
    assert c.open("sip:room@example.org", a, out).plaintext == b"group"


@pytest.mark.parametrize("start,then", [("lime", "ref"), ("ref", "lime")])
def test_handoff_of_a_half_open_session(net: Net, start: str, then: str) -> None:
    """A session that has only sent (X3DH init still stored) continues on the other backend."""
    a = net.dev("alice", start)
    b = net.dev("bob", "lime" if start == "ref" else "ref")
    first = a.send(b.user, [b], b"one")
    a.reopen(then, net.server)
    second = a.send(b.user, [b], b"two")
    assert second.recipients[0].dr_message[1] & 1
    assert b.open(b.user, a, second).plaintext == b"two"
    assert b.open(b.user, a, first).plaintext == b"one"
    assert a.open(a.user, b, b.send(a.user, [a], b"three")).plaintext == b"three"


def test_reference_writes_liblime_schema(net: Net) -> None:
    """The reference creates exactly the tables, DDL and version row liblime 5.1.64 creates."""
    lime_dev = net.dev("l", "lime")
    ref_dev = net.dev("r", "ref")
    q = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    with sqlite3.connect(lime_dev.path) as lc, sqlite3.connect(ref_dev.path) as rc:
        assert lc.execute(q).fetchall() == rc.execute(q).fetchall()
        v = "SELECT * FROM db_module_version"
        assert lc.execute(v).fetchall() == rc.execute(v).fetchall() == [("lime", 1)]
        cols = "SELECT length(Ik), curveId FROM lime_LocalUsers"
        assert lc.execute(cols).fetchall() == rc.execute(cols).fetchall()
    assert len(SCHEMA) == 8


def test_reference_opens_a_database_liblime_created_empty(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A database liblime created and left empty is accepted as is."""
    path = tmp_path / "empty.sqlite3"
    FACTORIES["lime"](path, transport=_NoServer()).close()
    with ReferenceManager(path, transport=_NoServer()) as ref:
        assert not ref.is_user("sip:nobody@example.org")
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT version FROM db_module_version").fetchone() == (1,)


class _NoServer:
    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        raise AssertionError("no key server expected")
