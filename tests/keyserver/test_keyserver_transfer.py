"""`pylime keyserver export` / `import`: every row moves between SQLite and PostgreSQL unchanged."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from ks_blank import blank_database

from pylime.cli import main
from pylime.keyserver import schema
from pylime.keyserver.auth import make_account
from pylime.keyserver.core import open_storage
from pylime.keyserver.protocol import OPk
from pylime.keyserver.storage import Storage, UserKeys
from pylime.keyserver.transfer import ImportFileError, TargetNotEmptyError, dump, load
from pylime.types import Curve

pg = pytest.mark.postgres


def fill(storage: Storage) -> None:
    """Both curves, devices with and without OPks, an expiry, non-ASCII ids, accounts, and
    a gap in the ids (a deleted device), so the copy must keep ids rather than renumber."""
    for n, curve in enumerate([Curve.C25519, Curve.C448, Curve.C25519, Curve.C25519]):
        size = 32 if curve == Curve.C25519 else 56
        keys = UserKeys(bytes([n]) * size, bytes([n + 1]) * size, bytes(range(64)), 1000 + n)
        opks = [OPk(os.urandom(size), 10 * n + i) for i in range(n * 3)]
        expires = 1_800_000_000.123456 if n == 1 else None
        storage.register_user(curve, f"sip:dév{n}@example.org;gr=urn:uuid:{n}", keys, opks, expires)
    storage.delete_user(Curve.C25519, "sip:dév0@example.org;gr=urn:uuid:0")
    storage.take_bundles(Curve.C25519, ["sip:dév2@example.org;gr=urn:uuid:2"])  # an OPk gone
    storage.put_account(make_account("alice", "example.org", "pw"))
    storage.put_account(make_account("bob", "example.net", "pw2"))


def export(storage: Storage) -> str:
    out = io.StringIO()
    dump(storage, out)
    return out.getvalue()


def rows(storage: Storage) -> dict[str, list[tuple[object, ...]]]:
    """Every exported table's rows, read through the backend's own SQL (not the file)."""
    from pylime.keyserver.transfer import _select

    with storage._snapshot() as query:
        return {
            t.name: [tuple(r) for r in query(_select(t, storage.dialect))] for t in schema.TABLES
        }


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[str]:
    with blank_database("postgres", tmp_path) as url:
        yield url


@pg
def test_sqlite_to_postgres_to_sqlite_keeps_every_byte(tmp_path: Path, pg_db: str) -> None:
    """SQLite -> file -> PostgreSQL -> file -> SQLite: the three files are byte-identical and
    the final database holds exactly the rows of the first, ids and all."""
    source = open_storage(tmp_path / "a.sqlite3")
    fill(source)
    first = export(source)

    target = open_storage(pg_db)
    load(target, first.splitlines(keepends=True))
    second = export(target)

    final = open_storage(tmp_path / "c.sqlite3")
    load(final, second.splitlines(keepends=True))
    third = export(final)

    assert first == second == third
    assert rows(source) == rows(final)
    for table in schema.TABLES:
        assert (
            len(rows(source)[table.name]) == json.loads(first.splitlines()[-1])["end"][table.name]
        )
    with sqlite3.connect(tmp_path / "a.sqlite3") as a, sqlite3.connect(tmp_path / "c.sqlite3") as c:
        for t in schema.TABLES:
            assert (
                a.execute(f"SELECT * FROM {t.sqlite} ORDER BY 1, 2").fetchall()
                == c.execute(f"SELECT * FROM {t.sqlite} ORDER BY 1, 2").fetchall()
            )

    # The moved server behaves as the old one: same oldest OPk, new ids after the old ones.
    dev = "sip:dév2@example.org;gr=urn:uuid:2"
    assert source.take_bundles(Curve.C25519, [dev]) == target.take_bundles(Curve.C25519, [dev])
    keys = UserKeys(b"\x09" * 32, b"\x09" * 32, b"\x09" * 64, 1)
    target.register_user(
        Curve.C25519, "sip:new@example.org;gr=x", keys, [OPk(b"\x01" * 32, 1)], None
    )
    assert max(r[0] for r in rows(target)["users"]) > max(r[0] for r in rows(source)["users"])
    for s in (source, target, final):
        s.close()


@pg
def test_postgres_times_survive_to_the_microsecond(tmp_path: Path, pg_db: str) -> None:
    """PostgreSQL stamps registrations with microseconds: PG -> SQLite -> PG keeps them."""
    source = open_storage(pg_db)
    fill(source)
    first = export(source)
    assert any(r[7] % 1_000_000 for r in rows(source)["users"])  # sub-second stamps present
    middle = open_storage(tmp_path / "m.sqlite3")
    load(middle, first.splitlines(keepends=True))
    with blank_database("postgres", tmp_path) as again_url:
        again = open_storage(again_url)
        load(again, export(middle).splitlines(keepends=True))
        assert rows(again) == rows(source) and export(again) == first
        again.close()
    source.close()
    middle.close()


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pg)])
def empty_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with blank_database(str(request.param), tmp_path, "target") as db:
        storage = open_storage(db)
        yield storage
        storage.close()


@pytest.fixture
def exported(tmp_path: Path) -> str:
    source = open_storage(tmp_path / "source.sqlite3")
    fill(source)
    text = export(source)
    source.close()
    return text


def _with(line: str, index: int, value: object) -> str:
    """A row line with one value replaced."""
    row = json.loads(line)
    row[index] = value
    return json.dumps(row) + "\n"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ls: ls[:-1], "ends before its end record"),
        (lambda ls: ls[:5], "ends before"),
        (
            lambda ls: [ls[0].replace(f'"schema":{schema.SCHEMA_VERSION}', '"schema":7'), *ls[1:]],
            "schema version 7",
        ),
        (lambda ls: ['{"format":"other"}\n', *ls[1:]], "not a pylime"),
        (lambda ls: [*ls[:3], ls[3].replace('"', "'", 1), *ls[4:]], "not JSON"),
        (lambda ls: [*ls[:-1], '{"end":{"users":1,"opks":0,"accounts":0}}\n'], "row counts"),
        (lambda ls: [ls[0], ls[1].replace('"ik"', '"IK"'), *ls[2:]], "columns of users differ"),
        (lambda ls: [*ls[:2], _with(ls[2], 3, "%%"), *ls[3:]], "ik is not base64"),
        (lambda ls: [*ls[:2], _with(ls[2], 0, "7"), *ls[3:]], "uid is not of kind int"),
        (lambda ls: [*ls[:2], _with(ls[2], 2, None), *ls[3:]], "null in the non-null"),
        (lambda ls: [*ls[:2], "[1,2]\n", *ls[2:]], "2 values"),
    ],
    ids=[
        "no-end",
        "cut",
        "schema",
        "header",
        "json",
        "counts",
        "columns",
        "base64",
        "kind",
        "null",
        "width",
    ],
)
def test_a_damaged_file_imports_nothing(
    empty_target: Storage, exported: str, damage: object, message: str
) -> None:
    """A truncated or altered file is refused with the line at fault; the target stays empty."""
    lines = damage(exported.splitlines(keepends=True))  # type: ignore[operator]
    with pytest.raises(ImportFileError, match=message):
        load(empty_target, lines)
    assert all(not v for v in rows(empty_target).values())
    load(empty_target, exported.splitlines(keepends=True))  # and it is still usable
    assert export(empty_target) == exported


def test_import_refuses_a_database_that_holds_rows(empty_target: Storage, exported: str) -> None:
    """Import never merges: a target with any row is refused and keeps exactly what it had."""
    empty_target.put_account(make_account("carol", "example.org", "pw"))
    before = rows(empty_target)
    with pytest.raises(TargetNotEmptyError):
        load(empty_target, exported.splitlines(keepends=True))
    assert rows(empty_target) == before


def test_cli_export_import_round_trip(tmp_path: Path) -> None:
    """`export -o FILE` writes an owner-only file; `import FILE` loads it into a new database."""
    src, dst, dump_file = tmp_path / "s.sqlite3", tmp_path / "d.sqlite3", tmp_path / "keys.jsonl"
    storage = open_storage(src)
    fill(storage)
    storage.close()
    runner = CliRunner()
    result = runner.invoke(main, ["keyserver", "export", "--db", str(src), "-o", str(dump_file)])
    assert result.exit_code == 0, result.output
    assert "exported 3 users, 17 opks, 2 accounts" in result.output
    assert stat.S_IMODE(dump_file.stat().st_mode) == 0o600
    result = runner.invoke(main, ["keyserver", "import", "--db", str(dst), str(dump_file)])
    assert result.exit_code == 0, result.output
    a, b = open_storage(src), open_storage(dst)
    assert rows(a) == rows(b)
    result = runner.invoke(main, ["keyserver", "import", "--db", str(dst), str(dump_file)])
    assert result.exit_code == 1 and "nothing imported" in result.output
    a.close()
    b.close()
