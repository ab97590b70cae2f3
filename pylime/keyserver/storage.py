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
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pylime.deviceid import device_owner
from pylime.errors import LimeError
from pylime.keyserver.protocol import OPk
from pylime.types import Curve

__all__ = [
    "Account",
    "AccountQuotas",
    "AddOutcome",
    "DeviceStock",
    "NonceUse",
    "OPkBudget",
    "RegisterOutcome",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "StoredBundle",
    "UserKeys",
    "device_bytes",
    "is_storable_device_id",
    "opk_bytes",
    "owner_key",
]

T = TypeVar("T")

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
class DeviceStock:
    """How many OPks the server holds for one device (the low-OPk report's rows)."""

    curve: Curve
    device_id: str
    opks: int


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
    DEVICE_QUOTA = "device_quota"  # the account has its most devices; nothing stored
    BYTES_QUOTA = "bytes_quota"  # the account's keys would exceed its bytes; nothing stored


class AddOutcome(enum.Enum):
    """What add_opks did."""

    ADDED = "added"
    NOT_FOUND = "not_found"
    LIMIT = "limit"  # stored + new would exceed the per-device cap; nothing added
    BYTES_QUOTA = "bytes_quota"  # the account's keys would exceed its bytes; nothing added


@dataclass(frozen=True)
class AccountQuotas:
    """What one account (the owner of its devices) may store; 0 means no limit.

    Bytes count what the account puts in the database: each device's id (UTF-8), Ik, SPk,
    signature and SPk id, and each OPk with its id (:func:`device_bytes`, :func:`opk_bytes`).
    """

    max_devices: int = 0  # (curve, device id) registrations
    max_bytes: int = 0


@dataclass(frozen=True)
class OPkBudget:
    """How many OPks one requester may take: a token bucket kept in the database.

    ``size`` OPks at once, refilled at ``size / window`` OPks per second, so over any span of
    ``t`` seconds a requester takes at most ``size * (1 + t / window)``. Spent, bundles go out
    without OPk (lime's flag 0), which lime accepts: the session starts from the SPk alone.
    """

    size: int
    window: float

    def tokens(self, stored: float | None, updated: float | None, now: float) -> float:
        """The tokens available now, from the stored state (None: never spent: a full bucket)."""
        if stored is None or updated is None:
            return float(self.size)
        refill = max(0.0, now - updated) * self.size / self.window
        return min(float(self.size), stored + refill)


def device_bytes(device_id: str, keys: UserKeys) -> int:
    """The bytes a device row counts against its account's quota (without its OPks)."""
    return len(device_id.encode("utf-8")) + len(keys.ik) + len(keys.spk) + len(keys.spk_sig) + 4


def opk_bytes(opks: Sequence[OPk]) -> int:
    """The bytes OPks count against their account's quota (key plus 4-byte id)."""
    return sum(len(o.public) + 4 for o in opks)


