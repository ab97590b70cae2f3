"""Operating the key server: low-OPk report, probes, /metrics, log redaction (SQLite and PG)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from ks_blank import blank_database
from ks_servers import make_server
from ks_wire import Device, get_bundles
from prometheus_client.parser import text_string_to_metric_families

from pylime.cli import main
from pylime.keyserver import KeyServer, schema
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.auth import make_account
from pylime.keyserver.core import open_storage
from pylime.keyserver.logs import redact
from pylime.keyserver.service import ServerThread
from pylime.transport import HttpsTransport
from pylime.types import Curve

REALM = "example.org"


def dev(name: str, curve: Curve = Curve.C25519) -> Device:
    return Device(f"sip:{name}@{REALM};gr=urn:uuid:{name}", curve)


def register(server: KeyServer, device: Device, opks: int) -> None:
    answer = server.handle(device.device_id, device.register(range(1, opks + 1)))
    assert answer[1] == 0x09, answer  # registerUser acknowledged


# ---------------------------------------------------------------------------- report


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def stocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database whose devices hold 0, 3, 3 (curve448), 120 and 150 OPks."""
    with blank_database(str(request.param), tmp_path) as db:
        server = KeyServer(db, max_opks_per_device=200)
        for name, n, curve in [
            ("dry", 0, Curve.C25519),
            ("low", 3, Curve.C25519),
            ("low448", 3, Curve.C448),
            ("ok", 120, Curve.C25519),
            ("full", 150, Curve.C25519),
        ]:
            register(server, dev(name, curve), n)
        server.close()
        yield db


