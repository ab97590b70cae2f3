"""`pylime keyserver ...`: argument checks and account management (no server started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pylime.cli import main
from pylime.keyserver import KeyServer


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    # Never inherit a password from the environment the tests run in.
    result = CliRunner().invoke(main, list(args), env={"PYLIME_PASSWORD": None, **(env or {})})
    return result.exit_code, result.output


def test_keyserver_group_is_listed() -> None:
    """`pylime --help` lists the keyserver group."""
    code, out = run("--help")
    assert code == 0 and "keyserver" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--open", "--tls-cert", __file__], "go together"),
        (["--realm", "x.org", "--self-signed", "--plain-http"], "choose one"),
        ([], "--realm"),
        (["--open", "--db", ":memory:", "--workers", "2"], "--workers"),
    ],
)
def test_serve_refuses_inconsistent_options(args: list[str], message: str) -> None:
    """serve explains bad option combinations instead of starting."""
    code, out = run("keyserver", "serve", *args)
    assert code == 2 and message in out


def test_account_add_list_remove(tmp_path: Path) -> None:
    """Accounts are added (password from PYLIME_PASSWORD), listed, updated and removed."""
    db = str(tmp_path / "k.sqlite3")
    env = {"PYLIME_PASSWORD": "pw-1"}
    assert run("keyserver", "account", "add", "alice", "--realm", "a.org", "--db", db, env=env) == (
        0,
        "added alice@a.org\n",
    )
    assert run("keyserver", "account", "add", "alice@a.org", "--db", db, env=env)[1] == (
        "updated alice@a.org\n"
    )
    assert run("keyserver", "account", "list", "--db", db) == (0, "alice@a.org\n")
    with KeyServer(db) as server:
        account = server.storage.get_account("alice", "a.org")
        assert account is not None and "pw-1" not in repr(account)
    assert run("keyserver", "account", "remove", "alice@a.org", "--db", db) == (
        0,
        "removed alice@a.org\n",
    )
    code, out = run("keyserver", "account", "remove", "alice@a.org", "--db", db)
    assert code == 1 and "no account" in out


def test_account_add_needs_realm_and_password(tmp_path: Path) -> None:
    """Without a realm, or without a password and a terminal, account add refuses."""
    db = str(tmp_path / "k.sqlite3")
    assert (
        run("keyserver", "account", "add", "alice", "--db", db, env={"PYLIME_PASSWORD": "x"})[0]
        == 2
    )
    code, out = run("keyserver", "account", "add", "alice@a.org", "--db", db)
    assert code == 2 and "PYLIME_PASSWORD" in out


def test_account_commands_speak_json(tmp_path: Path) -> None:
    """With --json, account add, list and remove print one {"ok": true, ...} object each."""
    import json

    db = str(tmp_path / "k.sqlite3")
    env = {"PYLIME_PASSWORD": "pw-1"}
    code, out = run("keyserver", "account", "add", "bob@b.org", "--db", db, "--json", env=env)
    assert code == 0 and json.loads(out) == {"ok": True, "account": "bob@b.org", "created": True}
    code, out = run("keyserver", "account", "list", "--db", db, "--json")
    assert json.loads(out) == {"ok": True, "accounts": ["bob@b.org"]}
    assert "pw-1" not in out
    code, out = run("keyserver", "account", "remove", "bob@b.org", "--db", db, "--json")
    assert json.loads(out) == {"ok": True, "account": "bob@b.org", "removed": True}
    code, out = run("keyserver", "account", "list", "--db", db, "--json")
    assert json.loads(out) == {"ok": True, "accounts": []}
