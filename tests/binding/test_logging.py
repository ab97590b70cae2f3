"""lime's own log records go to Python's logging, never to stdout."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from pylime import UserExistsError


def test_lime_records_reach_the_pylime_lime_logger(lime_world, caplog):
    """lime's explanation of a refused call arrives as a one-line pylime.lime record."""
    alice = lime_world.device("alice")
    with caplog.at_level(logging.WARNING, logger="pylime.lime"), pytest.raises(UserExistsError):
        alice.manager.create_user(alice.device_id, "https://k", lime_world.curve)
    records = [r for r in caplog.records if r.name == "pylime.lime"]
    assert records and all("\n" not in r.getMessage() for r in records)


def test_lime_prints_nothing_on_stdout_or_stderr(tmp_path):
    """A process that makes lime complain keeps stdout and stderr clean."""
    script = textwrap.dedent(f"""
        from pylime import Manager, Curve, DecryptionError
        from pylime.keyserver import KeyServer
        with KeyServer() as ks, Manager({str(tmp_path / "a.sqlite3")!r}, ks) as m:
            m.create_user("sip:a@example.org;gr=1", "https://k", Curve.C25519)
            try:
                m.create_user("sip:a@example.org;gr=1", "https://k", Curve.C25519)
            except Exception:
                pass
            try:
                m.decrypt("sip:a@example.org;gr=1", "sip:a@example.org", "sip:b;gr=2",
                          b"\\x01\\x03\\x01" + bytes(100))
            except DecryptionError:
                pass
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
