"""HTTP limits under abuse (issue 17): head size, head deadlines, idle and keep-alive timeouts,
connections per client address, and a legitimate client's latency while an attack runs.

The limits live below the application (pylime.keyserver.http_guard), so they do not depend on
the storage backend: most tests run on SQLite; the cheap header-size one on PostgreSQL too.
Attackers connect from 127.0.0.2 so that the per-address cap never touches the legitimate
client on 127.0.0.1. Deadlines are 1-2 s here, so a loaded machine cannot blur what is cut
off and what is not.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from ks_servers import make_server
from ks_wire import hdr

from pylime.keyserver import http_guard
from pylime.keyserver.app import HttpLimits, ServerConfig
from pylime.keyserver.auth import make_account
from pylime.keyserver.service import ServerThread
from pylime.transport import HttpsTransport

REALM = "example.org"
ALICE = "sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000a"
ATTACKER = "127.0.0.2"  # Linux routes all of 127/8 to loopback
SMALL = HttpLimits(
    max_header_bytes=16 * 1024,
    request_line_timeout=1.0,
    header_timeout=2.0,
    idle_timeout=1.5,
    keep_alive_timeout=1.0,
    max_connections_per_address=64,
)

PROTOCOLS = ["httptools", "h11"]


class Served:
    """A key server (account alice) on 127.0.0.1 and raw sockets to it."""

    def __init__(self, thread: ServerThread, cert: Path | None) -> None:
        self.thread = thread
        self.cert = cert
        self.address = (thread.host, thread.port)

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A connected socket (TLS when the server speaks it) from ``source``."""
        sock = socket.create_connection(self.address, timeout=10, source_address=(source, 0))
        if self.cert is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.cert))
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    def transport(self) -> HttpsTransport:
        return HttpsTransport(ca_file=self.cert, username="alice", password="alice-pw", timeout=10)

    def authorization(self) -> str:
        """A valid Digest Authorization for POST /lime-server (from a real 401 challenge)."""
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.cert)) if self.cert else False
        )
        with httpx.Client(verify=verify, timeout=10) as client:
            request = client.build_request("POST", self.thread.url, content=b"")
            flow = httpx.DigestAuth("alice", "alice-pw").sync_auth_flow(request)
            first = next(flow)
            challenge = client.send(first)
            assert challenge.status_code == 401
            return flow.send(challenge).headers["authorization"]


@contextmanager
def _serve(
    tmp_path: Path,
    limits: HttpLimits,
    *,
    backend: str = "sqlite-file",
    tls: tuple[Path, Path] | None = None,
) -> Iterator[Served]:
    server = make_server(backend, tmp_path)
    server.storage.put_account(make_account("alice", REALM, "alice-pw"))
    # The rate limit (its own tests: test_keyserver_state.py) off: the latency probes here send
    # hundreds of requests a second from one account.
    config = ServerConfig(realm=REALM, http=limits, rate_limit=0)
    cert, key = tls if tls else (None, None)
    try:
        with ServerThread(config, server=server, cert=cert, key=key) as thread:
            yield Served(thread, cert)
    finally:
        server.close()


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each HTTP parser uvicorn can use: the guard wraps both."""
    cls = http_guard.GuardedHttpTools if request.param == "httptools" else http_guard.GuardedH11
    if cls is None:
        pytest.skip("httptools is not installed")
    monkeypatch.setattr(http_guard, "GuardedProtocol", cls)
    return str(request.param)


@pytest.fixture
def served(protocol: str, tmp_path: Path) -> Iterator[Served]:
    """Plain HTTP with the small test limits, on each parser."""
    with _serve(tmp_path, SMALL) as s:
        yield s


def _head(extra: bytes = b"", body: bytes = b"") -> bytes:
    return (
        b"POST /lime-server HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: x3dh/octet-stream\r\nFrom: " + ALICE.encode() + b"\r\n" + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send what the server lets us send (it may refuse and close half-way)."""
    try:
        sock.sendall(data)
    except OSError:
        pass


