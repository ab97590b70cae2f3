"""Storage modes: lime's own, WAL, and fast WAL, applied to new and existing databases."""

from __future__ import annotations

import sqlite3

import pytest

from pylime import InternalError
from tests.conftest import SERVER_URL

JOURNAL = {"full": "delete", "wal": "wal", "fast": "wal"}


def _journal_mode(path) -> str:
    with sqlite3.connect(path) as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    return mode


@pytest.mark.parametrize("mode", ["full", "wal", "fast"])
def test_each_mode_sets_the_journal_and_messages_flow(tmp_path, server, curve, backend, mode):
    """A database opened in each mode gets its journal mode, and a conversation works."""
    paths = tmp_path / "alice db.sqlite3", tmp_path / "bob db.sqlite3"  # spaces on purpose
    with backend(paths[0], server, durability=mode) as alice, \
            backend(paths[1], server, durability=mode) as bob:
        assert alice.durability == mode
        alice.create_user("sip:alice@example.org;gr=1", SERVER_URL, curve)
        bob.create_user("sip:bob@example.org;gr=2", SERVER_URL, curve)
        for n in range(3):
            out = alice.encrypt("sip:alice@example.org;gr=1", "sip:bob@example.org",
                                ["sip:bob@example.org;gr=2"], b"msg %d" % n)
            assert bob.decrypt("sip:bob@example.org;gr=2", "sip:bob@example.org",
                               "sip:alice@example.org;gr=1",
                               out.recipients[0].dr_message).plaintext == b"msg %d" % n
    assert _journal_mode(paths[0]) == JOURNAL[mode]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice db.sqlite3", "bob db.sqlite3"]


def test_the_default_is_wal(tmp_path, server, backend):
    """Without a durability argument a Manager uses WAL with full sync."""
    with backend(tmp_path / "a.sqlite3", server) as manager:
        assert manager.durability == "wal"
    assert _journal_mode(tmp_path / "a.sqlite3") == "wal"


def test_an_existing_database_is_switched_both_ways(tmp_path, server, curve, backend):
    """Reopening with another mode converts the file and keeps its users."""
    path = tmp_path / "a.sqlite3"
    with backend(path, server, durability="full") as manager:
        manager.create_user("sip:a@example.org;gr=1", SERVER_URL, curve)
    assert _journal_mode(path) == "delete"
    with backend(path, server, durability="fast") as manager:
        assert manager.is_user("sip:a@example.org;gr=1")
    assert _journal_mode(path) == "wal"
    with backend(path, server, durability="full") as manager:
        assert manager.is_user("sip:a@example.org;gr=1")
    assert _journal_mode(path) == "delete"


def test_unknown_mode_and_bad_files_are_refused(tmp_path, server, backend):
    """A mode that does not exist is a ValueError; a file that is not SQLite, InternalError."""
    with pytest.raises(ValueError):
        backend(tmp_path / "a.sqlite3", server, durability="yolo")
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InternalError):
        backend(junk, server)
