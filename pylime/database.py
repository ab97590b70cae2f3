"""A lime database file: creation, storage modes and exclusive use (Manager and ReferenceManager).

lime commits its SQLite database on every encrypt and decrypt, so on a real disk the
journal and sync settings decide the speed. Three modes, chosen knowingly:

- ``"full"``: lime's own behaviour: rollback journal, fsync on every commit.
- ``"wal"`` (default): write-ahead log, fsync on every commit: the same guarantees, faster.
- ``"fast"``: write-ahead log synced at checkpoints only: survives a killed process, but the
  last committed operations may be lost on power loss or an OS crash.

The journal mode is a persistent property of the database file, set before it is opened;
the synchronous setting belongs to each connection.

One manager at a time per file: lime caches sessions in memory, so two managers on one
database would send two messages with the same message key (AES-GCM nonce reuse), and two
processes competing for SQLite make lime abort. :func:`lock` takes an exclusive advisory
lock (flock) for the manager's life; a second manager, in this process or another, gets
:class:`~pylime.errors.DatabaseInUseError`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from typing import Literal

from pylime import errors

__all__ = ["MODES", "Durability", "check", "lock", "prepare", "synchronous", "unlock"]

Durability = Literal["full", "wal", "fast"]

#: mode -> (SQLite journal mode, SQLite synchronous setting)
MODES: dict[str, tuple[str, str]] = {
    "full": ("delete", "full"),
    "wal": ("wal", "full"),
    "fast": ("wal", "normal"),
}


def check(mode: str) -> Durability:
    """Return ``mode`` if it is a durability mode, else raise ValueError."""
    if mode not in MODES:
        raise ValueError(f"durability must be one of {sorted(MODES)}, not {mode!r}")
    return mode  # type: ignore[return-value]


def synchronous(mode: Durability) -> str:
    """The SQLite synchronous setting of a mode."""
    return MODES[mode][1]


def prepare(path: str, mode: Durability) -> None:
    """Create the database owner-only (0600) if missing and give it the mode's journal.

    Raises:
        InternalError: the file is not an SQLite database, or is locked by another writer.
    """
    if path == ":memory:":
        return
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    journal = MODES[mode][0]
    try:
        db = sqlite3.connect(path, timeout=10)
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != journal:
                db.execute(f"PRAGMA journal_mode={journal}")
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise errors.InternalError(f"cannot open {path!r} as an SQLite database: {exc}") from exc


def lock(path: str) -> int | None:
    """Take the exclusive lock on a database file (created owner-only if missing).

    Returns the descriptor that holds the lock. Take it before touching the file: the
    journal mode (:func:`prepare`) is changed only under it.

    Raises:
        DatabaseInUseError: another manager (in any process) has the database open.
    """
    if path == ":memory:":
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.DatabaseInUseError(
            f"{path!r} is open in another manager; lime allows one at a time") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int | None) -> None:
    """Release a lock taken by :func:`lock` (closing the descriptor releases it)."""
    if fd is not None:
        os.close(fd)
