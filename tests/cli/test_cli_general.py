"""The `pylime` command as a whole: help, exit codes, credentials never echoed."""

from __future__ import annotations

import socket

import pytest

from pylime.commands.common import EXIT_CODES
from tests.cli.conftest import gruu

COMMANDS = ["keyserver", "device", "identity", "peer", "encrypt", "decrypt", "diagnose",
            "interop"]


def test_help_lists_every_command(cli):
    """`pylime --help` names every command group and command."""
    done = cli("--help")
    assert done.code == 0
    for name in COMMANDS:
        assert name in done.out


@pytest.mark.parametrize("command", [["device", "create"], ["device", "delete"],
                                     ["device", "list"], ["device", "update"],
                                     ["device", "set-server"], ["identity", "show"],
                                     ["peer", "status"], ["peer", "trust"], ["peer", "untrust"],
                                     ["peer", "unsafe"], ["peer", "forget"], ["encrypt"],
                                     ["decrypt"], ["diagnose"], ["interop"]])
def test_every_command_has_json_and_help(cli, command):
    """Each command documents --json (and the common options where they apply)."""
    done = cli(*command, "--help")
    assert done.code == 0 and "--json" in done.out
    if command != ["interop"]:
        for option in ("--db", "--backend", "--credentials", "--ca-file", "--server"):
            assert option in done.out


def test_exit_codes_are_documented_in_one_table():
    """The exit-code table of docs/cli.md lists every code the CLI uses."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} " in doc


def test_a_missing_option_is_a_usage_error(cli):
    """click's usage errors exit 2: text on stderr, or the JSON error object with --json."""
    assert cli("encrypt", "--from", gruu("alice")).code == 2
    done = cli("encrypt", "--from", gruu("alice"), "--json")
    assert done.code == 2
    error = done.json()["error"]
    assert error["type"] == "UsageError" and "--to" in error["message"]
    bad = cli("device", "create", gruu("alice"), "--curve", "c999", "--json")
    assert bad.code == 2 and bad.json()["ok"] is False


def test_an_unreachable_key_server_exits_3(cli):
    """Nothing listens on the port: exit 3, in JSON too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cli("device", "create", gruu("alice"), "--server", f"https://127.0.0.1:{port}/lime",
               "--backend", "reference", "--json", "--timeout", "2")
    assert done.code == 3
    assert done.json()["error"]["type"] == "TransportError"


def test_wrong_credentials_exit_3_and_are_never_echoed(cli, keyserver):
    """401 from the key server: exit 3; neither password appears in any output, even with -v."""
    wrong = "not-the-right-one-7c1e"
    env = {"PYLIME_USERNAME": "alice", "PYLIME_PASSWORD": wrong,
           "PYLIME_CA_FILE": keyserver.ca_file}
    create = ["device", "create", gruu("alice"), "--server", keyserver.url,
              "--backend", "reference"]
    for args in (create, [*create, "--json"], ["-vv", *create]):
        done = cli(*args, env=env)
        assert done.code == 3, done.err
        assert wrong not in done.out + done.err
    good = cli("-vv", "device", "create", gruu("alice"), "--server", keyserver.url,
               "--opk-batch", "1", "--json", env=keyserver.env("alice"))
    assert good.code == 0, good.err
    assert keyserver.passwords["alice"] not in good.out + good.err


def test_a_password_is_not_accepted_on_the_command_line(cli):
    """There is no --password option: secrets never go through argv."""
    done = cli("device", "create", gruu("alice"), "--password", "secret")
    assert done.code == 2 and "secret" not in done.out


def test_a_username_without_a_password_is_a_usage_error(cli, keyserver):
    """PYLIME_USERNAME alone: exit 2 with the variable to set."""
    done = cli("device", "create", gruu("alice"), "--server", keyserver.url,
               env={"PYLIME_USERNAME": "alice"})
    assert done.code == 2 and "PYLIME_PASSWORD" in done.err


def test_an_unknown_local_device_exits_5(cli, keyserver):
    """identity show for a device the database does not hold: exit 5."""
    cli("device", "create", gruu("bob"), "--server", keyserver.url, "--opk-batch", "1",
        env=keyserver.env("bob"))
    done = cli("identity", "show", gruu("bob"), "--json")
    assert done.code == 5 and done.json()["error"]["type"] == "UserNotFoundError"
