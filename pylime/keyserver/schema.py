"""The key server's database schema: numbered migration steps, and the tables export moves.

A database records the version of the last step applied to it (SQLite: ``PRAGMA
user_version``; PostgreSQL: ``lime_config.schema_version``). Opening one:

- empty: every step runs, so a new database is exactly a fully migrated one;
- at :data:`SCHEMA_VERSION`: served as is;
- older: refused with :class:`SchemaTooOldError` unless opened with ``migrate=True``
  (``pylime keyserver migrate``), which applies the missing steps in order, each in its own
  transaction that also records its version, so a failed step leaves the previous version;
- newer: refused with :class:`SchemaTooNewError` (this code would misread it).

Adding a table or column: append a :class:`Step` with the next version and the SQL for both
backends, and describe the table in :data:`TABLES` (rows that ``export`` must carry) or name it
in :data:`UNEXPORTED` with the reason. ``tests/keyserver/test_keyserver_schema.py`` fails when a
table or column of a fresh database is in neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylime.keyserver.storage import StorageError

__all__ = [
    "OWNER_STEP",
    "SCHEMA_VERSION",
    "STEPS",
    "TABLES",
    "UNEXPORTED",
    "Column",
    "NotAKeyServerDatabaseError",
    "SchemaError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "Step",
    "Table",
    "pending_steps",
]


class SchemaError(StorageError):
    """The database's schema does not match this code's (nothing was changed)."""


class SchemaTooNewError(SchemaError):
    """The database was migrated by a newer pylime: this code would misread it."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this server's ({supported}): "
            "run the pylime version that migrated it"
        )
        self.found = found
        self.supported = supported


