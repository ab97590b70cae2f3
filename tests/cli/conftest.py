"""Running ``python -m pylime`` as a user would, against a key server on 127.0.0.1.

``keyserver`` is one HTTPS key server (self-signed certificate, digest authentication, an
account per user with a random password) served in a thread for the whole module; ``cli``
runs the command in a subprocess with a clean environment (no inherited PYLIME_* variable)
and the working directory of the test.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pylime.keyserver import KeyServer, ServerConfig, make_account
from pylime.keyserver.service import ServerThread
from pylime.keyserver.tls import generate_self_signed

REALM = "example.org"
USERS = ("alice", "bob", "carol")


@dataclass(frozen=True)
class KeyServerRig:
    """The running key server: URL, certificate to pin, and each user's password."""

    url: str
    ca_file: str
    passwords: dict[str, str]

    def env(self, user: str) -> dict[str, str]:
        """The environment giving ``user``'s credentials and the CA file."""
        return {"PYLIME_USERNAME": user, "PYLIME_PASSWORD": self.passwords[user],
                "PYLIME_CA_FILE": self.ca_file}


def gruu(user: str) -> str:
    """A fresh device id (GRUU) of ``user``."""
    return f"sip:{user}@{REALM};gr=urn:uuid:{uuid.uuid4()}"


@pytest.fixture(scope="module")
def keyserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServerRig]:
    """A key server over HTTPS with digest authentication, for the module."""
    workdir = tmp_path_factory.mktemp("cli-keyserver")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    generate_self_signed(cert, key, ("localhost", "127.0.0.1"))
    passwords = {user: f"pw-{secrets.token_hex(8)}" for user in USERS}
    server = KeyServer(workdir / "keys.sqlite3")
    for user, password in passwords.items():
        server.storage.put_account(make_account(user, REALM, password))
    try:
        with ServerThread(ServerConfig(realm=REALM), server=server, cert=cert, key=key,
                          log_level="critical") as thread:
            yield KeyServerRig(thread.url, str(cert), passwords)
    finally:
        server.close()


@dataclass(frozen=True)
class Result:
    """A finished ``pylime`` run."""

    code: int
    out: str
    err: str
    stdout: bytes

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        return json.loads(self.out)


def run_cli(args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None,
            stdin: bytes = b"", timeout: float = 60) -> Result:
    """``python -m pylime ARGS`` in a subprocess; PYLIME_* from the test's env only."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYLIME_")}
    done = subprocess.run([sys.executable, "-m", "pylime", *args], cwd=cwd,
                          env={**base, **(env or {})}, input=stdin, capture_output=True,
                          timeout=timeout, check=False)
    return Result(done.returncode, done.stdout.decode("utf-8", "replace"),
                  done.stderr.decode("utf-8", "replace"), done.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """A runner of ``python -m pylime`` in the test's temporary directory."""

    def run(*args: str, env: Mapping[str, str] | None = None, stdin: bytes = b"",
            timeout: float = 60) -> Result:
        return run_cli(list(args), cwd=tmp_path, env=env, stdin=stdin, timeout=timeout)

    return run