class _Responses:
    """Reads responses one by one from a socket (pipelined ones may share a segment)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            chunk = b""
        self.buffer += chunk
        return bool(chunk)

    def next(self) -> tuple[int, bytes]:
        """(status, head) of the next response; 0 if the server closed without answering."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                return 0, self.buffer
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length and self._more():
            pass
        self.buffer = self.buffer[length:]
        return int(head.split(b" ")[1]), head


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, head) of the one response expected on ``sock``."""
    return _Responses(sock).next()


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping any answer)."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return float("inf")
    return time.monotonic() - start


# ------------------------------------------------------------------ header size


@pytest.mark.parametrize("with_auth", [False, True], ids=["no-auth", "valid-auth"])
@pytest.mark.parametrize("backend", ["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_8mib_header_is_refused_with_431_over_tls(
    backend: str, with_auth: bool, tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    """An 8 MiB header gets 431 and a close, with or without valid credentials; the server
    keeps serving (HTTPS, the default service)."""
    with _serve(tmp_path, SMALL, backend=backend, tls=tls_files) as served:
        auth = b"Authorization: " + served.authorization().encode() + b"\r\n" if with_auth else b""
        with served.connect() as sock:
            start = time.monotonic()
            _send_all(sock, _head(auth + b"X-Big: " + b"a" * (8 << 20) + b"\r\n", hdr(0x07, 1)))
            status, _ = _read_response(sock)
            assert status == 431
            assert _closed_after(sock, 10) < 10
        assert time.monotonic() - start < 8
        with served.transport() as t:
            assert t.post(served.thread.url, ALICE, hdr(0x07, 1))[0] == 200


def test_200kb_authorization_is_refused(served: Served) -> None:
    """A 200 KB Authorization header gets 431 before any digest work."""
    with served.connect() as sock:
        _send_all(sock, _head(b'Authorization: Digest username="' + b"a" * 200_000 + b'"\r\n'))
        assert _read_response(sock)[0] == 431


def test_head_just_under_the_limit_is_served(served: Served) -> None:
    """A head under max_header_bytes is served as usual (here: challenged with 401)."""
    with served.connect() as sock:
        _send_all(sock, _head(b"X-Pad: " + b"p" * (15 * 1024) + b"\r\n", hdr(0x07, 1)))
        assert _read_response(sock)[0] == 401


def test_overlong_request_line_gets_414(served: Served) -> None:
    """A request line alone over the limit gets 414 URI Too Long."""
    with served.connect() as sock:
        _send_all(sock, b"POST /" + b"u" * (64 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 414


def test_pipelined_requests_are_all_answered(served: Served) -> None:
    """Two requests in one segment get two answers in order: the head tracking follows them."""
    with served.connect() as sock:
        sock.sendall(_head(body=hdr(0x07, 1)) + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = _Responses(sock)
        assert responses.next()[0] == 401
        assert responses.next()[0] == 200


# ------------------------------------------------------------------ deadlines and timeouts


def _trickle(sock: socket.socket, head: bytes, slow: bytes) -> tuple[int, float]:
    """Send ``head`` at once, then ``slow`` a byte every 0.2 s until the server answers:
    the answer's status (0 if none) and the seconds from the first byte to it."""
    start = time.monotonic()
    sock.sendall(head)
    status = 0
    for byte in slow:
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        sock.settimeout(0.2)
        try:
            status = int(sock.recv(100).split(b" ")[1])
            break
        except TimeoutError:
            continue
    return status, time.monotonic() - start


def test_request_line_trickled_is_cut_off_with_408(served: Served) -> None:
    """One byte of request line every 0.2 s: 408 at request_line_timeout (1 s)."""
    with served.connect(ATTACKER) as sock:
        status, elapsed = _trickle(sock, b"", b"POST /lime-server HTTP/1.1\r\n")
    assert status == 408
    assert SMALL.request_line_timeout - 0.1 < elapsed < SMALL.request_line_timeout + 1.0


def test_header_trickled_is_cut_off_at_the_header_deadline(served: Served) -> None:
    """A quick request line, then a header byte every 0.2 s: 408 at header_timeout (2 s)."""
    with served.connect(ATTACKER) as sock:
        status, elapsed = _trickle(sock, b"POST /lime-server HTTP/1.1\r\n", b"X-Slow: " + b"s" * 100)
    assert status == 408
    assert SMALL.header_timeout - 0.1 < elapsed < SMALL.header_timeout + 1.0


