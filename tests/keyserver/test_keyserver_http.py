"""The key server over real HTTPS on 127.0.0.1: status codes, digest auth, ownership, limits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ks_servers import make_server
from ks_wire import Device, error, get_bundles, hdr, u16, unknown_entry

from pylime.errors import TransportError
from pylime.keyserver import KeyServer
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.auth import make_account
from pylime.keyserver.protocol import PeerBundle, parse_response
from pylime.keyserver.service import ServerThread
from pylime.transport import AsyncHttpsTransport, HttpsTransport
from pylime.types import Curve

REALM = "example.org"
ALICE = "sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000a"
ALICE2 = "sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-0000000000a2"
BOB = "sip:bob@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000b"
CT = {"Content-Type": "x3dh/octet-stream"}


class Live:
    """A served key server plus helpers to talk to it."""

    def __init__(self, thread: ServerThread, server: KeyServer, cert: Path) -> None:
        self.thread = thread
        self.server = server
        self.cert = cert
        self.url = thread.url
        self._transports: list[HttpsTransport] = []

    def transport(self, user: str | None = None, password: str | None = None) -> HttpsTransport:
        if user is not None and password is None:
            password = f"{user}-pw"
        t = HttpsTransport(ca_file=self.cert, username=user, password=password, timeout=10)
        self._transports.append(t)
        return t

    def raw(self) -> httpx.Client:
        """A bare client (no auth) trusting the server's certificate."""
        import ssl

        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.cert)), timeout=10)

    def close(self) -> None:
        for t in self._transports:
            t.close()


def _serve(
    storage_backend: str, tmp_path: Path, tls: tuple[Path, Path], **config: object
) -> Iterator[Live]:
    server = make_server(storage_backend, tmp_path)
    for user in ("alice", "bob"):
        server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
    cfg = ServerConfig(realm=REALM, **config)  # type: ignore[arg-type]
    with ServerThread(cfg, server=server, cert=tls[0], key=tls[1]) as thread:
        live = Live(thread, server, tls[0])
        try:
            yield live
        finally:
            live.close()
    server.close()


@pytest.fixture
def live(served_backend: str, tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Live]:
    """A key server with digest auth (accounts alice and bob) over HTTPS."""
    yield from _serve(served_backend, tmp_path, tls_files)


@pytest.fixture
def live_sqlite(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Live]:
    """The same on SQLite only, for HTTP behaviour that does not depend on storage."""
    yield from _serve("sqlite-file", tmp_path, tls_files, max_body=4096)


# ------------------------------------------------------------------ plain HTTP behaviour


