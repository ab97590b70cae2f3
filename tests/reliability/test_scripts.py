"""The soak and valgrind scripts stay runnable: short runs of each in the normal suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_soak_fuzz_short_run_is_clean_on_every_target(tmp_path):
    """300 inputs per target with the random engine: no crash, no finding, figures reported."""
    out = tmp_path / "figures.json"
    proc = _run("scripts/soak_fuzz", "--inputs", "300", "--engine", "random", "--seed", "11",
                "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    reports = {r["target"]: r for r in json.loads(out.read_text())}
    assert set(reports) == {"lime-decrypt", "ref-decrypt", "ref-parsers", "keyserver-handle",
                            "envelope"}
    for report in reports.values():
        assert report["inputs"] == 300 and not report["crashes"] and not report["findings"]


def test_the_valgrind_scenario_runs_every_call_cleanly_without_valgrind():
    """The scenario scripts/valgrind_binding runs under memcheck completes on its own."""
    proc = _run("scripts/valgrind_binding", "--scenario", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scenario done" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_valgrind_finds_no_leak_or_invalid_access_attributable_to_pylime(tmp_path):
    """Under memcheck: nothing definitely lost and no invalid access in pylime or lime frames."""
    proc = _run("scripts/valgrind_binding", "--rounds", "1", "--log", str(tmp_path / "vg.log"),
                timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "definitely lost in pylime/lime frames: 0" in proc.stdout
