"""Moving a key server's data between databases: ``pylime keyserver export`` / ``import``.

The file is JSON lines (UTF-8), written and read as a stream, driven by
:data:`pylime.keyserver.schema.TABLES`::

    {"format": "pylime-keyserver-export", "version": 1, "schema": 1}
    {"table": "users", "columns": [["uid", "int"], ["ik", "blob"], ...]}
    [1, 1, "sip:alice@example.org;gr=...", "q83v...", ...]        one row: a JSON array
    ...
    {"table": "opks", "columns": [...]}
    ...
    {"end": {"users": 2, "opks": 400, "accounts": 1}}                row counts: a check

Blobs are base64, times integer microseconds since the epoch, reals JSON numbers that read
back as the same double. Rows come in primary-key order, so the same content gives the same
bytes whichever backend wrote it; ids are kept (the OPk hand-out order with them). The file
holds HA1 values: keep it as private as the database.

Import runs in one transaction into an empty database at the file's schema version, so a
failure (a truncated file, a bad row) leaves the target empty.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from pylime.keyserver import schema
from pylime.keyserver.schema import Column, Table
from pylime.keyserver.storage import Storage, StorageError

__all__ = ["FORMAT", "FORMAT_VERSION", "ImportFileError", "TargetNotEmptyError", "dump", "load"]

FORMAT = "pylime-keyserver-export"
FORMAT_VERSION = 1
_BATCH = 1000


class ImportFileError(StorageError, ValueError):
    """The export file is malformed, truncated or of another schema; nothing was imported."""


class TargetNotEmptyError(StorageError):
    """Import goes only into an empty database; this one holds rows."""


def _select(table: Table, dialect: str) -> str:
    exprs = []
    for c in table.columns:
        name = c.sqlite if dialect == "sqlite" else c.postgres
        if c.kind == "time":
            if dialect == "sqlite":
                name = f"CAST(round({name} * 1000000) AS INTEGER)"
            else:
                name = f"(extract(epoch FROM {name}) * 1000000)::bigint"
        exprs.append(name)
    names = {c.name: c for c in table.columns}
    order = ", ".join(
        names[k].sqlite if dialect == "sqlite" else names[k].postgres for k in table.key
    )
    table_name = table.sqlite if dialect == "sqlite" else table.postgres
    return f"SELECT {', '.join(exprs)} FROM {table_name} ORDER BY {order}"


def _insert(table: Table, dialect: str) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    cols, values = [], []
    for c in table.columns:
        cols.append(c.sqlite if dialect == "sqlite" else c.postgres)
        if c.kind == "time":
            values.append(
                f"{mark} / 1000000.0"
                if dialect == "sqlite"
                else f"timestamptz 'epoch' + {mark}::bigint * interval '1 microsecond'"
            )
        else:
            values.append(mark)
    table_name = table.sqlite if dialect == "sqlite" else table.postgres
    return f"INSERT INTO {table_name} ({', '.join(cols)}) VALUES ({', '.join(values)})"


def _encode(column: Column, value: Any) -> Any:
    if value is None:
        if not column.nullable:
            raise StorageError(f"NULL in the non-null column {column.name}")
        return None
    if column.kind == "blob":
        return base64.b64encode(bytes(value)).decode("ascii")
    if column.kind in ("int", "time"):
        return int(value)
    if column.kind == "real":
        return float(value)
    return str(value)


def _decode(column: Column, value: Any, where: str) -> Any:
    if value is None:
        if column.nullable:
            return None
        raise ImportFileError(f"{where}: null in the non-null column {column.name}")
    kind = column.kind
    ok = (
        (kind in ("int", "time") and type(value) is int)
        or (kind == "real" and type(value) in (int, float))
        or (kind in ("text", "blob") and type(value) is str)
    )
    if not ok:
        raise ImportFileError(f"{where}: {column.name} is not of kind {kind}")
    if kind == "blob":
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ImportFileError(f"{where}: {column.name} is not base64") from None
    if kind == "real":
        return float(value)
    return value


def _line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def dump(storage: Storage, out: IO[str]) -> dict[str, int]:
    """Write every exported table of ``storage`` to ``out`` from one consistent snapshot.

    Returns the row count of each table.
    """
    counts: dict[str, int] = {}
    dialect = storage.dialect
    version = storage.schema_version()  # opening the storage checked it is this code's
    if version != schema.SCHEMA_VERSION:
        raise schema.SchemaError(
            f"the database is at schema version {version}, this code exports version "
            f"{schema.SCHEMA_VERSION}: run `pylime keyserver migrate` first"
        )
    with storage._snapshot() as query:
        out.write(_line({"format": FORMAT, "version": FORMAT_VERSION, "schema": version}))
        for table in schema.TABLES:
            out.write(
                _line({"table": table.name, "columns": [[c.name, c.kind] for c in table.columns]})
            )
            n = 0
            for row in query(_select(table, dialect)):
                out.write(_line([_encode(c, v) for c, v in zip(table.columns, row, strict=True)]))
                n += 1
            counts[table.name] = n
    out.write(_line({"end": counts}))
    return counts


def _records(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFileError(f"line {number}: not JSON ({exc.msg})") from None


def load(storage: Storage, lines: Iterable[str]) -> dict[str, int]:
    """Import an export file (an iterable of its lines) into the empty ``storage``.

    Returns the row count of each table. All or nothing: one transaction.

    Raises:
        ImportFileError: the file is malformed, truncated, or not of this schema version.
        TargetNotEmptyError: the database holds rows already.
    """
    dialect = storage.dialect
    by_name = {t.name: t for t in schema.TABLES}
    records = _records(lines)
    header = next(records, None)
    if header is None:
        raise ImportFileError("empty file")
    number, head = header
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ImportFileError("not a pylime key-server export (no header)")
    if head.get("version") != FORMAT_VERSION:
        raise ImportFileError(f"export format version {head.get('version')!r} is not supported")
    if head.get("schema") != storage.schema_version():
        raise ImportFileError(
            f"the file is of schema version {head.get('schema')!r}, the database of "
            f"{storage.schema_version()}: migrate both to the same version first"
        )
    counts: dict[str, int] = {}
    with storage._bulk() as cur:
        for table in schema.TABLES:
            name = table.postgres if dialect == "postgres" else table.sqlite
            cur.execute(f"SELECT 1 FROM {name} LIMIT 1")
            if cur.fetchone() is not None:
                raise TargetNotEmptyError(
                    f"the database already holds {table.name}: import needs an empty one"
                )
        current: Table | None = None
        sql = ""
        batch: list[list[Any]] = []
        ended = False

        def flush() -> None:
            if batch:
                cur.executemany(sql, batch)
                batch.clear()

        for number, record in records:
            where = f"line {number}"
            if ended:
                raise ImportFileError(f"{where}: data after the end record")
            if isinstance(record, list):
                if current is None:
                    raise ImportFileError(f"{where}: a row before any table")
                if len(record) != len(current.columns):
                    raise ImportFileError(
                        f"{where}: {len(record)} values, not {len(current.columns)}"
                    )
                batch.append([_decode(c, v, where) for c, v in zip(current.columns, record, strict=True)])
                counts[current.name] += 1
                if len(batch) >= _BATCH:
                    flush()
            elif isinstance(record, dict) and "table" in record:
                flush()
                if record["table"] not in by_name:
                    raise ImportFileError(f"{where}: unknown table {record['table']!r}")
                current = by_name[record["table"]]
                if current.name in counts:
                    raise ImportFileError(f"{where}: table {current.name} appears twice")
                expected = [[c.name, c.kind] for c in current.columns]
                if record.get("columns") != expected:
                    raise ImportFileError(f"{where}: the columns of {current.name} differ")
                sql = _insert(current, dialect)
                counts[current.name] = 0
            elif isinstance(record, dict) and "end" in record:
                flush()
                if record["end"] != counts or set(counts) != set(by_name):
                    raise ImportFileError(f"{where}: the row counts do not match the end record")
                ended = True
            else:
                raise ImportFileError(f"{where}: not a row, table or end record")
        if not ended:
            raise ImportFileError("the file ends before its end record (truncated?)")
        if dialect == "postgres":
            # Generated ids continue after the imported ones.
            for t in schema.TABLES:
                if t.serial:
                    cur.execute(
                        f"SELECT setval(pg_get_serial_sequence('{t.postgres}', '{t.serial}'),"
                        f" coalesce(max({t.serial}), 0) + 1, false) FROM {t.postgres}"
                    )
    return counts
