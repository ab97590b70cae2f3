"""Where the key server keeps devices and their prekeys: one interface, several backends.

Every method is one transaction, so a request either happens completely or not at all, and
an OPk is handed out at most once: it is deleted in the same transaction that reads it.
Backends are thread-safe. Users are keyed by (curve, device id), so both curves share one
database. :class:`SQLiteStorage` lives here; the PostgreSQL backend is in
:mod:`pylime.keyserver.postgres`.
"""

from __future__ import annotations

import abc
import enum
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from pylime.errors import LimeError
from pylime.keyserver.protocol import OPk
from pylime.types import Curve

__all__ = [
    "Account",
    "AddOutcome",
    "RegisterOutcome",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "StoredBundle",
    "UserKeys",
    "is_storable_device_id",
]

T = TypeVar("T")

# Bumped when the schema changes; a newer database is refused rather than misread.
SCHEMA_VERSION = 1


class StorageError(LimeError):
    """The database failed; the request changed nothing (answered as db_error)."""


@dataclass(frozen=True)
class UserKeys:
    """A device's long-lived public keys: identity key and current signed prekey."""

    ik: bytes = field(repr=False)
    spk: bytes = field(repr=False)
    spk_sig: bytes = field(repr=False)
    spk_id: int


@dataclass(frozen=True)
class StoredBundle:
    """What the storage hands out for one device: its keys and maybe one OPk (now deleted)."""

    keys: UserKeys
    opk: OPk | None


