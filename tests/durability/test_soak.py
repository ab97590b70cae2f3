"""Crash safety: a process SIGKILLed while it encrypts and decrypts loses nothing it acknowledged.

A short run of scripts/soak_durability (a few kills per mode); the script itself soaks longer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_lime

pytestmark = requires_lime

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "soak_durability"


def _soak(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, object]]]:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--json", "--dir", str(tmp_path), "--seconds", "20",
         "--max-delay", "0.15", "--final", "10", "--seed", "20261127", "--renew", "15", *args],
        capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("mode", ["full", "wal", "fast"])
def test_killed_process_keeps_every_acknowledged_message(tmp_path, mode):
    """After each SIGKILL and restart, acknowledged messages stay consumed and talk goes on."""
    rc, [result] = _soak(tmp_path, "--modes", mode, "--kills", "3")
    assert result["failures"] == []
    assert result["kills"] == 3
    assert result["acknowledged"] > 10  # the final child alone acknowledges 10
    assert result["positions_unique"] == result["acknowledged"]
    assert rc == 0


@pytest.mark.parametrize("renew", ["15", "0"], ids=["with-renewals", "one-session"])
def test_soak_catches_a_database_that_lost_committed_work(tmp_path, renew):
    """Negative control: rolling the receiver's database back makes the soak fail."""
    rc, [result] = _soak(tmp_path, "--modes", "fast", "--kills", "6", "--renew", renew,
                         "--inject-rollback")
    kinds = ("SESSIONS", "LOST", "STUCK") if renew != "0" else ("LOST", "STUCK")
    assert any(f.startswith(kinds) for f in result["failures"])
    assert rc == 1