def test_low_opk_report_lists_the_driest_devices_first(stocked: str) -> None:
    """`report --low-opk 100 --json`: devices under 100 OPks, fewest first, with curve."""
    result = CliRunner().invoke(
        main, ["keyserver", "report", "--db", stocked, "--low-opk", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] and data["below"] == 100
    assert [
        (d["device"].split(":")[1].split("@")[0], d["curve"], d["opks"]) for d in data["devices"]
    ] == [
        ("dry", "c25519", 0),
        ("low448", "c448", 3),  # equal stocks: in device-id order
        ("low", "c25519", 3),
    ]


def test_report_for_people_and_its_limit(stocked: str) -> None:
    """The human form is a table, fewest first; --limit cuts it; nobody low says so."""
    result = CliRunner().invoke(main, ["keyserver", "report", "--db", stocked, "--limit", "2"])
    lines = result.output.splitlines()
    assert result.exit_code == 0 and lines[0].split() == ["OPks", "curve", "device"]
    assert [ln.split()[0] for ln in lines[1:]] == ["0", "3"]
    result = CliRunner().invoke(main, ["keyserver", "report", "--db", stocked, "--low-opk", "0"])
    assert result.output.strip() == "no device holds fewer than 0 OPks"


def test_stock_levels_count_devices_per_level(stocked: str) -> None:
    """opk_stock_levels, behind the /metrics histogram: devices per (curve, OPk count)."""
    storage = open_storage(stocked)
    assert storage.opk_stock_levels() == {(1, 0): 1, (1, 3): 1, (2, 3): 1, (1, 120): 1, (1, 150): 1}
    storage.close()


# ---------------------------------------------------------------------------- served


class Served:
    def __init__(self, thread: ServerThread, server: KeyServer, cert: Path) -> None:
        self.thread, self.server, self.cert = thread, server, cert
        self.base = thread.url.rsplit("/", 1)[0]

    def get(self, path: str) -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return httpx.get(self.base + path, verify=ctx, timeout=10)


def serve(backend: str, tmp_path: Path, tls: tuple[Path, Path], **cfg: object) -> Iterator[Served]:
    server = make_server(backend, tmp_path, max_opks_per_device=500)
    server.storage.put_account(make_account("alice", REALM, "alice-pw"))
    with ServerThread(
        ServerConfig(realm=REALM, **cfg), server=server, cert=tls[0], key=tls[1]
    ) as t:  # type: ignore[arg-type]
        yield Served(t, server, tls[0])
    server.close()


@pytest.fixture
def served(served_backend: str, tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Served]:
    yield from serve(served_backend, tmp_path, tls_files, metrics=True)


def test_liveness_and_readiness_are_distinct(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/healthz says the process answers; /readyz also needs the database at this code's
    schema: a database migrated ahead (here: code that expects version 2) is not ready."""
    assert served.get("/healthz").json() == {"status": "live"}
    ready = served.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "schema": schema.SCHEMA_VERSION}
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    ready = served.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "schema mismatch"
    assert served.get("/healthz").status_code == 200


def test_readiness_fails_when_the_database_is_gone(served: Served) -> None:
    """With its storage closed the server is live but not ready (nor is /health)."""
    served.server.storage.close()
    assert served.get("/healthz").status_code == 200
    assert served.get("/readyz").status_code == 503
    assert served.get("/health").status_code == 503


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = served.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_bundles_and_stock(served: Served, served_backend: str) -> None:
    """Requests by type and outcome, latency, bundles with/without OPk, OPk stock buckets."""
    alice = Device(f"sip:alice@{REALM};gr=urn:uuid:a", Curve.C25519)
    t = HttpsTransport(ca_file=served.cert, username="alice", password="alice-pw", timeout=10)
    url = served.thread.url
    assert t.post(url, alice.device_id, alice.register(range(1, 3)))[1][1] == 0x09
    for _ in range(3):  # 2 with an OPk, then one without
        t.post(url, alice.device_id, get_bundles(Curve.C25519, alice.device_id))
    t.post(url, alice.device_id, get_bundles(Curve.C25519, "sip:nobody@example.org;gr=x"))
    t.post(url, alice.device_id, b"\x01\x07")  # malformed: too short
    t.close()
    m = scrape(served)
    req = "pylime_keyserver_requests_total"
    assert m[(req, (("outcome", "ok"), ("type", "registerUser")))] == 1
    assert m[(req, (("outcome", "ok"), ("type", "getPeerBundle")))] == 4
    assert m[(req, (("outcome", "bad_size"), ("type", "malformed")))] == 1
    # The transport's first request of each connection is challenged (401) once.
    assert m[(req, (("outcome", "http_401"), ("type", "registerUser")))] == 1
    bundles = "pylime_keyserver_bundles_total"
    assert m[(bundles, (("opk", "with"),))] == 2
    assert m[(bundles, (("opk", "without"),))] == 1
    assert m[(bundles, (("opk", "unknown"),))] == 1
    hist = "pylime_keyserver_request_duration_seconds_count"
    assert m[(hist, (("type", "getPeerBundle"),))] == 4
    stock = "pylime_keyserver_device_opk_stock_bucket"
    assert m[(stock, (("curve", "c25519"), ("le", "0")))] == 1  # alice is out of OPks
    assert m[("pylime_keyserver_devices", (("curve", "c25519"),))] == 1
    if served_backend == "postgres":
        assert m[("pylime_keyserver_db_pool_connections", (("state", "open"),))] >= 1
    # Bounded cardinality: no label carries a device id.
    assert not any("sip:" in v for _, labels in m for _, v in labels)


def test_metrics_are_off_unless_asked(
    served_backend: str, tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    """Without ServerConfig.metrics, GET /metrics is not served."""
    for s in serve(served_backend, tmp_path, tls_files):
        assert s.get("/metrics").status_code == 405


def test_metrics_answer_only_allowed_networks(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """metrics_allow limits who may scrape: 127.0.0.1 outside it gets 403."""
    for s in serve("sqlite-file", tmp_path, tls_files, metrics=True, metrics_allow=("10.0.0.0/8",)):
        assert s.get("/metrics").status_code == 403
    with pytest.raises(ValueError):
        ServerConfig(realm=REALM, metrics_allow=("not-a-network",))


# ---------------------------------------------------------------------------- logs


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("cannot connect to postgresql://lime:S3cret@db:5432/lime", "S3cret"),
        ('Authorization: Digest username="a", response="abcdef0123"', "abcdef0123"),
        ('got response="feedface", cnonce="c0ffee", nc=00000001', "feedface"),
        ('got response="feedface", cnonce="c0ffee", nc=00000001', "c0ffee"),
        ("PYLIME_PASSWORD=hunter2 pylime keyserver account add", "hunter2"),
        ("password: 'correct horse'", "correct horse"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    """Every log line goes through redact: credentials in any form become ***."""
    assert secret not in redact(text) and "***" in redact(text)


def test_redact_keeps_what_operators_need() -> None:
    """Device ids, outcomes and URLs without passwords pass unchanged."""
    text = "registerUser sip:alice@example.org;gr=urn:uuid:1 (curve 1): created, postgresql://lime@db/x"
    assert redact(text) == text
