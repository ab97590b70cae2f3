"""Stale Double Ratchet sessions in a lime database: count them, and prune the old ones.

Why this exists: when a message does not decrypt on the active session with its sender, lime
5.1.64 tries *every* stored session with that sender, stale ones included (ordered
``Status DESC, timeStamp ASC``), before it runs X3DH on a new session's first message. Each try
performs a full DH ratchet step (two X25519/X448 operations and a key generation) before the
AEAD check can fail, so the first message of every new session, and every late message on a
recently staled one, costs about 0.2 ms (curve25519) to 0.35 ms (curve448) per stale session
held with that peer: 40 ms at 200 stale sessions. Stale sessions pile up when a peer's
sessions are renewed often (``stale_sessions``, reinstalls, crossed initiations); lime deletes
them only in ``update()``, 30 days after they went stale.

Pruning keeps the newest ``keep`` stale sessions of each (local user, peer device) pair, which
late messages still reach, and deletes the older ones: a message still in flight on a deleted
session can no longer be decrypted. The application chooses that trade-off.

These functions open the SQLite file themselves. lime keeps sessions in memory and writes
them back by row id, so :func:`prune_stale_sessions` runs only on a database that no manager
has open (it takes the database's exclusive lock, see :mod:`pylime.database`); an open
manager prunes its own database with ``manager.prune_stale_sessions(...)``.
"""

from __future__ import annotations

import os
import sqlite3
from typing import NamedTuple, Union

from pylime import database, errors

__all__ = ["SessionCount", "prune_stale_sessions", "prune_unlocked", "session_counts"]

StrPath = Union[str, "os.PathLike[str]"]

_COUNTS = """
SELECT u.UserId, d.DeviceId,
       SUM(s.Status = 1), SUM(s.Status = 0)
FROM DR_sessions s
JOIN lime_LocalUsers u ON u.Uid = s.Uid
JOIN lime_PeerDevices d ON d.Did = s.Did
GROUP BY s.Uid, s.Did
ORDER BY u.UserId, d.DeviceId
"""

# Rank each pair's stale sessions newest first (timeStamp is set when a session goes stale;
# the id breaks ties within one second) and delete those ranked past `keep` that are also
# older than the cut-off. DR_MSk_* rows go with them (ON DELETE CASCADE).
_PRUNE = """
DELETE FROM DR_sessions WHERE sessionId IN (
    SELECT sessionId FROM (
        SELECT sessionId, timeStamp,
               ROW_NUMBER() OVER (PARTITION BY Uid, Did
                                  ORDER BY timeStamp DESC, sessionId DESC) AS newest
        FROM DR_sessions WHERE Status = 0)
    WHERE newest > ? AND timeStamp <= datetime('now', ?))
"""


class SessionCount(NamedTuple):
    """Sessions a local user holds with one peer device."""

    local_device: str
    peer_device: str
    active: int
    stale: int


def _connect(path: StrPath) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no lime database at {os.fspath(path)!r}")
    try:
        db = sqlite3.connect(os.fspath(path), timeout=10, isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")  # lime's schema cascades to skipped keys
    except sqlite3.Error as exc:
        raise errors.InternalError(f"cannot open {os.fspath(path)!r}: {exc}") from exc
    return db


def session_counts(path: StrPath) -> list[SessionCount]:
    """Active and stale sessions per (local user, peer device) in a lime database. Read-only.

    Raises:
        FileNotFoundError: there is no database at ``path``.
        InternalError: the file is not a lime database.
    """
    db = _connect(path)
    try:
        return [SessionCount(str(u), str(d), int(a), int(s))
                for u, d, a, s in db.execute(_COUNTS)]
    except sqlite3.Error as exc:
        raise errors.InternalError(f"{os.fspath(path)!r} is not a lime database: {exc}") from exc
    finally:
        db.close()


def prune_stale_sessions(path: StrPath, *, keep: int, older_than_days: float = 0.0) -> int:
    """Delete the stale sessions past the newest ``keep`` of each pair; return how many.

    Only sessions that went stale at least ``older_than_days`` ago are deleted. Active
    sessions are never touched.

    Raises:
        ValueError: ``keep`` or ``older_than_days`` is negative.
        FileNotFoundError: there is no database at ``path``.
        DatabaseInUseError: a manager has the database open (use its own method).
        InternalError: the file is not a lime database, or stays locked by another writer.
    """
    if keep < 0 or older_than_days < 0:
        raise ValueError("keep and older_than_days must not be negative")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no lime database at {os.fspath(path)!r}")
    fd = database.lock(os.fspath(path))
    try:
        return prune_unlocked(path, keep=keep, older_than_days=older_than_days)
    finally:
        database.unlock(fd)


def prune_unlocked(path: StrPath, *, keep: int, older_than_days: float = 0.0) -> int:
    """:func:`prune_stale_sessions` for a caller that holds the database's lock (a manager)."""
    if keep < 0 or older_than_days < 0:
        raise ValueError("keep and older_than_days must not be negative")
    db = _connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute(_PRUNE, (keep, f"-{float(older_than_days)} days")).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return int(deleted)
    except sqlite3.Error as exc:
        raise errors.InternalError(f"cannot prune {os.fspath(path)!r}: {exc}") from exc
    finally:
        db.close()