class SchemaTooOldError(SchemaError):
    """The database predates this code's schema: ``pylime keyserver migrate`` brings it up."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"database schema version {found} is older than this server's ({supported}): "
            "run `pylime keyserver migrate --db ...` first"
        )
        self.found = found
        self.supported = supported


class NotAKeyServerDatabaseError(SchemaError):
    """The SQLite file holds tables but no key-server schema version (another program's?)."""


@dataclass(frozen=True)
class Step:
    """One migration: from ``version - 1`` to ``version``; statements run in one transaction."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


def _statements(script: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in script.split(";") if s.strip())


# Version 1: the schema pylime created before versions were migrated (its code wrote version 1
# too), so every database made by earlier releases is at version 1.
_SQLITE_V1 = """
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
)
"""

_POSTGRES_V1 = """
CREATE TABLE IF NOT EXISTS lime_users (
    uid BIGSERIAL PRIMARY KEY,
    curve SMALLINT NOT NULL,
    user_id TEXT NOT NULL,
    ik BYTEA NOT NULL,
    spk BYTEA NOT NULL,
    spk_sig BYTEA NOT NULL,
    spk_id BIGINT NOT NULL,
    registered TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires DOUBLE PRECISION,
    UNIQUE (curve, user_id)
);
CREATE TABLE IF NOT EXISTS lime_opks (
    id BIGSERIAL PRIMARY KEY,
    uid BIGINT NOT NULL REFERENCES lime_users (uid) ON DELETE CASCADE,
    opk BYTEA NOT NULL,
    opk_id BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS lime_opks_uid ON lime_opks (uid, id);
CREATE INDEX IF NOT EXISTS lime_users_expires ON lime_users (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS lime_accounts (
    username TEXT NOT NULL,
    realm TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    PRIMARY KEY (username, realm)
);
CREATE TABLE IF NOT EXISTS lime_config (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
)
"""

# Version 2 (issue 17): each device's owner (``user@domain``, for the quotas per account) and
# the OPk budget per requester. The storages fill Owner from UserId right after this step's
# statements, in its transaction (the canonical parser, pylime.deviceid, is Python).
OWNER_STEP = 2
_SQLITE_V2 = """
ALTER TABLE Users ADD COLUMN Owner TEXT;
CREATE INDEX IF NOT EXISTS Users_Owner ON Users (Owner) WHERE Owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS OPkBudgets (
    Requester TEXT PRIMARY KEY,
    Tokens REAL NOT NULL,
    Updated REAL NOT NULL
)
"""
_POSTGRES_V2 = """
ALTER TABLE lime_users ADD COLUMN IF NOT EXISTS owner TEXT;
CREATE INDEX IF NOT EXISTS lime_users_owner ON lime_users (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS lime_opk_budgets (
    requester TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL
)
"""

# Version 3: state shared by every server process on the database (pylime.keyserver.state):
# used digest nonces and rate-limit buckets (transient), and a name/value table on SQLite
# like PostgreSQL's lime_config (it holds the nonce secret).
_SQLITE_V3 = """
CREATE TABLE IF NOT EXISTS Config (
    Name TEXT PRIMARY KEY,
    Value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS Nonces (
    Nonce TEXT PRIMARY KEY,
    Account TEXT NOT NULL,
    Nc INTEGER NOT NULL,
    Expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS Nonces_Account ON Nonces (Account, Expires);
CREATE INDEX IF NOT EXISTS Nonces_Expires ON Nonces (Expires);
CREATE TABLE IF NOT EXISTS RateBuckets (
    Who TEXT PRIMARY KEY,
    Tokens REAL NOT NULL,
    Stamp REAL NOT NULL,
    Ok INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS RateBuckets_Stamp ON RateBuckets (Stamp)
"""

_POSTGRES_V3 = """
CREATE TABLE IF NOT EXISTS lime_nonces (
    nonce TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    nc BIGINT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS lime_nonces_account ON lime_nonces (account, expires);
CREATE INDEX IF NOT EXISTS lime_nonces_expires ON lime_nonces (expires);
CREATE TABLE IF NOT EXISTS lime_rate (
    who TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    stamp DOUBLE PRECISION NOT NULL,
    ok BOOLEAN NOT NULL DEFAULT true
);
CREATE INDEX IF NOT EXISTS lime_rate_stamp ON lime_rate (stamp)
"""

# Ordered; versions are 1, 2, 3, ... without gaps. Never edit a released step: add one.
STEPS: tuple[Step, ...] = (
    Step(1, "users, OPks and digest accounts", _statements(_SQLITE_V1), _statements(_POSTGRES_V1)),
    Step(
        OWNER_STEP,
        "device owners (quotas per account) and OPk budgets per requester",
        _statements(_SQLITE_V2),
        _statements(_POSTGRES_V2),
    ),
    Step(
        3,
        "shared digest nonces and rate-limit buckets",
        _statements(_SQLITE_V3),
        _statements(_POSTGRES_V3),
    ),
)

SCHEMA_VERSION = STEPS[-1].version


def pending_steps(
    found: int, *, migrate: bool, steps: tuple[Step, ...] | None = None
) -> list[Step]:
    """The steps to apply to a database at version ``found`` (0 = empty database).

    Raises:
        SchemaTooNewError: ``found`` is above the code's version.
        SchemaTooOldError: ``found`` is a real, older version and ``migrate`` is False.
    """
    steps = STEPS if steps is None else steps
    latest = steps[-1].version
    if found > latest:
        raise SchemaTooNewError(found, latest)
    pending = [s for s in steps if s.version > found]
    if pending and found > 0 and not migrate:
        raise SchemaTooOldError(found, latest)
    return pending


# ---------------------------------------------------------------------------- exported tables

# Value kinds in the export file: int and text as JSON, blob as base64, real as a JSON
# number (exact: Python writes the shortest text that reads back as the same double), time as
# integer microseconds since the epoch (PostgreSQL's precision; SQLite keeps seconds).
KINDS = ("int", "text", "blob", "real", "time")


@dataclass(frozen=True)
class Column:
    """One exported column: its name in the file and in each backend, and its kind."""

    name: str
    kind: str
    sqlite: str
    postgres: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    """One exported table, in the order tables are written (referenced before referencing)."""

    name: str
    sqlite: str
    postgres: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # the primary key: rows are written in its order (stable files)
    serial: str | None = None  # a generated id column whose counter import must move on
    extra: dict[str, str] = field(default_factory=dict)


def _col(name: str, kind: str, sqlite: str, nullable: bool = False) -> Column:
    return Column(name, kind, sqlite, name, nullable)


TABLES: tuple[Table, ...] = (
    Table(
        "users",
        "Users",
        "lime_users",
        (
            _col("uid", "int", "Uid"),
            _col("curve", "int", "Curve"),
            _col("user_id", "text", "UserId"),
            _col("ik", "blob", "Ik"),
            _col("spk", "blob", "SPk"),
            _col("spk_sig", "blob", "SPk_sig"),
            _col("spk_id", "int", "SPk_id"),
            _col("registered", "time", "Registered"),
            _col("expires", "real", "Expires", nullable=True),
            _col("owner", "text", "Owner", nullable=True),
        ),
        key=("uid",),
        serial="uid",
    ),
    Table(
        "opks",
        "OPk",
        "lime_opks",
        (
            _col("id", "int", "id"),
            _col("uid", "int", "Uid"),
            _col("opk", "blob", "OPk"),
            _col("opk_id", "int", "OPk_id"),
        ),
        key=("id",),  # the hand-out order (oldest first) survives the move
        serial="id",
    ),
    Table(
        "accounts",
        "Accounts",
        "lime_accounts",
        (
            _col("username", "text", "Username"),
            _col("realm", "text", "Realm"),
            _col("ha1_md5", "text", "HA1_MD5"),
            _col("ha1_sha256", "text", "HA1_SHA256"),
        ),
        key=("realm", "username"),
    ),
)

# Tables a database may hold that export leaves out, with the reason (per backend).
_TRANSIENT_NONCES = "used digest nonces: valid for minutes; clients answer a fresh challenge"
_TRANSIENT_BUCKETS = "rate-limit buckets: a missing bucket is a full one"

UNEXPORTED: dict[str, dict[str, str]] = {
    "sqlite": {
        "sqlite_sequence": "SQLite's AUTOINCREMENT counters: rebuilt from the imported ids",
        "sqlite_stat1": "planner statistics (ANALYZE): rebuilt by the database",
        "OPkBudgets": "transient: OPk budgets refill within their window; a move resets them",
        "Config": "the nonce secret: the target makes its own (outstanding nonces go stale)",
        "Nonces": _TRANSIENT_NONCES,
        "RateBuckets": _TRANSIENT_BUCKETS,
    },
    "postgres": {
        "lime_config": "the schema version (carried in the export header instead) and the "
        "nonce secret (the target makes its own: outstanding nonces go stale)",
        "lime_opk_budgets": "transient: OPk budgets refill within their window; a move resets them",
        "lime_nonces": _TRANSIENT_NONCES,
        "lime_rate": _TRANSIENT_BUCKETS,
    },
}
