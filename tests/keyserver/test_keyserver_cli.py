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


def test_serve_abuse_limits_reach_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve's quota and OPk-budget options default to the server's numbers and are passed on."""
    from pylime.keyserver import app, core, service

    seen: list[app.ServerConfig] = []
    monkeypatch.setattr(service, "serve", lambda config, *a, **k: seen.append(config))
    db = str(tmp_path / "keys.sqlite3")
    assert run("keyserver", "serve", "--open", "--plain-http", "--db", db)[0] == 0
    assert run(
        "keyserver", "serve", "--open", "--plain-http", "--db", db,
        "--max-devices-per-account", "4", "--max-device-id-length", "128",
        "--max-account-bytes", "0", "--opk-budget", "7", "--opk-budget-window", "60",
    )[0] == 0
    default, chosen = seen
    assert (
        default.max_devices_per_account,
        default.max_device_id_length,
        default.max_account_bytes,
        default.opk_budget,
        default.opk_budget_window,
    ) == (
        core.DEFAULT_MAX_DEVICES_PER_ACCOUNT,
        core.DEFAULT_MAX_DEVICE_ID_LENGTH,
        core.DEFAULT_MAX_ACCOUNT_BYTES,
        core.DEFAULT_OPK_BUDGET,
        core.DEFAULT_OPK_BUDGET_WINDOW,
    ) == (32, 256, 256 * 1024, 100, 3600.0)
    assert (chosen.max_devices_per_account, chosen.max_device_id_length) == (4, 128)
    assert (chosen.max_account_bytes, chosen.opk_budget, chosen.opk_budget_window) == (0, 7, 60.0)
    assert app.ServerConfig.from_json(chosen.to_json()) == chosen
