"""`pylime chat`: the SIP agent's commands are registered and refuse bad usage cleanly."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pylime.cli import main


def test_chat_lists_send_and_listen() -> None:
    """`pylime chat --help` shows both commands; `pylime --help` shows the group."""
    runner = CliRunner()
    assert "chat" in runner.invoke(main, ["--help"]).output
    out = runner.invoke(main, ["chat", "--help"]).output
    assert "listen" in out and "send" in out


def test_chat_send_needs_a_room_or_recipients(tmp_path: object) -> None:
    """Neither --room nor --to: usage error (exit 2), as one JSON object with --json."""
    result = CliRunner().invoke(main, ["chat", "send", "--json", "--aor", "sip:a@d", "--proxy", "sip:d",
                                       "--server", "https://d/lime", "hello"])
    assert result.exit_code == 2
    assert json.loads(result.output)["error"]["type"] == "UsageError"


def test_chat_listen_without_a_key_server_is_a_usage_error() -> None:
    """--server is needed for the lime user created on the first registration."""
    result = CliRunner().invoke(main, ["chat", "listen", "--aor", "sip:a@d", "--proxy", "sip:d"],
                                env={"PYLIME_SERVER": ""})
    assert result.exit_code == 2 and "--server" in result.output
