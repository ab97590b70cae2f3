"""Building a KeyServer on each storage backend for the tests."""

from __future__ import annotations

from pathlib import Path

from ks_pg import fresh_pg_storage

from pylime.keyserver import KeyServer


def make_server(backend: str, tmp_path: Path, **kwargs: object) -> KeyServer:
    """A fresh KeyServer on the named backend."""
    if backend == "sqlite-memory":
        return KeyServer(**kwargs)  # type: ignore[arg-type]
    if backend == "sqlite-file":
        return KeyServer(tmp_path / "keys.sqlite3", **kwargs)  # type: ignore[arg-type]
    if backend == "postgres":
        return KeyServer(fresh_pg_storage(), **kwargs)  # type: ignore[arg-type]
    raise AssertionError(backend)