class NonceUse(enum.Enum):
    """What recording one use of a digest nonce decided."""

    ACCEPTED = "accepted"  # first use, or a nonce count above every one seen for this nonce
    REPLAYED = "replayed"  # a nonce count already seen (or lower): a replayed request
    FULL = "full"  # the account already holds its most live nonces: answer stale


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

    dialect: str  # "sqlite" or "postgres": which SQL export/import speak to it
    applied_steps: list[int]  # the schema steps opening this database applied

    @abc.abstractmethod
    def register_user(
        self,
        curve: Curve,
        device_id: str,
        keys: UserKeys,
        opks: Sequence[OPk],
        expires_at: float | None,
        *,
        owner: str | None = None,
        quotas: AccountQuotas | None = None,
    ) -> RegisterOutcome:
        """Insert a device with its OPks, or recognise an identical re-registration.

        ``owner`` (``user@domain``) is stored with the device; a new device is refused, with
        nothing stored, when it would take its owner's devices or bytes over ``quotas``.
        """

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
        self,
        curve: Curve,
        device_id: str,
        opks: Sequence[OPk],
        max_opks: int,
        *,
        max_account_bytes: int = 0,
    ) -> AddOutcome:
        """Add OPks unless the device would then hold more than ``max_opks``, or its owner
        more than ``max_account_bytes`` (0 = no limit); otherwise nothing is added."""

    @abc.abstractmethod
    def take_bundles(
        self,
        curve: Curve,
        device_ids: Sequence[str],
        *,
        requester: str | None = None,
        budget: OPkBudget | None = None,
        now: float = 0.0,
    ) -> list[StoredBundle | None]:
        """For each id in order: the device's keys plus its oldest OPk, deleted; None if unknown.

        With a ``budget`` and a ``requester``, OPks are handed out only while the
        requester's bucket (shared by every process on the database) holds a token; the
        other bundles go out without OPk, and their OPks stay.
        """

    @abc.abstractmethod
    def forget_budgets(self, before: float) -> int:
        """Delete OPk budgets last spent before ``before`` (full again by then); return how many."""

    @abc.abstractmethod
    def account_usage(self, owner: str) -> tuple[int, int]:
        """(devices, bytes) the owner ``user@domain`` has stored, as the quotas count them."""

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

    # Operations: what `pylime keyserver report`, /metrics, migrate and export/import need.

    @abc.abstractmethod
    def opk_stock(self, below: int | None = None, limit: int | None = None) -> list[DeviceStock]:
        """Devices and their OPk counts, fewest first (only those under ``below`` if given)."""

    @abc.abstractmethod
    def opk_stock_levels(self) -> dict[tuple[int, int], int]:
        """How many devices hold each OPk count: {(curve, count): devices}."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version recorded in the database (0: no schema yet)."""

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply the schema steps the database lacks, each in a transaction; return them."""

    @abc.abstractmethod
    def _snapshot(self) -> AbstractContextManager[Callable[[str], Iterable[tuple[Any, ...]]]]:
        """A consistent read-only view: a function running a query and streaming its rows."""

    @abc.abstractmethod
    def _bulk(self) -> AbstractContextManager[Any]:
        """One write transaction: a DB-API cursor (execute, executemany, fetchone)."""
    # State shared by every server process on this database: used digest nonces, rate-limit
    # buckets and the secret that signs nonces (see pylime.keyserver.state).

    @abc.abstractmethod
    def use_nonce(
        self, nonce: str, account: str, nc: int, expires: float, now: float, max_per_account: int
    ) -> NonceUse:
        """Record one use of ``nonce`` by ``account`` with count ``nc``, atomically.

        Accepted when the nonce is unknown and the account holds fewer than
        ``max_per_account`` unexpired nonces, or when it is the account's and ``nc`` is above
        the highest count recorded for it. ``expires`` is when the nonce stops being valid.
        """

    @abc.abstractmethod
    def purge_nonces(self, now: float) -> int:
        """Forget nonces expired at ``now`` (they are refused by age anyway); return how many."""

    @abc.abstractmethod
    def take_token(self, who: str, rate: float, burst: float, now: float) -> float:
        """Take one token from ``who``'s bucket (``rate`` per second, holding ``burst``).

        Returns 0 if taken, else the seconds until a token is available (nothing taken).
        """

    @abc.abstractmethod
    def purge_buckets(self, before: float) -> int:
        """Forget buckets untouched since ``before`` (callers pass a time by which they are full)."""

    @abc.abstractmethod
    def shared_secret(self, name: str, length: int = 32) -> bytes:
        """The random secret ``name``, created on first call by whichever process comes first."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StorageError unless the database answers (the health check)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; idempotent."""




def fill_owners(rows: list[tuple[int, str]]) -> list[tuple[str, int]]:
    """(owner, uid) for the devices stored before owners were (schema step 2), from their ids.

    Ids without a canonical owner (stored before the door checked them) keep a NULL owner:
    they count against no account, and no account can act on them.
    """
    pairs = [(owner_key(str(user_id)), int(uid)) for uid, user_id in rows]
    return [(owner, uid) for owner, uid in pairs if owner is not None]


