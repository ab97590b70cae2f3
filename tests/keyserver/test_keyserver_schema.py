"""Schema versions and `pylime keyserver migrate`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from ks_blank import blank_database, write_main_v1

from pylime.cli import main
from pylime.keyserver import schema
from pylime.keyserver.core import open_storage
from pylime.keyserver.schema import (
    NotAKeyServerDatabaseError,
    SchemaTooNewError,
    SchemaTooOldError,
    Step,
)
from pylime.keyserver.storage import StorageError
from pylime.types import Curve

BACKENDS = ["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def blank(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database (SQLite file, or a PostgreSQL database of its own)."""
    with blank_database(backend, tmp_path) as db:
        yield db


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def table_names(backend: str, db: str) -> set[str]:
    if backend == "postgres":
        import psycopg

        with psycopg.connect(db) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
    else:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def columns(backend: str, db: str, table: str) -> list[str]:
    if backend == "postgres":
        import psycopg

        with psycopg.connect(db) as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        return [r[0] for r in rows]
    with sqlite3.connect(db) as conn:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()]


def extra_step(version: int, sqlite: tuple[str, ...], postgres: tuple[str, ...]) -> Step:
    return Step(version, f"test step {version}", sqlite, postgres)


LATEST = schema.SCHEMA_VERSION  # this code's real version; test steps come after it
NOTES_STEP = extra_step(
    LATEST + 1,
    ("CREATE TABLE Notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",),
    ("CREATE TABLE lime_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",),
)


@pytest.fixture
def with_step_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code knows a migration step 2 (a table added by a later release)."""
    monkeypatch.setattr(schema, "STEPS", (*schema.STEPS, NOTES_STEP))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", LATEST + 1)


def test_an_empty_database_gets_every_step(backend: str, blank: str) -> None:
    """A new database is created at the code's version, recorded in the database."""
    storage = open_storage(blank)
    try:
        assert storage.schema_version() == schema.SCHEMA_VERSION
        assert storage.applied_steps == [s.version for s in schema.STEPS]
    finally:
        storage.close()
    reopened = open_storage(blank)
    assert reopened.applied_steps == [] and reopened.schema_version() == schema.SCHEMA_VERSION
    reopened.close()


def test_every_table_and_column_is_exported_or_excused(backend: str, blank: str) -> None:
    """schema.TABLES describes each table of a fresh database, column for column, or
    UNEXPORTED says why it is left out: a table added without either fails here."""
    open_storage(blank).close()
    dialect = "postgres" if backend == "postgres" else "sqlite"
    described = {t.postgres if dialect == "postgres" else t.sqlite: t for t in schema.TABLES}
    assert table_names(backend, blank) == set(described) | (
        set(schema.UNEXPORTED[dialect]) & table_names(backend, blank)
    )
    for name, table in described.items():
        expected = [c.postgres if dialect == "postgres" else c.sqlite for c in table.columns]
        assert columns(backend, blank, name) == expected, name


def test_a_database_made_by_the_previous_release_is_served(backend: str, blank: str) -> None:
    """A database written by pylime 0.2's own SQL is version 1: migrated to this code's
    version, its keys and OPks are intact."""
    write_main_v1(backend, blank)
    storage = open_storage(blank, migrate=True)
    try:
        assert storage.schema_version() == LATEST
        assert storage.applied_steps == list(range(2, LATEST + 1))
        (bundle,) = storage.take_bundles(Curve.C25519, ["sip:alice@example.org;gr=a"])
        assert bundle is not None and bundle.keys.ik == b"\x11"
        assert bundle.opk is not None and bundle.opk.id == 1  # the oldest first
        assert storage.get_account("alice", "example.org") is not None
    finally:
        storage.close()


@pytest.mark.usefixtures("with_step_2")
def test_an_older_database_is_refused_until_migrated(backend: str, blank: str) -> None:
    """A version-1 database under code at version 2: a typed refusal naming the command,
    then `pylime keyserver migrate` applies step 2, records it, keeps the data."""
    write_main_v1(backend, blank)
    with pytest.raises(SchemaTooOldError, match="pylime keyserver migrate") as refused:
        open_storage(blank)
    assert (refused.value.found, refused.value.supported) == (1, LATEST + 1)

    pending = list(range(2, LATEST + 2))
    code, out = cli("keyserver", "migrate", "--db", blank, "--check", "--json")
    assert code == 1
    assert json.loads(out) == {"ok": True, "version": 1, "latest": LATEST + 1, "pending": pending}

    code, out = cli("keyserver", "migrate", "--db", blank, "--json")
    assert code == 0, out
    assert json.loads(out) == {"ok": True, "from": 1, "to": LATEST + 1, "applied": pending}
    assert ("lime_notes" if backend == "postgres" else "Notes") in table_names(backend, blank)

    storage = open_storage(blank)  # now served
    try:
        assert storage.schema_version() == LATEST + 1
        assert storage.opk_ids(Curve.C25519, "sip:alice@example.org;gr=a") == [1, 2]
    finally:
        storage.close()
    code, out = cli("keyserver", "migrate", "--db", blank)
    assert code == 0 and "up to date" in out


def test_a_failing_step_leaves_the_previous_version(
    backend: str, blank: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps run one transaction each: step LATEST+1 commits, the next fails half-way and
    leaves nothing behind (its first table is rolled back), and the version stays LATEST+1."""
    write_main_v1(backend, blank)
    broken = extra_step(
        LATEST + 2,
        ("CREATE TABLE Half (id INTEGER)", "CREATE TABLE Notes (id INTEGER)"),
        ("CREATE TABLE lime_half (id BIGINT)", "CREATE TABLE lime_notes (id BIGINT)"),
    )
    monkeypatch.setattr(schema, "STEPS", (*schema.STEPS, NOTES_STEP, broken))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", LATEST + 2)
    with pytest.raises(StorageError):
        open_storage(blank, migrate=True)
    names = table_names(backend, blank)
    assert not {"Half", "lime_half"} & names
    with pytest.raises(SchemaTooOldError) as refused:
        open_storage(blank)
    assert refused.value.found == LATEST + 1


def test_a_newer_database_is_refused(backend: str, blank: str) -> None:
    """A database migrated by a newer release is never served, nor migrated down."""
    open_storage(blank).close()
    if backend == "postgres":
        import psycopg

        with psycopg.connect(blank, autocommit=True) as conn:
            conn.execute("UPDATE lime_config SET value = '99' WHERE name = 'schema_version'")
    else:
        with sqlite3.connect(blank) as conn:
            conn.execute("PRAGMA user_version = 99")
    for migrate in (False, True):
        with pytest.raises(SchemaTooNewError) as refused:
            open_storage(blank, migrate=migrate)
        assert refused.value.found == 99
    code, out = cli("keyserver", "migrate", "--db", blank)
    assert code == 1 and "newer" in out


def test_a_foreign_sqlite_file_is_not_taken_over(tmp_path: Path) -> None:
    """An SQLite file with another program's tables and no version is refused untouched."""
    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    with pytest.raises(NotAKeyServerDatabaseError):
        open_storage(db)
    assert table_names("sqlite-file", str(db)) == {"contacts"}


@pytest.mark.usefixtures("with_step_2")
def test_serve_refuses_an_unmigrated_database(backend: str, blank: str) -> None:
    """`pylime keyserver serve` on a database one step behind exits at once, naming migrate."""
    write_main_v1(backend, blank)
    code, out = cli("keyserver", "serve", "--db", blank, "--realm", "example.org", "--plain-http")
    assert code == 1 and "older than this server's" in out and "migrate" in out
