"""Where the PostgreSQL tests find their server: $PYLIME_PG_URL, else the .pg/url of scripts/postgres."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pg_url() -> str | None:
    """The URL of the test cluster, or None when none was started."""
    url = os.environ.get("PYLIME_PG_URL")
    if url:
        return url
    f = REPO / ".pg" / "url"
    if f.is_file():
        return f.read_text().strip() or None
    return None


def require_pg_url() -> str:
    """The URL, or skip the test saying how to get one."""
    url = pg_url()
    if url is None:
        pytest.skip("no PostgreSQL: set PYLIME_PG_URL or run `scripts/postgres start`")
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        if os.environ.get("PYLIME_PG_URL"):
            raise  # explicitly configured: a dead server is a failure, not a skip
        pytest.skip(
            f"PostgreSQL at .pg/url is not answering ({type(exc).__name__}); "
            "run `scripts/postgres start`"
        )
    return url


def fresh_pg_storage(**kwargs: object):  # type: ignore[no-untyped-def]
    """A PostgresStorage on the test cluster with every table emptied."""
    from pylime.keyserver.postgres import PostgresStorage

    storage = PostgresStorage(require_pg_url(), **kwargs)  # type: ignore[arg-type]
    storage.drop_everything()
    return storage