def owner_key(device_id: str) -> str | None:
    """The account a device id belongs to, as stored: ``user@domain`` (see pylime.deviceid)."""
    owner = device_owner(device_id)
    return None if owner is None else f"{owner[0]}@{owner[1]}"


class SQLiteStorage(Storage):
    """SQLite backend: one connection serialised by a lock; WAL and owner-only file mode on disk.

    Each write runs in a ``BEGIN IMMEDIATE`` transaction, which also makes OPk hand-out
    atomic when several processes share one database file. ``migrate``: bring an older
    schema up to date instead of refusing it (:mod:`pylime.keyserver.schema`).
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        timeout: float = 10.0,
        migrate: bool = False,
    ) -> None:
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
            try:
                self.applied_steps = self._prepare_schema(migrate)
            except StorageError:
                self._conn.close()
                raise
            # From now on lock waits are ours (see _begin_immediate and _read).
            self._conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    # ---------------------------------------------------------------- schema

    def schema_version(self) -> int:
        return self._read(lambda cur: int(cur.execute("PRAGMA user_version").fetchone()[0]))

    def _prepare_schema(self, migrate: bool) -> list[int]:
        """Create or check the schema; with ``migrate``, apply the missing steps."""
        from pylime.keyserver import schema

        found = self.schema_version()
        if found == 0:
            tables = self._read(
                lambda cur: cur.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
            )
            if tables:
                raise schema.NotAKeyServerDatabaseError(
                    f"{self.path} holds tables but no key-server schema version: "
                    "not a pylime key-server database"
                )
        applied = []
        for step in schema.pending_steps(found, migrate=migrate):
            with self._tx() as cur:
                # Another process may have applied it since we looked.
                now = int(cur.execute("PRAGMA user_version").fetchone()[0])
                if now >= step.version:
                    continue
                for statement in step.sqlite:
                    cur.execute(statement)
                if step.version == schema.OWNER_STEP:
                    rows = cur.execute("SELECT Uid, UserId FROM Users").fetchall()
                    cur.executemany("UPDATE Users SET Owner = ? WHERE Uid = ?", fill_owners(rows))
                cur.execute(f"PRAGMA user_version = {int(step.version)}")
            applied.append(step.version)
        return applied

    def migrate(self) -> list[int]:
        """Apply the schema steps this database lacks; return their versions."""
        return self._prepare_schema(migrate=True)

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
        *,
        owner: str | None = None,
        quotas: AccountQuotas | None = None,
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
            if owner is not None and quotas is not None:
                # BEGIN IMMEDIATE holds the write lock: no other registration runs meanwhile.
                devices, used = self._usage(cur, owner)
                if quotas.max_devices and devices >= quotas.max_devices:
                    return RegisterOutcome.DEVICE_QUOTA
                new = device_bytes(device_id, keys) + opk_bytes(opks)
                if quotas.max_bytes and used + new > quotas.max_bytes:
                    return RegisterOutcome.BYTES_QUOTA
            cur.execute(
                "INSERT INTO Users (Curve, UserId, Ik, SPk, SPk_sig, SPk_id, Registered, Expires,"
                " Owner) VALUES (?, ?, ?, ?, ?, ?, CAST(strftime('%s','now') AS REAL), ?, ?)",
                (
                    int(curve),
                    device_id,
                    keys.ik,
                    keys.spk,
                    keys.spk_sig,
                    keys.spk_id,
                    expires_at,
                    owner,
                ),
            )
            uid = cur.lastrowid
            cur.executemany(
                "INSERT INTO OPk (Uid, OPk, OPk_id) VALUES (?, ?, ?)",
                [(uid, o.public, o.id) for o in opks],
            )
            return RegisterOutcome.CREATED

    @staticmethod
    def _usage(cur: sqlite3.Cursor, owner: str) -> tuple[int, int]:
        """(devices, bytes) stored for an owner, in the current transaction."""
        devices, key_bytes = cur.execute(
            "SELECT count(*), coalesce(sum(length(CAST(UserId AS BLOB)) + length(Ik)"
            " + length(SPk) + length(SPk_sig) + 4), 0) FROM Users WHERE Owner = ?",
            (owner,),
        ).fetchone()
        (opk_total,) = cur.execute(
            "SELECT coalesce(sum(length(OPk) + 4), 0) FROM OPk"
            " WHERE Uid IN (SELECT Uid FROM Users WHERE Owner = ?)",
            (owner,),
        ).fetchone()
        return int(devices), int(key_bytes) + int(opk_total)

    def account_usage(self, owner: str) -> tuple[int, int]:
        return self._read(lambda cur: self._usage(cur, owner))

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
        self,
        curve: Curve,
        device_id: str,
        opks: Sequence[OPk],
        max_opks: int,
        *,
        max_account_bytes: int = 0,
    ) -> AddOutcome:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT Uid, Owner FROM Users WHERE Curve = ? AND UserId = ?",
                (int(curve), device_id),
            ).fetchone()
            if row is None:
                return AddOutcome.NOT_FOUND
            uid, owner = int(row[0]), row[1]
            stored = cur.execute("SELECT count(*) FROM OPk WHERE Uid = ?", (uid,)).fetchone()[0]
            if stored + len(opks) > max_opks:
                return AddOutcome.LIMIT
            if max_account_bytes and owner is not None:
                _, used = self._usage(cur, owner)
                if used + opk_bytes(opks) > max_account_bytes:
                    return AddOutcome.BYTES_QUOTA
            cur.executemany(
                "INSERT INTO OPk (Uid, OPk, OPk_id) VALUES (?, ?, ?)",
                [(uid, o.public, o.id) for o in opks],
            )
            return AddOutcome.ADDED

    def take_bundles(
        self,
        curve: Curve,
        device_ids: Sequence[str],
        *,
        requester: str | None = None,
        budget: OPkBudget | None = None,
        now: float = 0.0,
    ) -> list[StoredBundle | None]:
        out: list[StoredBundle | None] = []
        with self._tx() as cur:
            metered = budget is not None and requester is not None
            tokens = float("inf")
            if metered:
                assert budget is not None
                row = cur.execute(
                    "SELECT Tokens, Updated FROM OPkBudgets WHERE Requester = ?", (requester,)
                ).fetchone()
                stored, updated = row if row is not None else (None, None)
                tokens = budget.tokens(stored, updated, now)
            taken = 0
            for device_id in device_ids:
                row = cur.execute(
                    "SELECT Uid, Ik, SPk, SPk_sig, SPk_id FROM Users WHERE Curve = ? AND UserId = ?",
                    (int(curve), device_id),
                ).fetchone()
                if row is None:
                    out.append(None)
                    continue
                keys = UserKeys(bytes(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]))
                opk = None
                if tokens - taken >= 1:
                    opk_row = cur.execute(
                        "DELETE FROM OPk WHERE id ="
                        " (SELECT id FROM OPk WHERE Uid = ? ORDER BY id LIMIT 1)"
                        " RETURNING OPk, OPk_id",
                        (row[0],),
                    ).fetchone()
                    if opk_row is not None:
                        opk = OPk(bytes(opk_row[0]), int(opk_row[1]))
                        taken += 1
                out.append(StoredBundle(keys, opk))
            if metered and taken:
                cur.execute(
                    "INSERT OR REPLACE INTO OPkBudgets (Requester, Tokens, Updated)"
                    " VALUES (?, ?, ?)",
                    (requester, tokens - taken, now),
                )
        return out

    def forget_budgets(self, before: float) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM OPkBudgets WHERE Updated < ?", (before,))
            return cur.rowcount

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

    def opk_stock(self, below: int | None = None, limit: int | None = None) -> list[DeviceStock]:
        sql = (
            "SELECT u.Curve, u.UserId, coalesce(c.n, 0) AS n FROM Users u"
            " LEFT JOIN (SELECT Uid, count(*) AS n FROM OPk GROUP BY Uid) c USING (Uid)"
        )
        params: list[int] = []
        if below is not None:
            sql += " WHERE coalesce(c.n, 0) < ?"
            params.append(below)
        sql += " ORDER BY n, u.UserId, u.Curve"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)

        def query(cur: sqlite3.Cursor) -> list[DeviceStock]:
            rows = cur.execute(sql, params).fetchall()
            return [DeviceStock(Curve(r[0]), r[1], int(r[2])) for r in rows]

        return self._read(query)

    def opk_stock_levels(self) -> dict[tuple[int, int], int]:
        def query(cur: sqlite3.Cursor) -> dict[tuple[int, int], int]:
            rows = cur.execute(
                "SELECT u.Curve, coalesce(c.n, 0) AS n, count(*) FROM Users u"
                " LEFT JOIN (SELECT Uid, count(*) AS n FROM OPk GROUP BY Uid) c USING (Uid)"
                " GROUP BY u.Curve, n"
            ).fetchall()
            return {(int(r[0]), int(r[1])): int(r[2]) for r in rows}

        return self._read(query)

    @contextmanager
    def _snapshot(self) -> Iterator[Callable[[str], Iterable[tuple[Any, ...]]]]:
        with self._tx(write=False):
            yield lambda sql: self._conn.execute(sql)  # a cursor per query; all in one snapshot

    @contextmanager
    def _bulk(self) -> Iterator[sqlite3.Cursor]:
        with self._tx() as cur:
            yield cur
    def use_nonce(
        self, nonce: str, account: str, nc: int, expires: float, now: float, max_per_account: int
    ) -> NonceUse:
        with self._tx() as cur:
            row = cur.execute("SELECT Account, Nc FROM Nonces WHERE Nonce = ?", (nonce,)).fetchone()
            if row is not None:
                if row[0] != account or nc <= int(row[1]):
                    return NonceUse.REPLAYED
                cur.execute("UPDATE Nonces SET Nc = ? WHERE Nonce = ?", (nc, nonce))
                return NonceUse.ACCEPTED
            held = cur.execute(
                "SELECT count(*) FROM (SELECT 1 FROM Nonces WHERE Account = ? AND Expires > ?"
                " LIMIT ?)",
                (account, now, max_per_account),
            ).fetchone()[0]
            if held >= max_per_account:
                return NonceUse.FULL
            cur.execute(
                "INSERT INTO Nonces (Nonce, Account, Nc, Expires) VALUES (?, ?, ?, ?)",
                (nonce, account, nc, expires),
            )
            return NonceUse.ACCEPTED

    def purge_nonces(self, now: float) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM Nonces WHERE Expires <= ?", (now,))
            return cur.rowcount

    def take_token(self, who: str, rate: float, burst: float, now: float) -> float:
        with self._tx() as cur:
            # One statement: refill by the time elapsed (never negative, whatever the clocks
            # of the processes sharing the file), then take a token if there is one.
            row = cur.execute(
                "INSERT INTO RateBuckets (Who, Tokens, Stamp, Ok) VALUES (:who, :burst - 1, :now, 1)"
                " ON CONFLICT (Who) DO UPDATE SET"
                "  Tokens = min(:burst, Tokens + max(:now - Stamp, 0) * :rate)"
                "   - (min(:burst, Tokens + max(:now - Stamp, 0) * :rate) >= 1),"
                "  Ok = min(:burst, Tokens + max(:now - Stamp, 0) * :rate) >= 1,"
                "  Stamp = max(Stamp, :now)"
                " RETURNING Tokens, Ok",
                {"who": who, "burst": burst, "now": now, "rate": rate},
            ).fetchone()
        tokens, ok = float(row[0]), bool(row[1])
        return 0.0 if ok else (1 - tokens) / rate

    def purge_buckets(self, before: float) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM RateBuckets WHERE Stamp < ?", (before,))
            return cur.rowcount

    def shared_secret(self, name: str, length: int = 32) -> bytes:
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO Config (Name, Value) VALUES (?, ?)",
                (name, secrets.token_bytes(length)),
            )
            return bytes(
                cur.execute("SELECT Value FROM Config WHERE Name = ?", (name,)).fetchone()[0]
            )

    def ping(self) -> None:
        self._read(lambda cur: cur.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
