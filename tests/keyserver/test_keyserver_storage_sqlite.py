"""The SQLite backend: owner-only file, WAL, indexes, constraints, schema versioning."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from ks_wire import Device

from pylime.keyserver import KeyServer, SQLiteStorage, StorageError
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:0000-a"


def test_database_file_is_owner_only(tmp_path: Path) -> None:
    """The SQLite file and its WAL companions are created with mode 0600."""
    old = os.umask(0o022)
    try:
        with KeyServer(tmp_path / "k.sqlite3") as server:
            server.handle(ALICE, Device(ALICE, Curve.C25519).register())
            for f in tmp_path.iterdir():
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    finally:
        os.umask(old)


def test_file_database_uses_wal(tmp_path: Path) -> None:
    """A file database is switched to WAL journaling."""
    SQLiteStorage(tmp_path / "k.sqlite3").close()
    conn = sqlite3.connect(tmp_path / "k.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_bundle_queries_use_indexes(tmp_path: Path) -> None:
    """Looking up a device and its oldest OPk uses indexes, never a table scan."""
    SQLiteStorage(tmp_path / "k.sqlite3").close()
    conn = sqlite3.connect(tmp_path / "k.sqlite3")
    plans = [
        conn.execute("EXPLAIN QUERY PLAN SELECT Uid FROM Users WHERE Curve = 1 AND UserId = 'x'"),
        conn.execute("EXPLAIN QUERY PLAN SELECT id FROM OPk WHERE Uid = 1 ORDER BY id LIMIT 1"),
        conn.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM OPk WHERE Uid = 1"),
    ]
    for plan in plans:
        text = " ".join(str(row[3]) for row in plan.fetchall())
        assert "USING" in text and "INDEX" in text, text
        assert "SCAN" not in text.replace("USING COVERING INDEX", ""), text
    conn.close()


def test_device_ids_are_unique_per_curve(tmp_path: Path) -> None:
    """The schema itself refuses a second row for the same (curve, device id)."""
    SQLiteStorage(tmp_path / "k.sqlite3").close()
    conn = sqlite3.connect(tmp_path / "k.sqlite3")
    insert = (
        "INSERT INTO Users (Curve, UserId, Ik, SPk, SPk_sig, SPk_id, Registered)"
        " VALUES (?, 'x', x'00', x'00', x'00', 1, 0)"
    )
    conn.execute(insert, (1,))
    conn.execute(insert, (2,))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, (1,))
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer server version is refused, not misread."""
    conn = sqlite3.connect(tmp_path / "k.sqlite3")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStorage(tmp_path / "k.sqlite3")


def test_closed_storage_raises_storage_error(tmp_path: Path) -> None:
    """Using a closed storage raises StorageError; close is idempotent."""
    s = SQLiteStorage()
    s.close()
    s.close()
    with pytest.raises(StorageError):
        s.opk_count(ALICE)


def test_database_failure_is_answered_db_error(tmp_path: Path) -> None:
    """A storage failure during a request is answered with db_error (0x07), not an exception."""
    server = KeyServer()
    server.close()
    answer = server.handle(ALICE, Device(ALICE, Curve.C25519).register())
    assert answer[:4] == b"\x01\xff\x01\x07"
