"""Several server processes on one database: `pylime keyserver serve` as operators run it."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ks_pg import fresh_pg_storage
from ks_wire import Device, get_bundles, hdr

from pylime.keyserver import KeyServer
from pylime.keyserver.auth import make_account
from pylime.keyserver.protocol import PeerBundle, parse_response
from pylime.transport import HttpsTransport
from pylime.types import Curve

REALM = "example.org"
ALICE = "sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000a"
BOB = "sip:bob@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000b"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _wait_healthy(url: str, cert: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if cert.is_file():
                ctx = ssl.create_default_context(cafile=str(cert))
                if httpx.get(url + "/health", verify=ctx, timeout=1).status_code == 200:
                    return
        except (httpx.HTTPError, ssl.SSLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


# Runs `python -m pylime` in the child after asking the kernel for SIGTERM when the parent
# dies, so a killed run leaves no server behind (set in the child itself: no preexec_fn).
CHILD_OF_US = (
    "import ctypes, os, runpy, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() == 1: sys.exit(1)\n"
    "runpy.run_module('pylime', run_name='__main__', alter_sys=True)\n"
)


def start_server(db: str, tls_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m pylime keyserver serve` on a free port; returns (process, base URL)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_OF_US,
            "keyserver",
            "serve",
            "--port",
            str(port),
            "--db",
            db,
            "--realm",
            REALM,
            "--self-signed",
            "--tls-dir",
            str(tls_dir),
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_healthy(url, tls_dir / "keyserver-cert.pem", proc)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(proc.communicate(timeout=10)[1].decode(errors="replace")) from None
    return proc, url


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as a service manager would; returns the exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database name two server processes can share, with alice's and bob's accounts."""
    if request.param == "postgres":
        storage = fresh_pg_storage()
        from ks_pg import require_pg_url

        db = require_pg_url()
        server = KeyServer(storage)
    else:
        db = str(tmp_path / "shared.sqlite3")
        server = KeyServer(db)
    for user in ("alice", "bob"):
        server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
    server.handle(ALICE, Device(ALICE, Curve.C25519).register(range(100)))
    server.close()
    yield db


def test_two_server_processes_hand_out_each_opk_once(shared_db: str, tmp_path: Path) -> None:
    """16 clients spread over 2 server processes on one database get the 100 OPks exactly once."""
    tls = tmp_path / "tls"
    p1, url1 = start_server(shared_db, tls)
    try:
        p2, url2 = start_server(shared_db, tls)
    except BaseException:
        stop_server(p1)  # never leave the first one running
        raise
    cert = tls / "keyserver-cert.pem"
    handed: list[int] = []
    flag0 = [0]
    lock = threading.Lock()
    failures: list[BaseException] = []
    barrier = threading.Barrier(16)

    def fetch(url: str) -> None:
        try:
            with HttpsTransport(ca_file=cert, username="bob", password="bob-pw") as t:
                barrier.wait(timeout=20)
                for _ in range(8):
                    status, body = t.post(url + "/lime", BOB, get_bundles(1, ALICE))
                    assert status == 200, status
                    answer = parse_response(body)
                    assert isinstance(answer, PeerBundle)
                    with lock:
                        if answer.bundles[0].opk is None:
                            flag0[0] += 1
                        else:
                            handed.append(answer.bundles[0].opk.id)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            failures.append(exc)

    try:
        threads = [
            threading.Thread(target=fetch, args=(url1 if n % 2 else url2,)) for n in range(16)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=90)
    finally:
        codes = [stop_server(p1), stop_server(p2)]
    assert not failures, failures[:3]
    assert sorted(handed) == list(range(100)) and flag0[0] == 28
    # Graceful shutdown on SIGTERM; uvicorn re-raises the signal once done, hence -SIGTERM.
    assert set(codes) <= {0, -signal.SIGTERM}


