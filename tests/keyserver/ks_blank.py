"""Empty databases of each backend, and the schema pylime wrote before migrations existed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ks_pg import scratch_pg_database

# Exactly what pylime 0.2 (before `pylime keyserver migrate`) created and recorded, frozen
# here so a change to migration step 1 cannot pass unnoticed.
MAIN_V1_SQLITE = """
CREATE TABLE IF NOT EXISTS Users (
    Uid INTEGER PRIMARY KEY AUTOINCREMENT, Curve INTEGER NOT NULL, UserId TEXT NOT NULL,
    Ik BLOB NOT NULL, SPk BLOB NOT NULL, SPk_sig BLOB NOT NULL, SPk_id INTEGER NOT NULL,
    Registered REAL NOT NULL, Expires REAL, UNIQUE (Curve, UserId));
CREATE TABLE IF NOT EXISTS OPk (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    Uid INTEGER NOT NULL REFERENCES Users(Uid) ON DELETE CASCADE,
    OPk BLOB NOT NULL, OPk_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS OPk_Uid ON OPk (Uid);
CREATE INDEX IF NOT EXISTS Users_Expires ON Users (Expires) WHERE Expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS Accounts (
    Username TEXT NOT NULL, Realm TEXT NOT NULL, HA1_MD5 TEXT NOT NULL,
    HA1_SHA256 TEXT NOT NULL, PRIMARY KEY (Username, Realm));
INSERT INTO Users VALUES (1, 1, 'sip:alice@example.org;gr=a', x'11', x'22', x'33', 7,
    1700000000, NULL);
INSERT INTO OPk VALUES (1, 1, x'44', 1), (2, 1, x'55', 2);
INSERT INTO Accounts VALUES ('alice', 'example.org', 'md5hex', 'sha256hex');
PRAGMA user_version = 1;
"""

MAIN_V1_POSTGRES = [
    """CREATE TABLE IF NOT EXISTS lime_users (uid BIGSERIAL PRIMARY KEY, curve SMALLINT NOT NULL,
    user_id TEXT NOT NULL, ik BYTEA NOT NULL, spk BYTEA NOT NULL, spk_sig BYTEA NOT NULL,
    spk_id BIGINT NOT NULL, registered TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires DOUBLE PRECISION, UNIQUE (curve, user_id))""",
    """CREATE TABLE IF NOT EXISTS lime_opks (id BIGSERIAL PRIMARY KEY,
    uid BIGINT NOT NULL REFERENCES lime_users (uid) ON DELETE CASCADE,
    opk BYTEA NOT NULL, opk_id BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS lime_opks_uid ON lime_opks (uid, id)",
    (
        "CREATE INDEX IF NOT EXISTS lime_users_expires ON lime_users (expires)"
        " WHERE expires IS NOT NULL"
    ),
    """CREATE TABLE IF NOT EXISTS lime_accounts (username TEXT NOT NULL, realm TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL, ha1_sha256 TEXT NOT NULL, PRIMARY KEY (username, realm))""",
    "CREATE TABLE IF NOT EXISTS lime_config (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    (
        "INSERT INTO lime_config (name, value) VALUES ('schema_version', '1')"
        " ON CONFLICT (name) DO NOTHING"
    ),
    (
        "INSERT INTO lime_users (curve, user_id, ik, spk, spk_sig, spk_id, expires)"
        " VALUES (1, 'sip:alice@example.org;gr=a', '\\x11', '\\x22', '\\x33', 7, NULL)"
    ),
    "INSERT INTO lime_opks (uid, opk, opk_id) VALUES (1, '\\x44', 1), (1, '\\x55', 2)",
    "INSERT INTO lime_accounts VALUES ('alice', 'example.org', 'md5hex', 'sha256hex')",
]


@contextmanager
def blank_database(backend: str, tmp_path: Path, name: str = "blank") -> Iterator[str]:
    """The --db name of an empty database on ``backend`` (sqlite-file or postgres)."""
    if backend == "postgres":
        url, drop = scratch_pg_database()
        try:
            yield url
        finally:
            drop()
    else:
        yield str(tmp_path / f"{name}.sqlite3")


def write_main_v1(backend: str, db: str) -> None:
    """Create the schema and a few rows as pylime 0.2 did, with its own SQL."""
    if backend == "postgres":
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            for statement in MAIN_V1_POSTGRES:
                conn.execute(statement)  # type: ignore[arg-type]
    else:
        conn = sqlite3.connect(db)
        conn.executescript(MAIN_V1_SQLITE)
        conn.close()
