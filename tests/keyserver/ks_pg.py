"""Where the PostgreSQL tests find their server: $PYLIME_PG_URL, else the .pg/url of scripts/postgres.

Each test session works in a database of its own, created on first use and dropped at exit,
so two test runs sharing one cluster do not empty each other's tables.
"""

from __future__ import annotations

import atexit
import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_session_url: list[str] = []


def pg_url() -> str | None:
    """The URL of the test cluster, or None when none was started."""
    url = os.environ.get("PYLIME_PG_URL")
    if url:
        return url
    f = Path(os.environ.get("PYLIME_PG_DIR", REPO / ".pg")) / "url"
    if f.is_file():
        return f.read_text().strip() or None
    return None


def _own_database(url: str) -> str:
    """Create a database for this session on the cluster of ``url``; return its URL."""
    import psycopg

    name = f"pylime_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # name is ours

    def drop() -> None:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        except psycopg.Error:
            pass  # the cluster is gone already: nothing to clean

    atexit.register(drop)
    parts = urllib.parse.urlsplit(url)  # keep a URL: the CLI recognises postgresql://
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def require_pg_url() -> str:
    """This session's database URL, or skip the test saying how to get a server."""
    if _session_url:
        return _session_url[0]
    url = pg_url()
    if url is None:
        pytest.skip("no PostgreSQL: set PYLIME_PG_URL or run `scripts/postgres start`")
    try:
        _session_url.append(_own_database(url))
    except Exception as exc:
        if os.environ.get("PYLIME_PG_URL"):
            raise  # explicitly configured: a dead server is a failure, not a skip
        pytest.skip(
            f"PostgreSQL at .pg/url is not answering ({type(exc).__name__}); "
            "run `scripts/postgres start`"
        )
    return _session_url[0]


def fresh_pg_storage(**kwargs: Any) -> Any:
    """A PostgresStorage on this session's database with every table emptied."""
    from pylime.keyserver.postgres import PostgresStorage

    storage = PostgresStorage(require_pg_url(), **kwargs)
    storage.drop_everything()
    return storage


def scratch_pg_database() -> tuple[str, Any]:
    """A new, empty database on the test cluster: (URL, drop function) for schema tests."""
    import psycopg

    base = require_pg_url()
    name = f"pylime_scratch_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # name is ours

    def drop() -> None:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name)), drop