def test_database_file_permissions_via_cli(tmp_path: Path) -> None:
    """`account add` creates the SQLite file owner-only and takes the password from the environment."""
    db = tmp_path / "k.sqlite3"
    env = {**os.environ, "PYLIME_PASSWORD": "s3cret-pw"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pylime",
            "keyserver",
            "account",
            "add",
            "carol@example.org",
            "--db",
            str(db),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "added carol@example.org" in out.stdout
    assert (db.stat().st_mode & 0o777) == 0o600
    listing = subprocess.run(
        [sys.executable, "-m", "pylime", "keyserver", "account", "list", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert listing.stdout == "carol@example.org\n"
    assert b"s3cret-pw" not in db.read_bytes()


# ------------------------------------------------------------------ N servers behave as one

SHARED_RATE, SHARED_BURST = 5, 30


@pytest.fixture
def two_servers(shared_db: str, tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    """Two `serve` processes on one database, sharing nonces and rate buckets: on PostgreSQL
    by default, on an SQLite file by choice (--shared-state database)."""
    tls = tmp_path / "tls"
    extra = ["--rate-limit", str(SHARED_RATE), "--rate-burst", str(SHARED_BURST)]
    if not shared_db.startswith("postgresql://"):
        extra += ["--shared-state", "database"]
    p1, url1 = start_server(shared_db, tls, *extra)
    try:
        p2, url2 = start_server(shared_db, tls, *extra)
    except BaseException:
        stop_server(p1)
        raise
    try:
        yield [url1, url2], tls / "keyserver-cert.pem"
    finally:
        stop_server(p1)
        stop_server(p2)


def _client(cert: Path, user: str, statuses: list[int]) -> httpx.Client:
    def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    return httpx.Client(
        verify=ssl.create_default_context(cafile=str(cert)),
        auth=httpx.DigestAuth(user, f"{user}-pw"),
        event_hooks={"response": [record]},
        timeout=10,
    )


def _post(client: httpx.Client, url: str, sender: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "x3dh/octet-stream", "X-Lime-user-identity": sender}
    return client.post(url + "/lime", content=body, headers=headers)


def test_client_alternating_between_servers_is_challenged_once(
    two_servers: tuple[list[str], Path],
) -> None:
    """A client alternating between two servers answers one challenge, on its first request:
    every later request, on either server, succeeds on the first try with the next nc."""
    urls, cert = two_servers
    statuses: list[int] = []
    with _client(cert, "bob", statuses) as client:
        for k in range(20):
            response = _post(client, urls[k % 2], BOB, get_bundles(1, ALICE))
            assert response.status_code == 200
            assert isinstance(parse_response(response.content), PeerBundle)
    assert statuses == [401] + [200] * 20


def test_request_replayed_to_the_other_server_is_refused(
    two_servers: tuple[list[str], Path],
) -> None:
    """An Authorization header accepted by one server is refused by the other, not as stale,
    and the replay takes no OPk."""
    urls, cert = two_servers
    statuses: list[int] = []
    with _client(cert, "bob", statuses) as client:
        accepted = _post(client, urls[0], BOB, get_bundles(1, ALICE))
        assert accepted.status_code == 200
        captured = dict(accepted.request.headers)
    ctx = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=ctx, timeout=10) as raw:
        for url in (urls[1], urls[0]):
            replay = raw.post(url + "/lime", content=get_bundles(1, ALICE), headers=captured)
            assert replay.status_code == 401
            assert "stale=true" not in replay.headers["www-authenticate"]
    with _client(cert, "bob", statuses) as client:
        answer = parse_response(_post(client, urls[1], BOB, get_bundles(1, ALICE)).content)
    assert isinstance(answer, PeerBundle) and answer.bundles[0].opk is not None
    assert answer.bundles[0].opk.id == 1  # only the accepted request took one (id 0)


def test_rate_limit_is_shared_between_servers(two_servers: tuple[list[str], Path]) -> None:
    """Requests spread over two servers get one account's budget once, not twice."""
    urls, cert = two_servers
    statuses: list[int] = []
    start = time.monotonic()
    with _client(cert, "alice", statuses) as client:
        codes = [_post(client, urls[k % 2], ALICE, hdr(0x07, 1)).status_code for k in range(80)]
    elapsed = time.monotonic() - start
    allowed = codes.count(200)
    assert set(codes) == {200, 429}
    # One server's worth: the burst plus what refilled meanwhile (per-process buckets: twice).
    assert SHARED_BURST <= allowed <= SHARED_BURST + SHARED_RATE * elapsed + 1
    assert allowed < 2 * SHARED_BURST
