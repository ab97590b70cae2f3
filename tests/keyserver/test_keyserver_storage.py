"""The storage interface on every backend: accounts, health, and PostgreSQL specifics."""

from __future__ import annotations

import pytest

from pylime.keyserver import KeyServer, StorageError
from pylime.keyserver.storage import Account


def test_accounts_store_ha1_only(server: KeyServer) -> None:
    """Accounts are created, replaced, listed and removed; reprs hide the HA1s."""
    s = server.storage
    alice = Account("alice", "example.org", "a" * 32, "b" * 64)
    assert s.put_account(alice) is True
    assert s.put_account(Account("alice", "example.org", "c" * 32, "d" * 64)) is False
    assert s.put_account(Account("bob", "example.org", "e" * 32, "f" * 64)) is True
    got = s.get_account("alice", "example.org")
    assert got is not None and got.ha1("MD5") == "c" * 32 and got.ha1("sha-256") == "d" * 64
    assert got.ha1("SHA-512") is None
    assert "c" * 32 not in repr(got) and "d" * 64 not in repr(got)
    assert s.get_account("alice", "other.org") is None
    assert s.list_accounts() == [("alice", "example.org"), ("bob", "example.org")]
    assert s.remove_account("alice", "example.org") is True
    assert s.remove_account("alice", "example.org") is False
    assert s.list_accounts() == [("bob", "example.org")]


def test_ping_answers_and_fails_after_close(server: KeyServer) -> None:
    """ping succeeds on an open storage and raises StorageError once closed."""
    server.storage.ping()
    server.close()
    with pytest.raises(StorageError):
        server.storage.ping()


@pytest.mark.postgres
def test_postgres_repr_hides_password() -> None:
    """The PostgreSQL storage's repr and errors never show the password of its URL."""
    from pylime.keyserver.postgres import _safe_url

    shown = _safe_url("postgresql://u:s3cret@127.0.0.1:5432/db")
    assert "s3cret" not in shown and "127.0.0.1" in shown


@pytest.mark.postgres
def test_postgres_unreachable_is_storage_error() -> None:
    """An unreachable PostgreSQL raises StorageError without the password in the message."""
    from pylime.keyserver.postgres import PostgresStorage

    with pytest.raises(StorageError) as info:
        PostgresStorage("postgresql://u:s3cret@127.0.0.1:1/db", timeout=1.0)
    assert "s3cret" not in str(info.value)
