"""`serve --workers 2 --metrics --log-format json`: metrics summed over workers, logs free of secrets."""

from __future__ import annotations

import json
import ssl
import threading
from pathlib import Path

import httpx
import pytest
from ks_pg import fresh_pg_storage, require_pg_url
from ks_wire import Device, get_bundles
from prometheus_client.parser import text_string_to_metric_families
from test_keyserver_processes import start_server, stop_server

from pylime.keyserver import KeyServer
from pylime.keyserver.auth import make_account
from pylime.transport import HttpsTransport
from pylime.types import Curve

REALM = "example.org"
PASSWORD = "PLANTED-pw-7f3a9c"
DB_PASSWORD = "PLANTED-dbpw-41d2"
WRONG_PASSWORD = "PLANTED-wrong-88b1"
FAKE_RESPONSE = "0123456789abcdef0123456789abcdef"
FAKE_CNONCE = "PLANTEDcnonce5e6f"
BASIC = "UExBTlRFRC1iYXNpYy10b2tlbg=="
ALICE = Device(f"sip:alice@{REALM};gr=urn:uuid:00000000-0000-4000-8000-00000000000a", Curve.C25519)


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A shared database with alice's account and device (100 OPks); a PG URL with a password."""
    if request.param == "postgres":
        server = KeyServer(fresh_pg_storage())
        # The test cluster trusts loopback, so any password is accepted: one we can look for.
        url = require_pg_url().replace(
            "postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@"
        )
    else:
        url = str(tmp_path / "shared.sqlite3")
        server = KeyServer(url)
    server.storage.put_account(make_account("alice", REALM, PASSWORD))
    server.handle(ALICE.device_id, ALICE.register(range(100)))
    server.close()
    return url


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def test_two_workers_one_set_of_metrics_and_no_secret_in_the_logs(db: str, tmp_path: Path) -> None:
    """Requests spread over 2 worker processes are all counted by whichever worker is
    scraped; every log line is JSON and none holds the password, an HA1, the database
    password or a Digest response, even at debug level with refused credentials."""
    tls = tmp_path / "tls"
    proc, base = start_server(
        db,
        tls,
        "--workers",
        "2",
        "--metrics",
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--metrics-dir",
        str(tmp_path / "metrics"),
    )
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr

    def read() -> None:
        for raw in stream:
            lines.append(raw.decode("utf-8", "replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    cert = tls / "keyserver-cert.pem"
    ctx = ssl.create_default_context(cafile=str(cert))
    fetched = 0
    try:
        # New connections until the access log shows both workers answering fetches.
        for _ in range(60):
            with HttpsTransport(ca_file=cert, username="alice", password=PASSWORD) as t:
                for _ in range(2):
                    status, _ = t.post(
                        base + "/lime", ALICE.device_id, get_bundles(1, ALICE.device_id)
                    )
                    assert status == 200
                    fetched += 1
            pids = {
                json.loads(ln)["pid"]
                for ln in list(lines)
                if ln.startswith("{") and '"method": "POST"' in ln and '"status": 200' in ln
            }
            if len(pids) >= 2 and fetched >= 10:
                break
        assert len(pids) == 2, "the kernel never gave a connection to the second worker"
        # Refused credentials of every kind, which the server logs at info level.
        with HttpsTransport(ca_file=cert, username="alice", password=WRONG_PASSWORD) as t:
            t.post(base + "/lime", ALICE.device_id, get_bundles(1, ALICE.device_id))
        for auth in (
            (
                f'Digest username="alice", realm="{REALM}", nonce="x", uri="/lime", '
                f'response="{FAKE_RESPONSE}", cnonce="{FAKE_CNONCE}", nc=00000001, qop=auth'
            ),
            f"Basic {BASIC}",
        ):
            httpx.post(
                base + "/lime",
                headers={
                    "Authorization": auth,
                    "From": ALICE.device_id,
                    "Content-Type": "x3dh/octet-stream",
                },
                content=get_bundles(1, ALICE.device_id),
                verify=ctx,
                timeout=10,
            )
        # Any worker's scrape sums both workers' counters.
        for _ in range(6):
            text = httpx.get(base + "/metrics", verify=ctx, timeout=10).text
            ok = samples(text, "pylime_keyserver_requests_total")
            assert ok[(("outcome", "ok"), ("type", "getPeerBundle"))] == fetched
            with_opk = samples(text, "pylime_keyserver_bundles_total")[(("opk", "with"),)]
            assert with_opk == fetched
    finally:
        code = stop_server(proc)
        reader.join(timeout=10)
    assert code in (0, -15)

    ha1s = make_account("alice", REALM, PASSWORD)
    secrets = [
        PASSWORD,
        DB_PASSWORD,
        WRONG_PASSWORD,
        FAKE_RESPONSE,
        FAKE_CNONCE,
        BASIC,
        ha1s.ha1_md5,
        ha1s.ha1_sha256,
    ]
    joined = "".join(lines)
    assert "authentication refused" in joined  # the refusals were logged ...
    for secret in secrets:
        assert secret not in joined, secret  # ... without what was refused
    cli_lines = ("self-signed certificate", "  SHA-256 fingerprint", "key server on ")
    for line in lines:
        if not line.startswith(cli_lines):
            record = json.loads(line)  # every log line is one JSON object
            assert {"time", "level", "logger", "message", "pid"} <= set(record)