def test_silent_connection_is_closed_after_idle_timeout(served: Served) -> None:
    """A connection that never sends a byte is closed at idle_timeout (1.5 s), not before."""
    with served.connect(ATTACKER) as sock:
        elapsed = _closed_after(sock, 10)
    assert SMALL.idle_timeout - 0.1 < elapsed < SMALL.idle_timeout + 1.0


def test_idle_keep_alive_connection_is_closed_after_its_timeout(served: Served) -> None:
    """After a response, an idle kept-alive connection is closed at keep_alive_timeout (1 s)."""
    with served.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200
        elapsed = _closed_after(sock, 10)
    assert SMALL.keep_alive_timeout - 0.1 < elapsed < SMALL.keep_alive_timeout + 1.0


def test_kept_alive_connection_serves_requests_within_its_timeout(served: Served) -> None:
    """Requests spaced under the keep-alive timeout all go through one connection."""
    with served.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock)[0] == 200
            time.sleep(SMALL.keep_alive_timeout / 2)


# ------------------------------------------------------------------ connections per address


def test_connections_per_address_are_capped(protocol: str, tmp_path: Path) -> None:
    """Past the cap an address gets 503 and a close; other addresses are served; a closed
    connection frees its place."""
    limits = HttpLimits(max_connections_per_address=4, idle_timeout=30)
    with _serve(tmp_path, limits) as served:
        held = [served.connect(ATTACKER) for _ in range(4)]
        with served.connect(ATTACKER) as extra:
            status, head = _read_response(extra)
            assert status == 503 and b"retry-after" in head.lower()
        with served.transport() as t:  # 127.0.0.1 is another address
            assert t.post(served.thread.url, ALICE, hdr(0x07, 1))[0] == 200
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the server sees the close a moment later
            with served.connect(ATTACKER) as again:
                again.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _ = _read_response(again)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200
        for sock in held:
            sock.close()


def test_no_cap_when_set_to_zero(tmp_path: Path) -> None:
    """max_connections_per_address=0 (behind a reverse proxy) caps nothing."""
    with _serve(tmp_path, HttpLimits(max_connections_per_address=0, idle_timeout=30)) as served:
        held = [served.connect(ATTACKER) for _ in range(80)]
        with served.connect(ATTACKER) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock)[0] == 200
        for s in held:
            s.close()


# ------------------------------------------------------------------ latency under attack


class _SlowHeaderAttack:
    """``n`` connections from 127.0.0.2 trickling a head one byte every ``gap`` seconds,
    reconnecting when cut off, in one thread (so the attacker hardly competes for the CPU).
    Even connections trickle from the request line on; odd ones send the request line at once
    and trickle headers."""

    LINE = b"POST /lime-server HTTP/1.1\r\n"
    HEADERS = b"Host: x\r\nX-Slow: " + b"s" * 10_000

    def __init__(self, served: Served, n: int, gap: float) -> None:
        self.served, self.n, self.gap = served, n, gap
        self.cutoffs: dict[str, list[float]] = {"line": [], "header": []}  # connect -> close
        self.statuses: list[int] = []
        self.active = threading.Event()  # cleared: the attacker closes its connections
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _SlowHeaderAttack:  # noqa: PYI034 (typing.Self needs 3.11)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _open(self, i: int) -> tuple[socket.socket, float, int]:
        sock = self.served.connect(ATTACKER)
        if i % 2:
            sock.sendall(self.LINE)
        sock.setblocking(False)
        return sock, time.monotonic(), 0

    def _step(self, conns: list[tuple[socket.socket, float, int]]) -> None:
        for i, (sock, start, sent) in enumerate(conns):
            try:
                answer = sock.recv(4096)
            except BlockingIOError:
                answer = None
            except OSError:
                answer = b""
            if answer is None:
                head = self.HEADERS if i % 2 else self.LINE + self.HEADERS
                try:
                    sock.send(head[sent : sent + 1])
                    conns[i] = (sock, start, sent + 1)
                    continue
                except BlockingIOError:
                    continue
                except OSError:
                    answer = b""
            self.cutoffs["header" if i % 2 else "line"].append(time.monotonic() - start)
            self.statuses.append(int(answer.split(b" ")[1]) if answer[:5] == b"HTTP/" else 0)
            sock.close()
            conns[i] = self._open(i)

    def _run(self) -> None:
        conns: list[tuple[socket.socket, float, int]] = []
        while not self._stop.is_set():
            if self.active.is_set() and not conns:
                conns = [self._open(i) for i in range(self.n)]
            elif not self.active.is_set() and conns:
                for sock, _, _ in conns:
                    sock.close()
                conns = []
            self._stop.wait(self.gap) if conns else self.active.wait(self.gap)
            if conns:
                self._step(conns)
        for sock, _, _ in conns:
            sock.close()


