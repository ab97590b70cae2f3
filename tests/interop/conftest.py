"""Fixtures for the interop tests against Debian's liblinphone 5.1.65.

The tests that run liblinphone need the test-only packages ``liblinphone10`` and
``linphone-common`` (installed by scripts/test); without them they skip with that reason, and
the pure-Python checks still run. liblinphone only
ever runs in child processes (:class:`~tests.interop.harness.PeerProcess`); the SIP proxy and the
key server run here, on 127.0.0.1. Each test's exchanges are written as a JSON transcript to
``tests/interop/artifacts/`` (gitignored) and to its pytest tmp dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pylime.keyserver.app import ServerConfig
from pylime.keyserver.service import ServerThread
from pylime.keyserver.tls import generate_self_signed
from tests.interop.harness import ARTIFACTS, PeerProcess, RecordingKeyServer, Transcript
from tests.interop.liblinphone import LINPHONE_MISSING
from tests.interop.sipproxy import SipProxy

requires_linphone = pytest.mark.skipif(bool(LINPHONE_MISSING), reason=LINPHONE_MISSING or "present")
"""For tests that start liblinphone peers themselves; the ``peer`` fixture skips on its own."""


def pytest_configure(config: pytest.Config) -> None:
    """Our marker: ``lime_options({...})`` adds ``[lime]`` settings to the clients of a test."""
    config.addinivalue_line("markers", "lime_options(dict): [lime] rc settings for the interop clients")


@pytest.fixture
def transcript(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transcript]:
    """A transcript written, pass or fail, to the tmp dir and to tests/interop/artifacts/."""
    record = Transcript(request.node.name.replace("[", "-").replace("]", ""))
    yield record
    record.write(tmp_path)
    record.write(ARTIFACTS)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[PeerProcess]:
    """A child process for liblinphone cores, stopped after the test."""
    if LINPHONE_MISSING:
        pytest.skip(LINPHONE_MISSING)
    with PeerProcess(tmp_path / "peer") as child:
        yield child


@pytest.fixture
def proxy() -> Iterator[SipProxy]:
    """The registrar/GRUU proxy with an RTP relay on 127.0.0.1, domain ``localhost``."""
    with SipProxy("localhost", relay_media=True) as sip:
        yield sip


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key."""
    cert, key = tmp_path / "ks-cert.pem", tmp_path / "ks-key.pem"
    generate_self_signed(cert, key, ("localhost", "127.0.0.1"))
    return cert, key


@pytest.fixture
def keyserver(tmp_path: Path, tls_cert: tuple[Path, Path]) -> Iterator[tuple[RecordingKeyServer, ServerThread]]:
    """pylime's key server (SQLite file) behind its HTTPS service on 127.0.0.1, port 0."""
    server = RecordingKeyServer(tmp_path / "keys.sqlite3")
    try:
        with ServerThread(ServerConfig(open=True), server=server, cert=tls_cert[0], key=tls_cert[1]) as thread:
            yield server, thread
    finally:
        server.close()