def test_health_endpoint(live_sqlite: Live) -> None:
    """GET /health answers 200 with a JSON status, without authentication."""
    with live_sqlite.raw() as c:
        r = c.get(live_sqlite.url.rsplit("/", 1)[0] + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_other_methods_get_405(live_sqlite: Live) -> None:
    """Anything but POST is answered 405 at once (upstream never answers)."""
    with live_sqlite.raw() as c:
        for method in ("GET", "PUT", "DELETE"):
            r = c.request(method, live_sqlite.url)
            assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_body_over_the_cap_gets_413(live_sqlite: Live) -> None:
    """A body over max_body is refused with 413 before authentication or parsing."""
    with live_sqlite.raw() as c:
        r = c.post(live_sqlite.url, content=b"\x01\x04\x01" + b"\x00" * 5000, headers=CT)
    assert r.status_code == 413


def test_unauthenticated_request_is_challenged(live_sqlite: Live) -> None:
    """A request without credentials gets 401 with SHA-256 and MD5 challenges; nothing changes."""
    with live_sqlite.raw() as c:
        r = c.post(
            live_sqlite.url,
            content=Device(ALICE, Curve.C25519).register(),
            headers={**CT, "From": ALICE},
        )
    assert r.status_code == 401
    challenges = r.headers.get_list("www-authenticate")
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
    assert all('realm="example.org"' in c and 'qop="auth"' in c for c in challenges)
    assert live_sqlite.server.opk_count(ALICE) == 0


def test_wrong_password_is_refused(live_sqlite: Live) -> None:
    """Wrong credentials get 401 and change nothing."""
    t = live_sqlite.transport("alice", "wrong")
    assert t.post(live_sqlite.url, ALICE, Device(ALICE, Curve.C25519).register())[0] == 401
    assert live_sqlite.server.opk_count(ALICE) == 0


def test_replayed_authorization_is_refused(live_sqlite: Live) -> None:
    """Resending a captured Authorization header (same nonce and nc) is refused with 401."""
    seen: list[httpx.Request] = []
    t = live_sqlite.transport("alice")
    t._client.event_hooks["request"].append(seen.append)
    assert t.post(live_sqlite.url, ALICE, hdr(0x07, 1))[0] == 200
    captured = seen[-1]
    assert "authorization" in captured.headers
    live_sqlite.server.handle(ALICE, Device(ALICE, Curve.C25519).register())
    with live_sqlite.raw() as c:
        replay = c.post(live_sqlite.url, content=hdr(0x02, 1), headers=dict(captured.headers))
    assert replay.status_code == 401
    assert live_sqlite.server.opk_count(ALICE) == 5


@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256",)])
def test_httpx_digest_interoperates(
    tmp_path: Path, tls_files: tuple[Path, Path], algorithms: tuple[str, ...]
) -> None:
    """httpx.DigestAuth (through HttpsTransport) authenticates with MD5 or SHA-256 alone."""
    for live in _serve("sqlite-file", tmp_path, tls_files, algorithms=algorithms):
        t = live.transport("alice")
        for _ in range(3):  # the later requests reuse the nonce with a growing nc
            assert t.post(live.url, ALICE, hdr(0x07, 1)) == (
                200,
                error(1, 6) + b"device not registered",
            )


def test_open_mode_needs_no_credentials(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """With open=True anybody may register and fetch, as on upstream's test server."""
    with (
        KeyServer() as server,
        ServerThread(
            ServerConfig(open=True), server=server, cert=tls_files[0], key=tls_files[1]
        ) as thread,
        HttpsTransport(ca_file=tls_files[0]) as t,
    ):
        assert t.post(thread.url, BOB, Device(BOB, Curve.C448).register()) == (200, hdr(9, 2))


# ------------------------------------------------------------------ authorisation


def test_owner_manages_own_devices(live: Live, curve: Curve) -> None:
    """An account registers, updates, lists and deletes any of its own devices."""
    t = live.transport("alice")
    for dev in (ALICE, ALICE2):
        d = Device(dev, curve)
        assert t.post(live.url, dev, d.register()) == (200, hdr(0x09, curve))
        assert t.post(live.url, dev, d.post_spk(1, 8)) == (200, hdr(0x03, curve))
        assert t.post(live.url, dev, d.post_opks([50])) == (200, hdr(0x04, curve))
        assert t.post(live.url, dev, hdr(0x07, curve))[1][:5] == hdr(0x08, curve) + u16(6)
    assert t.post(live.url, ALICE2, hdr(0x02, curve)) == (200, hdr(0x02, curve))
    assert live.server.opk_count(ALICE) == 6 and live.server.opk_count(ALICE2) == 0


def test_cross_account_changes_are_refused(live: Live, curve: Curve) -> None:
    """bob cannot delete alice's device, replace her SPk, add OPks or read her OPk ids."""
    alice = Device(ALICE, curve)
    assert live.transport("alice").post(live.url, ALICE, alice.register([1, 2])) == (
        200,
        hdr(0x09, curve),
    )
    bob = live.transport("bob")
    for body in (
        hdr(0x02, curve),
        alice.post_spk(9, 99),
        alice.post_opks([7]),
        hdr(0x07, curve),
        Device(ALICE, curve, seed=5).register(),
    ):
        status, _ = bob.post(live.url, ALICE, body)
        assert status == 403
    # Nothing changed: alice's original keys and both OPks are still served.
    for opk in (1, 2):
        expected = hdr(0x06, curve) + u16(1) + alice.bundle(opk)
        assert bob.post(live.url, BOB, get_bundles(curve, ALICE)) == (200, expected)


def test_any_account_fetches_bundles(live: Live, curve: Curve) -> None:
    """Fetching bundles needs an account but not ownership of the requested devices."""
    live.server.handle(ALICE, Device(ALICE, curve).register([3]))
    body = get_bundles(curve, ALICE, "sip:nobody@example.org;gr=x")
    expected = (
        hdr(0x06, curve)
        + u16(2)
        + Device(ALICE, curve).bundle(3)
        + unknown_entry("sip:nobody@example.org;gr=x")
    )
    assert live.transport("bob").post(live.url, BOB, body) == (200, expected)
    with live.raw() as c:
        assert c.post(live.url, content=body, headers={**CT, "From": BOB}).status_code == 401


def test_identity_header_wins_over_from(live_sqlite: Live) -> None:
    """X-Lime-user-identity is the device id when present; From is the fallback."""
    t = live_sqlite.transport("alice")
    d = Device(ALICE, Curve.C25519)
    r = t._client.post(
        live_sqlite.url,
        content=d.register(),
        headers={**CT, "From": BOB, "X-Lime-user-identity": ALICE},
    )
    assert (r.status_code, r.content) == (200, hdr(0x09, 1))
    r = t._client.post(live_sqlite.url, content=hdr(0x07, 1), headers={**CT, "From": ALICE})
    assert r.status_code == 200 and r.content[:3] == hdr(0x08, 1)


# ------------------------------------------------------------------ protocol over HTTP


def test_both_curves_on_one_port(live: Live) -> None:
    """One server answers curve25519 and curve448 requests on the same URL."""
    t = live.transport("alice")
    assert t.post(live.url, ALICE, Device(ALICE, Curve.C25519).register()) == (200, hdr(9, 1))
    assert t.post(live.url, ALICE, Device(ALICE, Curve.C448).register()) == (200, hdr(9, 2))
    assert live.server.opk_count(ALICE) == 10


def test_upstream_killers_get_clean_answers(live: Live) -> None:
    """Each input that kills upstream's server gets a clean answer here, and it keeps serving."""
    t = live.transport("alice")
    c = t._client
    url = live.url
    # wrong content type
    r = c.post(url, content=hdr(0x07, 1), headers={"Content-Type": "text/plain", "From": ALICE})
    assert r.status_code == 200 and r.content[:4] == error(1, 0x00)
    # no identity header
    r = c.post(url, content=hdr(0x07, 1), headers=CT)
    assert r.status_code == 200 and r.content[:4] == error(1, 0x02)
    # body under 3 bytes
    assert t.post(url, ALICE, b"\x01\x07")[1][:4] == error(0, 0x04)
    # bundle request for 0 ids, and for fewer ids than announced
    assert t.post(url, ALICE, hdr(0x05, 1) + u16(0))[1][:4] == error(1, 0x08)
    assert t.post(url, ALICE, get_bundles(1, BOB)[:3] + u16(2) + get_bundles(1, BOB)[5:])[1][
        :4
    ] == error(1, 0x04)
    # register with 0 OPks: answered (upstream hangs and blocks every later request)
    assert t.post(url, ALICE, Device(ALICE, Curve.C25519).register([])) == (200, hdr(9, 1))
    assert t.post(url, ALICE, hdr(0x07, 1)) == (200, hdr(0x08, 1) + u16(0))


def test_sixteen_clients_share_100_opks_exactly_once(live: Live) -> None:
    """16 concurrent HTTPS clients fetching one device's bundle get its 100 OPks exactly once."""
    live.server.handle(ALICE, Device(ALICE, Curve.C25519).register(range(100)))
    transports = [live.transport("bob") for _ in range(16)]
    barrier = threading.Barrier(16)
    handed: list[int] = []
    flag0 = [0]
    lock = threading.Lock()
    failures: list[BaseException] = []

    def fetch(t: HttpsTransport) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(8):  # 128 fetches for 100 OPks
                status, body = t.post(live.url, BOB, get_bundles(1, ALICE))
                assert status == 200
                answer = parse_response(body)
                assert isinstance(answer, PeerBundle)
                with lock:
                    if answer.bundles[0].opk is None:
                        flag0[0] += 1
                    else:
                        handed.append(answer.bundles[0].opk.id)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            failures.append(exc)

    threads = [threading.Thread(target=fetch, args=(t,)) for t in transports]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not failures
    assert sorted(handed) == list(range(100)) and flag0[0] == 28
    assert live.server.opk_count(ALICE) == 0


# ------------------------------------------------------------------ client transport


def test_unreachable_server_raises_transport_error(tls_files: tuple[Path, Path]) -> None:
    """A refused connection raises TransportError chained to httpx's exception."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with (
        HttpsTransport(ca_file=tls_files[0], timeout=2) as t,
        pytest.raises(TransportError) as info,
    ):
        t.post(f"https://127.0.0.1:{port}/", ALICE, hdr(0x07, 1))
    assert isinstance(info.value.__cause__, httpx.HTTPError)


def test_untrusted_certificate_raises_transport_error(live_sqlite: Live) -> None:
    """Without the pinned CA, the self-signed server is not trusted: TransportError."""
    with HttpsTransport(timeout=5) as t, pytest.raises(TransportError):
        t.post(live_sqlite.url, ALICE, hdr(0x07, 1))


def test_transport_repr_hides_password() -> None:
    """The transport's repr names the user but never the password."""
    t = HttpsTransport(username="alice", password="s3cret")
    assert "s3cret" not in repr(t) and "alice" in repr(t)
    t.close()


def test_async_transport_round_trip(live_sqlite: Live) -> None:
    """AsyncHttpsTransport posts with digest auth and returns (status, body)."""

    async def run() -> list[tuple[int, bytes]]:
        async with AsyncHttpsTransport(live_sqlite.cert, "alice", "alice-pw") as t:
            first = await t.post(live_sqlite.url, ALICE, Device(ALICE, Curve.C448).register())
            second = await t.post(live_sqlite.url, ALICE, hdr(0x07, 2))
            return [first, second]

    first, second = asyncio.run(run())
    assert first == (200, hdr(9, 2)) and second[1][:3] == hdr(8, 2)


def test_trickling_body_gets_408(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """A client that announces a body and never sends it is answered 408, not waited on."""
    import socket
    import ssl

    with (
        KeyServer() as server,
        ServerThread(
            ServerConfig(open=True, body_timeout=0.5),
            server=server,
            cert=tls_files[0],
            key=tls_files[1],
        ) as thread,
    ):
        ctx = ssl.create_default_context(cafile=str(tls_files[0]))
        with (
            socket.create_connection(("127.0.0.1", thread.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(
                b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: x3dh/octet-stream\r\n"
                b"Content-Length: 100\r\n\r\n\x01\x05"
            )
            assert tls.recv(100).startswith(b"HTTP/1.1 408")


def test_logs_carry_no_secret(live_sqlite: Live, caplog: pytest.LogCaptureFixture) -> None:
    """Auth failures, refusals and normal traffic log no password, HA1 or key bytes."""
    import logging

    caplog.set_level(logging.DEBUG, logger="pylime")
    d = Device(ALICE, Curve.C25519)
    live_sqlite.transport("alice", "Wr0ngPassw0rd").post(live_sqlite.url, ALICE, d.register())
    alice = live_sqlite.transport("alice")
    alice.post(live_sqlite.url, ALICE, d.register())
    live_sqlite.transport("bob").post(live_sqlite.url, ALICE, hdr(0x02, 1))
    alice.post(live_sqlite.url, ALICE, get_bundles(1, ALICE))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in text  # the failures were logged...
    account = make_account("alice", REALM, "alice-pw")
    for secret in ("Wr0ngPassw0rd", "alice-pw", "bob-pw", account.ha1_md5, account.ha1_sha256):
        assert secret not in text  # ...without secrets
    assert d.ik.hex()[:16] not in text and repr(d.ik)[2:20] not in text


def test_non_ascii_device_id_travels_as_utf8(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """A device id with non-ASCII characters reaches the server intact, in both headers."""
    dev = "sip:zoë@example.org;gr=urn:uuid:1"
    with (
        KeyServer() as server,
        ServerThread(
            ServerConfig(open=True), server=server, cert=tls_files[0], key=tls_files[1]
        ) as thread,
        HttpsTransport(ca_file=tls_files[0]) as t,
    ):
        assert t.post(thread.url, dev, Device(dev, Curve.C25519).register()) == (200, hdr(9, 1))
        assert server.opk_count(dev) == 5


def test_rate_limit_answers_429(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """Over the per-account rate, requests get 429 with Retry-After and change nothing."""
    for live in _serve("sqlite-file", tmp_path, tls_files, rate_limit=2.0, rate_burst=4):
        t = live.transport("alice")
        statuses = [t.post(live.url, ALICE, hdr(0x07, 1))[0] for _ in range(8)]
        assert statuses[:4] == [200] * 4 and 429 in statuses[4:]
        # another account has its own budget
        assert live.transport("bob").post(live.url, BOB, hdr(0x07, 1))[0] == 200


def test_rate_limiter_refills() -> None:
    """A bucket holds twice the rate by default and refills at the rate."""
    from pylime.keyserver.state import MemoryRateLimiter

    now = [0.0]
    limiter = MemoryRateLimiter(5.0, clock=lambda: now[0])
    assert [limiter.wait("a") for _ in range(10)] == [0.0] * 10
    assert limiter.wait("a") == pytest.approx(0.2)
    now[0] += 0.2
    assert limiter.wait("a") == 0.0
    assert limiter.wait("b") == 0.0


def test_async_transport_concurrent_posts(live_sqlite: Live) -> None:
    """Concurrent posts on one AsyncHttpsTransport all get through digest authentication."""
    live_sqlite.server.handle(ALICE, Device(ALICE, Curve.C25519).register(range(50)))

    async def run() -> list[tuple[int, bytes]]:
        async with AsyncHttpsTransport(live_sqlite.cert, "bob", "bob-pw") as t:
            await t.post(live_sqlite.url, BOB, hdr(0x07, 1))  # first challenge
            return list(
                await asyncio.gather(
                    *(t.post(live_sqlite.url, BOB, get_bundles(1, ALICE)) for _ in range(20))
                )
            )

    answers = asyncio.run(run())
    assert [status for status, _ in answers] == [200] * 20
    ids = set()
    for _, body in answers:
        bundle = parse_response(body)
        assert isinstance(bundle, PeerBundle) and bundle.bundles[0].opk is not None
        ids.add(bundle.bundles[0].opk.id)
    assert len(ids) == 20


# ------------------------------------------------------------------ abuse limits (issue 17)


@pytest.mark.parametrize(
    "odd", ["sip:alice:x@bob@example.org", "sip:bob@alice@example.org", "<sip:alice@example.org>"]
)
def test_odd_device_ids_are_refused_for_every_account(live: Live, odd: str) -> None:
    """An id of odd shape is nobody's: neither alice nor bob can register it (0x02), nothing is
    stored, and a bundle request for it answers unknown."""
    d = Device(odd, Curve.C25519)
    for user in ("alice", "bob"):
        status, body = live.transport(user).post(live.url, odd, d.register())
        assert status == 200 and body[:4] == error(1, 0x02)
    assert live.server.opk_count(odd) == 0
    answer = live.transport("bob").post(live.url, BOB, get_bundles(1, odd))
    assert answer == (200, hdr(0x06, 1) + u16(1) + unknown_entry(odd))


def test_opk_budget_is_charged_to_the_authenticated_account(
    served_backend: str, tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    """Over HTTPS the account pays for its OPks, whichever of its devices asks."""
    with make_server(served_backend, tmp_path, opk_budget=2) as server:
        for user in ("alice", "bob"):
            server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
        bob_device = Device(BOB, Curve.C25519)
        server.handle(BOB, bob_device.register(range(1, 11)))
        with (
            ServerThread(
                ServerConfig(realm=REALM), server=server, cert=tls_files[0], key=tls_files[1]
            ) as thread,
            HttpsTransport(
                ca_file=tls_files[0], username="alice", password="alice-pw", timeout=10
            ) as alice,
            HttpsTransport(
                ca_file=tls_files[0], username="bob", password="bob-pw", timeout=10
            ) as bob,
        ):
            got = []
            for sender in (ALICE, ALICE2, ALICE):
                status, body = alice.post(thread.url, sender, get_bundles(1, BOB))
                parsed = parse_response(body)
                assert status == 200 and isinstance(parsed, PeerBundle)
                got.append(parsed.bundles[0].opk is not None)
            assert got == [True, True, False]
            status, body = bob.post(thread.url, BOB, get_bundles(1, BOB))
            parsed = parse_response(body)
            assert isinstance(parsed, PeerBundle) and parsed.bundles[0].opk is not None
        assert server.opk_count(BOB) == 7