def _latencies(transport: HttpsTransport, url: str, seconds: float) -> list[float]:
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        assert transport.post(url, ALICE, hdr(0x07, 1))[0] == 200
        times.append(time.perf_counter() - start)
    return times


def test_slow_header_attack_is_cut_off_and_leaves_latency_flat(tmp_path: Path) -> None:
    """40 connections trickling their heads are all cut off with 408 at the request-line or
    header deadline, while an authenticated client's median latency stays within 2x of its
    idle median (idle and attack periods alternate, so the machine's load weighs on both)."""
    with (
        _serve(tmp_path, SMALL) as served,
        served.transport() as t,
        _SlowHeaderAttack(served, n=40, gap=0.25) as attack,
    ):
        url = served.thread.url
        t.post(url, ALICE, hdr(0x07, 1))  # the digest handshake, not timed
        idle: list[float] = []
        busy: list[float] = []
        for _ in range(16):  # short periods: a load burst elsewhere hits few of them
            idle += _latencies(t, url, 0.25)
            attack.active.set()
            time.sleep(0.1)  # its 40 connections are open
            busy += _latencies(t, url, 0.25)
            attack.active.clear()
            time.sleep(0.05)  # and closed again
        attack.active.set()
        deadline = time.monotonic() + 10  # each kind cut off at its deadline at least 10 times
        while min(map(len, attack.cutoffs.values())) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        attack.active.clear()
        assert attack.statuses and set(attack.statuses) == {408}
        # cut off at the deadline (counted from connect; the attacker polls every 0.25 s)
        line, header = attack.cutoffs["line"], attack.cutoffs["header"]
        assert len(line) >= 10 and max(line) < SMALL.request_line_timeout + 1.0
        assert len(header) >= 10 and SMALL.header_timeout - 0.1 < min(header)
        assert max(header) < SMALL.header_timeout + 1.0
        # a property, not a benchmark: the ratio of medians measured side by side
        idle_median, busy_median = statistics.median(idle), statistics.median(busy)
        print(f"idle {idle_median * 1e3:.2f} ms, attack {busy_median * 1e3:.2f} ms")
        assert busy_median <= 2 * idle_median, (
            f"median {busy_median * 1e3:.2f} ms under attack, {idle_median * 1e3:.2f} ms idle"
        )


# ------------------------------------------------------------------ configuration


def test_limits_have_documented_defaults_and_reject_nonsense() -> None:
    """The defaults docs/deploy.md lists; impossible values are refused; JSON keeps them."""
    d = HttpLimits()
    assert (d.max_header_bytes, d.request_line_timeout, d.header_timeout) == (16384, 5.0, 10.0)
    assert (d.idle_timeout, d.keep_alive_timeout, d.max_connections_per_address) == (10, 30, 64)
    for bad in ({"max_header_bytes": 10}, {"header_timeout": 0}, {"idle_timeout": -1},
                {"max_connections_per_address": -1}):
        with pytest.raises(ValueError):
            HttpLimits(**bad)  # type: ignore[arg-type]
    config = ServerConfig(realm=REALM, http=SMALL)
    assert ServerConfig.from_json(config.to_json()).http == SMALL


def test_serve_options_reach_the_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`pylime keyserver serve --header-timeout ...` configures the served HttpLimits."""
    from pylime.cli import main

    seen: list[ServerConfig] = []
    monkeypatch.setattr("pylime.keyserver.service.serve", lambda config, *a, **k: seen.append(config))
    args = [
        "keyserver", "serve", "--open", "--plain-http", "--db", str(tmp_path / "k.sqlite3"),
        "--max-header-bytes", "8192", "--request-line-timeout", "2", "--header-timeout", "3",
        "--idle-timeout", "4", "--keep-alive-timeout", "6", "--max-connections-per-address", "9",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen[0].http == HttpLimits(8192, 2.0, 3.0, 4.0, 6.0, 9)
