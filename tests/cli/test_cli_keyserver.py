"""An operator's whole journey on the command line: accounts, `keyserver serve`, devices, interop."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from tests.cli.conftest import gruu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path):
    """`pylime keyserver serve` in a subprocess (self-signed, realm example.org), one account."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYLIME_")}
    password = "pw-operator-3f9a"
    add = subprocess.run([sys.executable, "-m", "pylime", "keyserver", "account", "add",
                          "dave@example.org", "--db", "keys.sqlite3"], cwd=tmp_path,
                         env={**base, "PYLIME_PASSWORD": password}, capture_output=True,
                         text=True, timeout=60, check=False)
    assert add.returncode == 0 and password not in add.stdout + add.stderr, add.stderr
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pylime", "keyserver", "serve", "--port", str(port),
         "--realm", "example.org", "--db", "keys.sqlite3", "--self-signed",
         "--tls-dir", str(tmp_path), "--log-level", "warning"],
        cwd=tmp_path, env=base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cert = tmp_path / "keyserver-cert.pem"
    deadline = time.monotonic() + 30
    try:
        while True:
            assert process.poll() is None, "keyserver serve exited"
            assert time.monotonic() < deadline, "keyserver serve did not come up in 30 s"
            if cert.exists():
                try:
                    verify = ssl.create_default_context(cafile=str(cert))
                    if httpx.get(f"https://127.0.0.1:{port}/health", verify=verify,
                                 timeout=2).status_code == 200:
                        break
                except (httpx.HTTPError, ssl.SSLError):
                    pass
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port}/lime", str(cert), password
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_operator_journey_on_a_served_key_server(cli, served, tmp_path):
    """account add → serve → device create/list/delete → interop --against, all green."""
    url, cert, password = served
    env = {"PYLIME_USERNAME": "dave", "PYLIME_PASSWORD": password, "PYLIME_CA_FILE": cert}
    dev = gruu("dave")
    created = cli("device", "create", dev, "--server", url, "--opk-batch", "2", "--json",
                  env=env)
    assert created.code == 0, created.err
    assert created.json()["device"]["server"] == url
    assert [d["device_id"] for d in cli("device", "list", "--json").json()["devices"]] == [dev]
    assert cli("device", "delete", dev, env=env).code == 0
    run = cli("interop", "--against", url, "--curve", "c25519", "--json", env=env, timeout=120)
    assert run.code == 0, run.out + run.err
    assert run.json()["ok"] is True
    everything = created.out + created.err + run.out + run.err
    assert password not in everything