@dataclass(frozen=True)
class Account:
    """A digest account: the HA1 of each algorithm, never the password."""

    username: str
    realm: str
    ha1_md5: str = field(repr=False)  # hex MD5(username:realm:password)
    ha1_sha256: str = field(repr=False)  # hex SHA-256(username:realm:password)

    def ha1(self, algorithm: str) -> str | None:
        """The stored HA1 for a digest algorithm name (MD5 or SHA-256), None for others."""
        return {"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256}.get(algorithm.upper())


class RegisterOutcome(enum.Enum):
    """What register_user did."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # same Ik, SPk, signature and SPk id: idempotent success
    CONFLICT = "conflict"  # the device exists with other keys


class AddOutcome(enum.Enum):
    """What add_opks did."""

    ADDED = "added"
    NOT_FOUND = "not_found"
    LIMIT = "limit"  # stored + new would exceed the per-device cap; nothing added


def is_storable_device_id(device_id: str) -> bool:
    """Whether a device id can be a database key: valid UTF-8 (no escaped bytes) and no NUL.

    Ids that fail this can never have been registered, so a lookup answers "unknown".
    """
    if not device_id or "\x00" in device_id:
        return False
    try:
        device_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Storage(abc.ABC):
    """The operations the key server needs; each one is atomic and thread-safe.

    Raises:
        StorageError: from any method when the database fails.
    """

    @abc.abstractmethod
    def register_user(
        self,
        curve: Curve,
        device_id: str,
        keys: UserKeys,
        opks: Sequence[OPk],
        expires_at: float | None,
    ) -> RegisterOutcome:
        """Insert a device with its OPks, or recognise an identical re-registration."""

    @abc.abstractmethod
    def delete_user(self, curve: Curve, device_id: str) -> bool:
        """Delete a device and its OPks; return whether it existed."""

    @abc.abstractmethod
    def set_spk(
        self, curve: Curve, device_id: str, spk: bytes, spk_sig: bytes, spk_id: int
    ) -> bool:
        """Replace the device's signed prekey; return False when the device is unknown."""

    @abc.abstractmethod
    def add_opks(
        self, curve: Curve, device_id: str, opks: Sequence[OPk], max_opks: int
    ) -> AddOutcome:
        """Add OPks unless the device would then hold more than ``max_opks``."""

    @abc.abstractmethod
    def take_bundles(self, curve: Curve, device_ids: Sequence[str]) -> list[StoredBundle | None]:
        """For each id in order: the device's keys plus its oldest OPk, deleted; None if unknown."""

    @abc.abstractmethod
    def opk_ids(self, curve: Curve, device_id: str) -> list[int] | None:
        """The ids of the OPks held for the device, oldest first; None if the device is unknown."""

    @abc.abstractmethod
    def opk_count(self, device_id: str, curve: Curve | None = None) -> int:
        """How many OPks are stored for the device (on one curve, or all); 0 if unknown."""

    @abc.abstractmethod
    def expire_users(self, now: float) -> int:
        """Delete every device whose expiry time has passed; return how many."""

    # Accounts live beside the keys, so every server process sharing the database sees them.

    @abc.abstractmethod
    def put_account(self, account: Account) -> bool:
        """Create or replace an account; return True if it was new."""

    @abc.abstractmethod
    def remove_account(self, username: str, realm: str) -> bool:
        """Delete an account; return whether it existed."""

    @abc.abstractmethod
    def get_account(self, username: str, realm: str) -> Account | None:
        """The account, or None."""

    @abc.abstractmethod
    def list_accounts(self) -> list[tuple[str, str]]:
        """(username, realm) of every account, sorted."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StorageError unless the database answers (the health check)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; idempotent."""


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS Users (
    Uid INTEGER PRIMARY KEY AUTOINCREMENT,
    Curve INTEGER NOT NULL,
    UserId TEXT NOT NULL,
    Ik BLOB NOT NULL,
    SPk BLOB NOT NULL,
    SPk_sig BLOB NOT NULL,
    SPk_id INTEGER NOT NULL,
    Registered REAL NOT NULL,
    Expires REAL,
    UNIQUE (Curve, UserId)
);
CREATE TABLE IF NOT EXISTS OPk (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    Uid INTEGER NOT NULL REFERENCES Users(Uid) ON DELETE CASCADE,
    OPk BLOB NOT NULL,
    OPk_id INTEGER NOT NULL
);
-- SQLite appends the rowid to every index, so this one also serves "oldest OPk of Uid".
CREATE INDEX IF NOT EXISTS OPk_Uid ON OPk (Uid);
CREATE INDEX IF NOT EXISTS Users_Expires ON Users (Expires) WHERE Expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS Accounts (
    Username TEXT NOT NULL,
    Realm TEXT NOT NULL,
    HA1_MD5 TEXT NOT NULL,
    HA1_SHA256 TEXT NOT NULL,
    PRIMARY KEY (Username, Realm)
);
"""


class SQLiteStorage(Storage):
    """SQLite backend: one connection serialised by a lock; WAL and owner-only file mode on disk.

    Each write runs in a ``BEGIN IMMEDIATE`` transaction, which also makes OPk hand-out
    atomic when several processes share one database file.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:", *, timeout: float = 10.0) -> None:
        path = os.fspath(path)
        self.path = path
        in_memory = path == ":memory:" or path == ""
        if not in_memory:
            # Create the file ourselves so it is owner-only from the first byte; SQLite gives
            # the -wal and -shm files the same mode as the database file.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        self._closed = False
        self._in_memory = in_memory
        self._timeout = timeout
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                self._conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL is durable across application crashes in WAL mode; only a power cut can
                # lose the last transactions, which clients recover from by republishing.
                self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._tx() as cur:
                version = cur.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StorageError(
                        f"database schema version {version} is newer than this server's "
                        f"({SCHEMA_VERSION})"
                    )
                for statement in _SQLITE_SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # From now on lock waits are ours (see _begin_immediate and _read).
            self._conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    @contextmanager
    def _tx(self, write: bool = True, map_errors: bool = True) -> Iterator[sqlite3.Cursor]:
        """One transaction under the connection lock; SQLite errors become StorageError.

        Writers take the write lock up front (BEGIN IMMEDIATE), so a transaction never fails
        half-way on a lock held by another process; readers use a deferred transaction,
        which WAL lets run alongside a writer.
        """
        with self._lock:
            if self._closed:
                raise StorageError("storage is closed")
            cur = self._conn.cursor()
            try:
                if write:
                    self._begin_immediate(cur)
                else:
                    cur.execute("BEGIN")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if map_errors and isinstance(exc, sqlite3.Error):
                    raise StorageError(f"SQLite error: {exc}") from exc
                raise
            finally:
                cur.close()

    def _begin_immediate(self, cur: sqlite3.Cursor) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write lock with short sleeps.

        The connection's own busy handler is off: SQLite sleeps in steps of up to 100 ms,
        which under steady contention between server processes turns into tens of
        milliseconds per request; polling from 50 µs upwards keeps the wait close to the
        other writer's hold time.
        """
        self._retry_busy(lambda: cur.execute("BEGIN IMMEDIATE"))

    def _retry_busy(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it does not fail with SQLITE_BUSY, for at most the timeout."""
        delay = 50e-6
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2e-3)

    def _read(self, query: Callable[[sqlite3.Cursor], T]) -> T:
        """Run a read-only query in a deferred transaction, retried if a lock is in the way.

        In WAL mode readers practically never wait; the retry covers the rare moments
        (another process recovering or resetting the WAL) when they must.
        """

        def attempt() -> T:
            with self._tx(write=False, map_errors=False) as cur:
                return query(cur)

        try:
            return self._retry_busy(attempt)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite error: {exc}") from exc

    @staticmethod
    def _uid(cur: sqlite3.Cursor, curve: Curve, device_id: str) -> int | None:
        row = cur.execute(
            "SELECT Uid FROM Users WHERE Curve = ? AND UserId = ?", (int(curve), device_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def register_user(
        self,
        curve: Curve,
        device_id: str,
        keys: UserKeys,
        opks: Sequence[OPk],
        expires_at: float | None,
    ) -> RegisterOutcome:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT Ik, SPk, SPk_sig, SPk_id FROM Users WHERE Curve = ? AND UserId = ?",
                (int(curve), device_id),
            ).fetchone()
            if row is not None:
                same = (bytes(row[0]), bytes(row[1]), bytes(row[2]), int(row[3])) == (
                    keys.ik,
                    keys.spk,
                    keys.spk_sig,
                    keys.spk_id,
                )
                return RegisterOutcome.UNCHANGED if same else RegisterOutcome.CONFLICT
            cur.execute(
                "INSERT INTO Users (Curve, UserId, Ik, SPk, SPk_sig, SPk_id, Registered, Expires)"
                " VALUES (?, ?, ?, ?, ?, ?, CAST(strftime('%s','now') AS REAL), ?)",
                (int(curve), device_id, keys.ik, keys.spk, keys.spk_sig, keys.spk_id, expires_at),
            )
            uid = cur.lastrowid
            cur.executemany(
                "INSERT INTO OPk (Uid, OPk, OPk_id) VALUES (?, ?, ?)",
                [(uid, o.public, o.id) for o in opks],
            )
            return RegisterOutcome.CREATED

    def delete_user(self, curve: Curve, device_id: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM Users WHERE Curve = ? AND UserId = ?", (int(curve), device_id))
            return cur.rowcount > 0

    def set_spk(
        self, curve: Curve, device_id: str, spk: bytes, spk_sig: bytes, spk_id: int
    ) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE Users SET SPk = ?, SPk_sig = ?, SPk_id = ? WHERE Curve = ? AND UserId = ?",
                (spk, spk_sig, spk_id, int(curve), device_id),
            )
            return cur.rowcount > 0

    def add_opks(
        self, curve: Curve, device_id: str, opks: Sequence[OPk], max_opks: int
    ) -> AddOutcome:
        with self._tx() as cur:
            uid = self._uid(cur, curve, device_id)
            if uid is None:
                return AddOutcome.NOT_FOUND
            stored = cur.execute("SELECT count(*) FROM OPk WHERE Uid = ?", (uid,)).fetchone()[0]
            if stored + len(opks) > max_opks:
                return AddOutcome.LIMIT
            cur.executemany(
                "INSERT INTO OPk (Uid, OPk, OPk_id) VALUES (?, ?, ?)",
                [(uid, o.public, o.id) for o in opks],
            )
            return AddOutcome.ADDED

    def take_bundles(self, curve: Curve, device_ids: Sequence[str]) -> list[StoredBundle | None]:
        out: list[StoredBundle | None] = []
        with self._tx() as cur:
            for device_id in device_ids:
                row = cur.execute(
                    "SELECT Uid, Ik, SPk, SPk_sig, SPk_id FROM Users WHERE Curve = ? AND UserId = ?",
                    (int(curve), device_id),
                ).fetchone()
                if row is None:
                    out.append(None)
                    continue
                keys = UserKeys(bytes(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]))
                opk_row = cur.execute(
                    "DELETE FROM OPk WHERE id = (SELECT id FROM OPk WHERE Uid = ? ORDER BY id LIMIT 1)"
                    " RETURNING OPk, OPk_id",
                    (row[0],),
                ).fetchone()
                opk = None if opk_row is None else OPk(bytes(opk_row[0]), int(opk_row[1]))
                out.append(StoredBundle(keys, opk))
        return out

    def opk_ids(self, curve: Curve, device_id: str) -> list[int] | None:
        def query(cur: sqlite3.Cursor) -> list[int] | None:
            uid = self._uid(cur, curve, device_id)
            if uid is None:
                return None
            rows = cur.execute("SELECT OPk_id FROM OPk WHERE Uid = ? ORDER BY id", (uid,))
            return [int(r[0]) for r in rows.fetchall()]

        return self._read(query)

    def opk_count(self, device_id: str, curve: Curve | None = None) -> int:
        def query(cur: sqlite3.Cursor) -> int:
            if curve is None:
                row = cur.execute(
                    "SELECT count(*) FROM OPk JOIN Users USING (Uid) WHERE UserId = ?",
                    (device_id,),
                ).fetchone()
            else:
                row = cur.execute(
                    "SELECT count(*) FROM OPk JOIN Users USING (Uid)"
                    " WHERE Curve = ? AND UserId = ?",
                    (int(curve), device_id),
                ).fetchone()
            return int(row[0])

        return self._read(query)

    def expire_users(self, now: float) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM Users WHERE Expires IS NOT NULL AND Expires <= ?", (now,))
            return cur.rowcount

    def put_account(self, account: Account) -> bool:
        with self._tx() as cur:
            existed = cur.execute(
                "SELECT 1 FROM Accounts WHERE Username = ? AND Realm = ?",
                (account.username, account.realm),
            ).fetchone()
            cur.execute(
                "INSERT OR REPLACE INTO Accounts (Username, Realm, HA1_MD5, HA1_SHA256)"
                " VALUES (?, ?, ?, ?)",
                (account.username, account.realm, account.ha1_md5, account.ha1_sha256),
            )
            return existed is None

    def remove_account(self, username: str, realm: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM Accounts WHERE Username = ? AND Realm = ?", (username, realm))
            return cur.rowcount > 0

    def get_account(self, username: str, realm: str) -> Account | None:
        def query(cur: sqlite3.Cursor) -> Account | None:
            row = cur.execute(
                "SELECT HA1_MD5, HA1_SHA256 FROM Accounts WHERE Username = ? AND Realm = ?",
                (username, realm),
            ).fetchone()
            return None if row is None else Account(username, realm, row[0], row[1])

        return self._read(query)

    def list_accounts(self) -> list[tuple[str, str]]:
        def query(cur: sqlite3.Cursor) -> list[tuple[str, str]]:
            rows = cur.execute("SELECT Username, Realm FROM Accounts ORDER BY Realm, Username")
            return [(r[0], r[1]) for r in rows.fetchall()]

        return self._read(query)

    def ping(self) -> None:
        self._read(lambda cur: cur.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
