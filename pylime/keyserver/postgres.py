"""PostgreSQL storage for the key server (psycopg 3 with a connection pool).

Several server processes, on one machine or many, can share one database: every operation
is one transaction, and an OPk is claimed with ``FOR UPDATE SKIP LOCKED`` and deleted in the
same statement, so concurrent fetches never hand out the same OPk and never wait on each other.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg import conninfo

from pylime.keyserver import schema
from pylime.keyserver.protocol import OPk
from pylime.keyserver.storage import (
    Account,
    AccountQuotas,
    AddOutcome,
    DeviceStock,
    NonceUse,
    OPkBudget,
    RegisterOutcome,
    Storage,
    StorageError,
    StoredBundle,
    UserKeys,
    device_bytes,
    fill_owners,
    opk_bytes,
)
from pylime.types import Curve

__all__ = ["PostgresStorage"]

# Any constant: serialises schema creation when several processes start at once.
_SCHEMA_LOCK = 0x11DE_5E12
# The first key of the advisory locks that serialise one owner's quota checks.
_OWNER_LOCK = 0x11DE_0A



def _safe_url(url: str) -> str:
    """The URL without its password, for reprs and logs."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://?"
    host = params.get("host", "")
    port = params.get("port", "")
    user = params.get("user", "")
    return f"postgresql://{user}@{host}:{port}/{params.get('dbname', '')}"


class PostgresStorage(Storage):
    """PostgreSQL backend over a psycopg_pool connection pool.

    Args:
        url: a libpq URL (``postgresql://user@host:port/db``).
        min_size / max_size: the pool's bounds, per process.
        timeout: seconds to wait for a free connection before failing the request.
        migrate: bring an older schema up to date instead of refusing it.
    """

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 10.0,
        migrate: bool = False,
    ) -> None:
        self._display = _safe_url(url)
        self._url = url
        self._timeout = timeout
        self._state_pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._state_lock = threading.Lock()
        try:
            self._pool = psycopg_pool.ConnectionPool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                open=False,
                name="pylime-keyserver",
                # Single statements run as their own transaction (one round trip); operations
                # of several statements open an explicit transaction (see _tx).
                kwargs={"autocommit": True},
            )
            self._pool.open(wait=True, timeout=timeout)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"cannot connect to {self._display}: {type(exc).__name__}") from exc
        self._closed = False
        try:
            self.applied_steps = self._prepare_schema(migrate)
        except StorageError:
            self.close()
            raise

    # ---------------------------------------------------------------- schema

    @staticmethod
    def _read_version(cur: psycopg.Cursor[Any]) -> int:
        cur.execute("SELECT to_regclass('lime_config') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            return 0
        cur.execute("SELECT value FROM lime_config WHERE name = 'schema_version'")
        row = cur.fetchone()
        return int(bytes(row[0]).decode()) if row else 0

    def schema_version(self) -> int:
        with self._auto() as cur:
            return self._read_version(cur)

    def _prepare_schema(self, migrate: bool) -> list[int]:
        """Create or check the schema; with ``migrate``, apply the missing steps."""
        applied = []
        for step in schema.pending_steps(self.schema_version(), migrate=migrate):
            with self._tx() as cur:
                # Serialises processes starting or migrating at once; re-read under the lock.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                if self._read_version(cur) >= step.version:
                    continue
                for statement in step.postgres:
                    cur.execute(statement)
                if step.version == schema.OWNER_STEP:
                    cur.execute("SELECT uid, user_id FROM lime_users")
                    owners = fill_owners(cur.fetchall())
                    if owners:
                        cur.executemany(
                            "UPDATE lime_users SET owner = %s WHERE uid = %s", owners
                        )
                cur.execute(
                    "INSERT INTO lime_config (name, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (str(step.version).encode(),),
                )
            applied.append(step.version)
        return applied

    def migrate(self) -> list[int]:
        return self._prepare_schema(migrate=True)

    def __repr__(self) -> str:
        return f"PostgresStorage({self._display!r})"

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """An explicit transaction on a pooled connection; failures become StorageError."""
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"PostgreSQL error: {type(exc).__name__}: {exc}") from exc

    @contextmanager
    def _auto(self) -> Iterator[psycopg.Cursor[Any]]:
        """A pooled connection in autocommit: each statement is atomic on its own."""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"PostgreSQL error: {type(exc).__name__}: {exc}") from exc

    @contextmanager
    def _state(self) -> Iterator[psycopg.Cursor[Any]]:
        """Autocommit on a small pool of its own whose commits do not wait for the WAL flush.

        Nonce uses and rate buckets are written on every request and matter only for
        minutes: a crash of the database may lose the last fraction of a second of them
        (``synchronous_commit = off``), which costs at most a replay of a request captured in
        that instant, and saves every request a disk flush. Keys and OPks keep full durability.
        """
        pool = self._state_pool
        if pool is None:
            with self._state_lock:
                if self._closed:
                    raise StorageError("storage is closed")
                if self._state_pool is None:
                    try:
                        self._state_pool = psycopg_pool.ConnectionPool(
                            self._url,
                            min_size=1,
                            max_size=4,
                            timeout=self._timeout,
                            open=False,
                            name="pylime-keyserver-state",
                            kwargs={
                                "autocommit": True,
                                "options": "-c synchronous_commit=off",
                            },
                        )
                        self._state_pool.open(wait=True, timeout=self._timeout)
                    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                        self._state_pool = None
                        raise StorageError(
                            f"cannot connect to {self._display}: {type(exc).__name__}"
                        ) from exc
                pool = self._state_pool
        try:
            with pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"PostgreSQL error: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _uid(
        cur: psycopg.Cursor[Any], curve: Curve, device_id: str, lock: bool = False
    ) -> int | None:
        sql = "SELECT uid FROM lime_users WHERE curve = %s AND user_id = %s"
        cur.execute(sql + (" FOR UPDATE" if lock else ""), (int(curve), device_id))
        row = cur.fetchone()
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
            if owner is not None and quotas is not None:
                # One owner's registrations run one at a time (on every server sharing the
                # database), so two of them cannot both take the last free place.
                cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK, owner))
                cur.execute(
                    "SELECT ik, spk, spk_sig, spk_id FROM lime_users"
                    " WHERE curve = %s AND user_id = %s",
                    (int(curve), device_id),
                )
                old = cur.fetchone()
                if old is not None:
                    return self._same_keys(old, keys)
                devices, used = self._usage(cur, owner)
                if quotas.max_devices and devices >= quotas.max_devices:
                    return RegisterOutcome.DEVICE_QUOTA
                new = device_bytes(device_id, keys) + opk_bytes(opks)
                if quotas.max_bytes and used + new > quotas.max_bytes:
                    return RegisterOutcome.BYTES_QUOTA
            # ON CONFLICT waits for a concurrent registration of the same device to finish,
            # so exactly one of them creates it.
            cur.execute(
                "INSERT INTO lime_users (curve, user_id, ik, spk, spk_sig, spk_id, expires, owner)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (curve, user_id) DO NOTHING RETURNING uid",
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
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "SELECT ik, spk, spk_sig, spk_id FROM lime_users"
                    " WHERE curve = %s AND user_id = %s",
                    (int(curve), device_id),
                )
                old = cur.fetchone()
                if old is None:  # deleted between the two statements: treat as a conflict
                    return RegisterOutcome.CONFLICT
                return self._same_keys(old, keys)
            uid = int(row[0])
            if opks:
                cur.executemany(
                    "INSERT INTO lime_opks (uid, opk, opk_id) VALUES (%s, %s, %s)",
                    [(uid, o.public, o.id) for o in opks],
                )
            return RegisterOutcome.CREATED

    @staticmethod
    def _same_keys(old: Any, keys: UserKeys) -> RegisterOutcome:
        same = (bytes(old[0]), bytes(old[1]), bytes(old[2]), int(old[3])) == (
            keys.ik,
            keys.spk,
            keys.spk_sig,
            keys.spk_id,
        )
        return RegisterOutcome.UNCHANGED if same else RegisterOutcome.CONFLICT

    @staticmethod
    def _usage(cur: psycopg.Cursor[Any], owner: str) -> tuple[int, int]:
        """(devices, bytes) stored for an owner, in the current transaction."""
        cur.execute(
            "SELECT count(*), coalesce(sum(octet_length(user_id) + octet_length(ik)"
            " + octet_length(spk) + octet_length(spk_sig) + 4), 0),"
            " coalesce((SELECT sum(octet_length(o.opk) + 4) FROM lime_opks o"
            "  JOIN lime_users u USING (uid) WHERE u.owner = %s), 0)"
            " FROM lime_users WHERE owner = %s",
            (owner, owner),
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]) + int(row[2])

    def account_usage(self, owner: str) -> tuple[int, int]:
        with self._tx() as cur:
            return self._usage(cur, owner)

    def delete_user(self, curve: Curve, device_id: str) -> bool:
        with self._auto() as cur:
            cur.execute(
                "DELETE FROM lime_users WHERE curve = %s AND user_id = %s", (int(curve), device_id)
            )
            return cur.rowcount > 0

    def set_spk(
        self, curve: Curve, device_id: str, spk: bytes, spk_sig: bytes, spk_id: int
    ) -> bool:
        with self._auto() as cur:
            cur.execute(
                "UPDATE lime_users SET spk = %s, spk_sig = %s, spk_id = %s"
                " WHERE curve = %s AND user_id = %s",
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
            owner = None
            if max_account_bytes:
                cur.execute(
                    "SELECT owner FROM lime_users WHERE curve = %s AND user_id = %s",
                    (int(curve), device_id),
                )
                found = cur.fetchone()
                owner = found[0] if found else None
                if owner is not None:  # before the row lock, in register_user's order
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK, owner)
                    )
            # Locking the user row serialises concurrent uploads, so the cap holds.
            uid = self._uid(cur, curve, device_id, lock=True)
            if uid is None:
                return AddOutcome.NOT_FOUND
            cur.execute("SELECT count(*) FROM lime_opks WHERE uid = %s", (uid,))
            row = cur.fetchone()
            stored = int(row[0]) if row else 0
            if stored + len(opks) > max_opks:
                return AddOutcome.LIMIT
            if owner is not None:
                _, used = self._usage(cur, owner)
                if used + opk_bytes(opks) > max_account_bytes:
                    return AddOutcome.BYTES_QUOTA
            if opks:
                cur.executemany(
                    "INSERT INTO lime_opks (uid, opk, opk_id) VALUES (%s, %s, %s)",
                    [(uid, o.public, o.id) for o in opks],
                )
            return AddOutcome.ADDED

    # One statement per device: read its keys and claim its oldest OPk. SKIP LOCKED: a
    # concurrent fetch holding the oldest OPk makes us take the next one rather than wait,
    # never the same one.
    _TAKE = (
        "WITH u AS (SELECT uid, ik, spk, spk_sig, spk_id FROM lime_users"
        "  WHERE curve = %s AND user_id = %s),"
        " o AS (DELETE FROM lime_opks WHERE id = ("
        "  SELECT id FROM lime_opks WHERE uid = (SELECT uid FROM u)"
        "  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING opk, opk_id)"
        " SELECT u.ik, u.spk, u.spk_sig, u.spk_id, o.opk, o.opk_id"
        " FROM u LEFT JOIN o ON true"
    )
    _KEYS_ONLY = (
        "SELECT ik, spk, spk_sig, spk_id, NULL, NULL FROM lime_users"
        " WHERE curve = %s AND user_id = %s"
    )

    def take_bundles(
        self,
        curve: Curve,
        device_ids: Sequence[str],
        *,
        requester: str | None = None,
        budget: OPkBudget | None = None,
        now: float = 0.0,
    ) -> list[StoredBundle | None]:
        if budget is None or requester is None:
            with self._auto() as cur:  # each statement its own transaction: nothing waits
                return [self._take_one(cur, self._TAKE, curve, d) for d in device_ids]
        with self._tx() as cur:
            # The requester's budget row, locked until commit: the same requester's requests
            # on every server take their OPks one after the other, so the budget holds.
            cur.execute(
                "SELECT tokens, updated FROM lime_opk_budgets WHERE requester = %s FOR UPDATE",
                (requester,),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO lime_opk_budgets (requester, tokens, updated)"
                    " VALUES (%s, %s, %s) ON CONFLICT (requester) DO NOTHING",
                    (requester, float(budget.size), now),
                )
                cur.execute(
                    "SELECT tokens, updated FROM lime_opk_budgets"
                    " WHERE requester = %s FOR UPDATE",
                    (requester,),
                )
                row = cur.fetchone()
            assert row is not None
            tokens = budget.tokens(float(row[0]), float(row[1]), now)
            taken = 0
            out: list[StoredBundle | None] = []
            for device_id in device_ids:
                sql = self._TAKE if tokens - taken >= 1 else self._KEYS_ONLY
                bundle = self._take_one(cur, sql, curve, device_id)
                if bundle is not None and bundle.opk is not None:
                    taken += 1
                out.append(bundle)
            if taken:
                cur.execute(
                    "UPDATE lime_opk_budgets SET tokens = %s, updated = %s WHERE requester = %s",
                    (tokens - taken, now, requester),
                )
            return out

    @staticmethod
    def _take_one(
        cur: psycopg.Cursor[Any], sql: str, curve: Curve, device_id: str
    ) -> StoredBundle | None:
        cur.execute(sql, (int(curve), device_id))
        row = cur.fetchone()
        if row is None:
            return None
        keys = UserKeys(bytes(row[0]), bytes(row[1]), bytes(row[2]), int(row[3]))
        opk = None if row[4] is None else OPk(bytes(row[4]), int(row[5]))
        return StoredBundle(keys, opk)

    def forget_budgets(self, before: float) -> int:
        with self._auto() as cur:
            cur.execute("DELETE FROM lime_opk_budgets WHERE updated < %s", (before,))
            return cur.rowcount

    def opk_ids(self, curve: Curve, device_id: str) -> list[int] | None:
        with self._auto() as cur:
            cur.execute(
                "SELECT o.opk_id FROM lime_users u LEFT JOIN lime_opks o USING (uid)"
                " WHERE u.curve = %s AND u.user_id = %s ORDER BY o.id",
                (int(curve), device_id),
            )
            rows = cur.fetchall()
            if not rows:
                return None
            return [int(r[0]) for r in rows if r[0] is not None]

    def opk_count(self, device_id: str, curve: Curve | None = None) -> int:
        with self._auto() as cur:
            if curve is None:
                cur.execute(
                    "SELECT count(*) FROM lime_opks o JOIN lime_users u USING (uid)"
                    " WHERE u.user_id = %s",
                    (device_id,),
                )
            else:
                cur.execute(
                    "SELECT count(*) FROM lime_opks o JOIN lime_users u USING (uid)"
                    " WHERE u.curve = %s AND u.user_id = %s",
                    (int(curve), device_id),
                )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def expire_users(self, now: float) -> int:
        with self._auto() as cur:
            cur.execute(
                "DELETE FROM lime_users WHERE expires IS NOT NULL AND expires <= %s", (now,)
            )
            return cur.rowcount

    def put_account(self, account: Account) -> bool:
        with self._auto() as cur:
            cur.execute(
                "INSERT INTO lime_accounts (username, realm, ha1_md5, ha1_sha256)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (username, realm) DO UPDATE"
                " SET ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256"
                " RETURNING (xmax = 0)",
                (account.username, account.realm, account.ha1_md5, account.ha1_sha256),
            )
            row = cur.fetchone()
            return bool(row and row[0])

    def remove_account(self, username: str, realm: str) -> bool:
        with self._auto() as cur:
            cur.execute(
                "DELETE FROM lime_accounts WHERE username = %s AND realm = %s", (username, realm)
            )
            return cur.rowcount > 0

    def get_account(self, username: str, realm: str) -> Account | None:
        with self._auto() as cur:
            cur.execute(
                "SELECT ha1_md5, ha1_sha256 FROM lime_accounts WHERE username = %s AND realm = %s",
                (username, realm),
            )
            row = cur.fetchone()
            return None if row is None else Account(username, realm, row[0], row[1])

    def list_accounts(self) -> list[tuple[str, str]]:
        with self._auto() as cur:
            cur.execute("SELECT username, realm FROM lime_accounts ORDER BY realm, username")
            return [(r[0], r[1]) for r in cur.fetchall()]

    def opk_stock(self, below: int | None = None, limit: int | None = None) -> list[DeviceStock]:
        sql = (
            "SELECT u.curve, u.user_id, coalesce(c.n, 0) AS n FROM lime_users u"
            " LEFT JOIN (SELECT uid, count(*) AS n FROM lime_opks GROUP BY uid) c USING (uid)"
        )
        params: list[int] = []
        if below is not None:
            sql += " WHERE coalesce(c.n, 0) < %s"
            params.append(below)
        sql += " ORDER BY n, u.user_id, u.curve"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._auto() as cur:
            cur.execute(sql, params)
            return [DeviceStock(Curve(r[0]), r[1], int(r[2])) for r in cur.fetchall()]

    def opk_stock_levels(self) -> dict[tuple[int, int], int]:
        with self._auto() as cur:
            cur.execute(
                "SELECT u.curve, coalesce(c.n, 0) AS n, count(*) FROM lime_users u"
                " LEFT JOIN (SELECT uid, count(*) AS n FROM lime_opks GROUP BY uid) c USING (uid)"
                " GROUP BY u.curve, n"
            )
            return {(int(r[0]), int(r[1])): int(r[2]) for r in cur.fetchall()}

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters for this process's pool (pool_size, pool_available, ...)."""
        return dict(self._pool.get_stats())

    @contextmanager
    def _snapshot(self) -> Iterator[Callable[[str], Iterable[tuple[Any, ...]]]]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                counter = [0]

                def query(sql: str) -> Iterator[tuple[Any, ...]]:
                    counter[0] += 1  # a server-side cursor streams rows in batches
                    with conn.cursor(name=f"pylime_export_{counter[0]}") as cur:
                        cur.itersize = 2000
                        cur.execute(sql)
                        yield from cur

                yield query
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"PostgreSQL error: {type(exc).__name__}: {exc}") from exc

    @contextmanager
    def _bulk(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._tx() as cur:
            yield cur
    def use_nonce(
        self, nonce: str, account: str, nc: int, expires: float, now: float, max_per_account: int
    ) -> NonceUse:
        with self._state() as cur:
            # The usual case, a nonce already in use: one statement on the primary key.
            update = "UPDATE lime_nonces SET nc = %s WHERE nonce = %s AND account = %s AND nc < %s"
            cur.execute(update, (nc, nonce, account, nc))
            if cur.rowcount:
                return NonceUse.ACCEPTED
            # First use: insert it unless the account holds its most live nonces already.
            # ON CONFLICT: another process inserted it meanwhile (or it is a replay).
            cur.execute(
                "INSERT INTO lime_nonces (nonce, account, nc, expires)"
                " SELECT %s, %s, %s, %s WHERE (SELECT count(*) FROM (SELECT 1 FROM lime_nonces"
                "  WHERE account = %s AND expires > %s LIMIT %s) AS held) < %s"
                " ON CONFLICT (nonce) DO NOTHING",
                (nonce, account, nc, expires, account, now, max_per_account, max_per_account),
            )
            if cur.rowcount:
                return NonceUse.ACCEPTED
            cur.execute(update, (nc, nonce, account, nc))  # inserted concurrently, lower nc
            if cur.rowcount:
                return NonceUse.ACCEPTED
            cur.execute("SELECT 1 FROM lime_nonces WHERE nonce = %s", (nonce,))
            return NonceUse.REPLAYED if cur.fetchone() is not None else NonceUse.FULL

    def purge_nonces(self, now: float) -> int:
        with self._state() as cur:
            cur.execute("DELETE FROM lime_nonces WHERE expires <= %s", (now,))
            return cur.rowcount

    def take_token(self, who: str, rate: float, burst: float, now: float) -> float:
        with self._state() as cur:
            # One statement, atomic under concurrent workers on any machine: refill by the
            # time elapsed (never negative, whatever the machines' clocks), take one if there.
            cur.execute(
                "INSERT INTO lime_rate AS r (who, tokens, stamp, ok)"
                " VALUES (%(who)s, %(burst)s - 1, %(now)s, true)"
                " ON CONFLICT (who) DO UPDATE SET"
                "  tokens = LEAST(%(burst)s, r.tokens + GREATEST(%(now)s - r.stamp, 0) * %(rate)s)"
                "   - CASE WHEN LEAST(%(burst)s, r.tokens + GREATEST(%(now)s - r.stamp, 0)"
                "    * %(rate)s) >= 1 THEN 1 ELSE 0 END,"
                "  ok = LEAST(%(burst)s, r.tokens + GREATEST(%(now)s - r.stamp, 0) * %(rate)s) >= 1,"
                "  stamp = GREATEST(r.stamp, %(now)s)"
                " RETURNING tokens, ok",
                {"who": who, "burst": float(burst), "now": float(now), "rate": float(rate)},
            )
            row = cur.fetchone()
        assert row is not None
        tokens, ok = float(row[0]), bool(row[1])
        return 0.0 if ok else (1 - tokens) / rate

    def purge_buckets(self, before: float) -> int:
        with self._state() as cur:
            cur.execute("DELETE FROM lime_rate WHERE stamp < %s", (before,))
            return cur.rowcount

    def shared_secret(self, name: str, length: int = 32) -> bytes:
        with self._auto() as cur:
            cur.execute(
                "INSERT INTO lime_config (name, value) VALUES (%s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_bytes(length)),
            )
            cur.execute("SELECT value FROM lime_config WHERE name = %s", (name,))
            row = cur.fetchone()
        assert row is not None
        return bytes(row[0])

    def ping(self) -> None:
        with self._auto() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            with self._state_lock:
                self._closed = True
                state, self._state_pool = self._state_pool, None
            self._pool.close()
            if state is not None:
                state.close()

    def drop_everything(self) -> None:
        """Delete every row (tests and benchmarks reuse one database)."""
        with self._auto() as cur:
            cur.execute(
                "TRUNCATE lime_opks, lime_users, lime_accounts, lime_opk_budgets,"
                " lime_nonces, lime_rate"
            )
