"""The key server as an ASGI application, and how to serve it with uvicorn.

HTTP rules (keyserver.md §4.5): X3DH requests are ``POST`` with ``x3dh/octet-stream`` on any
path; the device id comes from ``X-Lime-user-identity`` or else ``From``. Protocol errors are
X3DH error messages inside HTTP 200 (that is what lime reads); transport and authentication
failures are real HTTP statuses: 401 (with a Digest challenge), 403 (another account's
device), 405, 408 (body too slow), 413 (body over the cap), 429 (over the rate limit),
503 (database down). Below the app, :mod:`pylime.keyserver.http_guard` answers 408 (head
too slow), 414/431 (head too large) and 503 (too many connections from one address) under
:class:`HttpLimits`.

Probes, without authentication: ``GET /healthz`` (liveness: the process answers, nothing
else is checked), ``GET /readyz`` (readiness: the database answers and its schema is this
code's; ``/health`` is the same check under its older name). ``GET /metrics``: Prometheus
metrics when ``ServerConfig.metrics`` is on, to the client addresses of ``metrics_allow``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pylime.deviceid import is_canonical_device_id
from pylime.keyserver.auth import DigestAuthenticator
from pylime.keyserver.core import (
    DEFAULT_MAX_ACCOUNT_BYTES,
    DEFAULT_MAX_DEVICE_ID_LENGTH,
    DEFAULT_MAX_DEVICES_PER_ACCOUNT,
    DEFAULT_MAX_OPKS_PER_DEVICE,
    DEFAULT_OPK_BUDGET,
    DEFAULT_OPK_BUDGET_WINDOW,
    KeyServer,
)
from pylime.keyserver.protocol import (
    CONTENT_TYPE,
    ErrorCode,
    ErrorMessage,
    GetPeerBundle,
    X3DHParseError,
    parse_request,
)
from pylime.keyserver.state import (
    DEFAULT_MAX_NONCES_PER_ACCOUNT,
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    MemoryNonceBook,
    MemoryRateLimiter,
    RateLimiter,
    StoreNonceBook,
    StoreRateLimiter,
    nonce_secret,
)
from pylime.keyserver.storage import (
    Account,
    SQLiteStorage,
    Storage,
    StorageError,
)

if TYPE_CHECKING:
    from pylime.keyserver.metrics import Metrics

__all__ = [
    "ENV_CONFIG",
    "HttpLimits",
    "KeyServerApp",
    "RateLimiter",
    "ServerConfig",
    "app_from_environment",
]

log = logging.getLogger("pylime.keyserver.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Worker processes receive their configuration through this variable (uvicorn starts them
# from an import string, so there is no other way to hand them an object).
ENV_CONFIG = "PYLIME_KEYSERVER_CONFIG"

# 1 MiB: far above a registerUser with 200 curve448 OPks (12 KB) or a bundle request for
# thousands of devices, far below the 3.9 MB of a registerUser with 0xFFFF curve448 OPks.
DEFAULT_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may hold, enforced by :mod:`pylime.keyserver.http_guard`.

    Times are in seconds. A lime request's head is under 1 KiB (digest Authorization, the
    device id, content type), sent in one segment: the defaults leave room for slow mobile
    links and none for a client that trickles its head or hoards idle sockets.
    """

    max_header_bytes: int = 16 * 1024  # request line + headers; 431 (414: request line alone)
    request_line_timeout: float = 5.0  # from a request's first byte to its request line's end
    header_timeout: float = 10.0  # from a request's first byte to the end of its head (408)
    idle_timeout: float = 10.0  # a new connection's first byte must come within this
    keep_alive_timeout: float = 30.0  # an idle connection between requests is then closed
    max_connections_per_address: int = 64  # per process; 0 = no cap (503 past it)

    def __post_init__(self) -> None:
        if self.max_header_bytes < 256:
            raise ValueError("max_header_bytes must be at least 256")
        for name in ("request_line_timeout", "header_timeout", "idle_timeout",
                     "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections_per_address < 0:
            raise ValueError("max_connections_per_address must be 0 (no cap) or more")


@dataclass(frozen=True)
class ServerConfig:
    """Everything a key-server process needs; serialisable for worker processes.

    ``realm`` is required unless ``open`` is set (then nobody is authenticated).
    """

    db: str = field(default=":memory:", repr=False)  # a URL may hold a password
    realm: str | None = None
    open: bool = False
    max_body: int = DEFAULT_MAX_BODY
    max_opks_per_device: int = DEFAULT_MAX_OPKS_PER_DEVICE
    lifetime: float = 0.0
    nonce_lifetime: float = 300.0
    algorithms: tuple[str, ...] = field(default=("SHA-256", "MD5"))
    body_timeout: float = 30.0  # seconds to receive a whole body (a trickling client gets 408)
    # Requests per second allowed to one account (or, without authentication, one client
    # address), with bursts of rate_burst; 0 = no limit. Nonces and buckets live where
    # shared_state says: "database" (every process on it agrees), "memory" (this process),
    # or "auto": the database for PostgreSQL (and an SQLite file served by several workers).
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: float = DEFAULT_RATE_BURST
    shared_state: str = "auto"
    max_nonces_per_account: int = DEFAULT_MAX_NONCES_PER_ACCOUNT
    # A file holding the nonce-signing secret (else $PYLIME_KEYSERVER_SECRET, else one kept
    # in the shared database); used only with shared state. Never logged.
    nonce_secret_file: str | None = None
    # Operations: GET /metrics (off unless asked), answered only to these client networks.
    metrics: bool = False
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Abuse limits kept in the database (KeyServer; docs/deploy.md "Abuse limits").
    max_devices_per_account: int = DEFAULT_MAX_DEVICES_PER_ACCOUNT
    max_device_id_length: int = DEFAULT_MAX_DEVICE_ID_LENGTH
    max_account_bytes: int = DEFAULT_MAX_ACCOUNT_BYTES
    opk_budget: int = DEFAULT_OPK_BUDGET
    opk_budget_window: float = DEFAULT_OPK_BUDGET_WINDOW
    # HTTP limits per connection and client address (http_guard.py)
    http: HttpLimits = field(default_factory=HttpLimits)

    def __post_init__(self) -> None:
        if not self.open and not self.realm:
            raise ValueError("a realm (the SIP domain) is required unless the server is open")
        if self.max_body < 3:
            raise ValueError("max_body must be at least 3 bytes")
        for net in self.metrics_allow:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad one
        if self.shared_state not in ("auto", "memory", "database"):
            raise ValueError("shared_state is one of auto, memory, database")
        if self.rate_limit < 0 or self.rate_burst < 1 or self.max_nonces_per_account < 1:
            raise ValueError("rate_limit >= 0, rate_burst >= 1, max_nonces_per_account >= 1")

    def to_json(self) -> str:
        """The configuration as JSON (it may hold a database URL: keep it private)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        """The inverse of to_json."""
        data = json.loads(text)
        data["algorithms"] = tuple(data.get("algorithms", ("SHA-256", "MD5")))
        if "metrics_allow" in data:
            data["metrics_allow"] = tuple(data["metrics_allow"])
        data["http"] = HttpLimits(**data.get("http", {}))
        return cls(**data)


class _TooLarge(Exception):
    pass


class KeyServerApp:
    """ASGI 3 application serving one KeyServer (opened at startup, closed at shutdown).

    Args:
        config: the server settings.
        server: an already open KeyServer to serve instead of opening ``config.db``
            (tests); it is not closed at shutdown.
    """

    def __init__(self, config: ServerConfig, *, server: KeyServer | None = None) -> None:
        self.config = config
        self._server = server
        self._owns_server = server is None
        self._auth: DigestAuthenticator | None = None
        self._open_lock = asyncio.Lock()
        self._limiter: RateLimiter | None = None
        self._ready = False  # storage open, authenticator and limiter built
        self._metrics: Metrics | None = None
        self._metrics_allow = [ipaddress.ip_network(n, strict=False) for n in config.metrics_allow]
        self._sampler: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"KeyServerApp(open={self.config.open}, realm={self.config.realm!r})"

    @property
    def _inline(self) -> bool:
        """Run database work on the event loop itself: SQLite answers in microseconds from
        one serialised connection, so a thread hop would only add latency; a network
        database (PostgreSQL) gets worker threads instead."""
        return isinstance(self._server.storage if self._server else None, SQLiteStorage)

    # ---------------------------------------------------------------- lifecycle

    def _open_sync(self) -> None:
        if self.config.metrics and self._metrics is None:
            from pylime.keyserver.metrics import Metrics  # prometheus-client: only when used

            self._metrics = Metrics(lambda: self._server.storage if self._server else None)
        if self._server is None:
            self._server = KeyServer(
                self.config.db,
                max_opks_per_device=self.config.max_opks_per_device,
                max_devices_per_account=self.config.max_devices_per_account,
                max_device_id_length=self.config.max_device_id_length,
                max_account_bytes=self.config.max_account_bytes,
                opk_budget=self.config.opk_budget,
                opk_budget_window=self.config.opk_budget_window,
                lifetime=self.config.lifetime,
            )
        storage = self._server.storage
        shared = self.shares_state(storage)
        config = self.config
        if config.rate_limit > 0 and self._limiter is None:
            self._limiter = (
                StoreRateLimiter(storage, config.rate_limit, config.rate_burst)
                if shared
                else MemoryRateLimiter(config.rate_limit, config.rate_burst)
            )
        if not config.open and self._auth is None:
            assert config.realm is not None
            # In memory, a per-process key: a restart must not revive nonces it forgot.
            secret = nonce_secret(storage, config.nonce_secret_file) if shared else None
            book = (
                StoreNonceBook(storage, config.max_nonces_per_account)
                if shared
                else MemoryNonceBook(config.max_nonces_per_account)
            )
            self._auth = DigestAuthenticator(
                storage,
                config.realm,
                algorithms=config.algorithms,
                nonce_lifetime=config.nonce_lifetime,
                secret=secret,
                nonce_book=book,
            )
        self._ready = True

    def shares_state(self, storage: Storage) -> bool:
        """Whether nonces and rate buckets live in the database (see ServerConfig.shared_state)."""
        if self.config.shared_state != "auto":
            return self.config.shared_state == "database"
        return not isinstance(storage, SQLiteStorage)

    async def startup(self) -> None:
        """Open the storage (in this process: each worker has its own connections)."""
        async with self._open_lock:
            if not self._ready:
                await asyncio.to_thread(self._open_sync)
            if self._metrics is not None and self._sampler is None:
                self._sampler = asyncio.get_running_loop().create_task(self._sample_pool())

    async def _sample_pool(self) -> None:
        """Each second, copy this worker's database pool counters into the metrics."""
        while self._metrics is not None:
            try:
                self._metrics.sample_pool()
            except Exception:  # noqa: BLE001, S110 (closed pool during shutdown)
                pass
            await asyncio.sleep(1.0)

    async def shutdown(self) -> None:
        """Close the storage if we opened it."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self._metrics is not None:
            self._metrics.close()
        if self._owns_server and self._server is not None:
            server, self._server, self._auth = self._server, None, None
            self._limiter, self._ready = None, False
            await asyncio.to_thread(server.close)

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if self._metrics is not None and scope["method"] == "POST":
                await self._observed(scope, receive, send)
            else:
                await self._http(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one POST and count it in the metrics (type from the body, outcome from the answer)."""
        assert self._metrics is not None
        start = time.perf_counter()
        head = bytearray()
        status = [0]
        answer = [b""]

        async def receive_and_look() -> Message:
            message = await receive()
            if len(head) < 3 and message["type"] == "http.request":
                head.extend(message.get("body", b"")[: 3 - len(head)])
            return message

        async def send_and_look(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not answer[0]:
                answer[0] = message.get("body", b"")
            await send(message)

        from pylime.keyserver.metrics import request_type

        await self._http(scope, receive_and_look, send_and_look)
        self._metrics.observe(
            request_type(bytes(head)), status[0], answer[0], time.perf_counter() - start
        )

    async def _probe(self, path: str, scope: Scope, send: Send) -> bool:
        """Answer GET /healthz, /readyz (/health) and /metrics; False for any other path."""
        if path == "/healthz":
            await self._respond(send, 200, b'{"status":"live"}\n', "application/json")
            return True
        if path in ("/readyz", "/health"):
            if self._server is None or (not self.config.open and self._auth is None):
                try:
                    await self.startup()
                except Exception:  # noqa: BLE001, S110 (not ready: the database is not there)
                    pass
            status, body = await asyncio.to_thread(self._readiness)
            if path == "/health" and status == 200:
                body = b'{"status":"ok"}\n'  # the older probe's exact answer
            await self._respond(send, status, body, "application/json")
            return True
        if path == "/metrics" and self._metrics is not None:
            client = scope.get("client")
            try:
                allowed = client is not None and any(
                    ipaddress.ip_address(client[0]) in net for net in self._metrics_allow
                )
            except ValueError:
                allowed = False
            if not allowed:
                await self._respond(send, 403, b"metrics are not served to this address\n",
                                    "text/plain; charset=utf-8")
                return True
            from pylime.keyserver.metrics import CONTENT_TYPE_LATEST

            body = await asyncio.to_thread(self._metrics.exposition)
            await self._respond(send, 200, body, CONTENT_TYPE_LATEST)
            return True
        return False

    def _readiness(self) -> tuple[int, bytes]:
        """(status, JSON body): 200 when the database answers at this code's schema version."""
        from pylime.keyserver import schema

        server = self._server
        if server is None:
            return 503, b'{"status":"database unavailable"}\n'
        try:
            server.storage.ping()
            version = server.storage.schema_version()
        except Exception:  # noqa: BLE001 (any failure means not ready)
            return 503, b'{"status":"database unavailable"}\n'
        if version != schema.SCHEMA_VERSION:
            body = {"status": "schema mismatch", "schema": version, "expected": schema.SCHEMA_VERSION}
            return 503, (json.dumps(body) + "\n").encode()
        return 200, (json.dumps({"status": "ok", "schema": version}) + "\n").encode()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 (reported to the server, which exits)
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        body: bytes,
        content_type: str = CONTENT_TYPE,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.config.max_body
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        raise _TooLarge
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = scope.get("path", "/")
        text = "text/plain; charset=utf-8"
        if method in ("GET", "HEAD") and await self._probe(path, scope, send):
            return
        if not self._ready:
            await self.startup()  # served without a lifespan (some test harnesses)
        server = self._server
        assert server is not None
        if method != "POST":
            await self._respond(send, 405, b"POST only\n", text, [(b"allow", b"POST")])
            return
        try:
            body = await asyncio.wait_for(
                self._read_body(scope, receive), timeout=self.config.body_timeout
            )
        except asyncio.TimeoutError:  # noqa: UP041 (a distinct class on Python 3.10)
            await self._respond(
                send, 408, b"request body too slow\n", text, [(b"connection", b"close")]
            )
            return
        except _TooLarge:
            await self._respond(
                send, 413, b"request body too large\n", text, [(b"connection", b"close")]
            )
            return

        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), value)
        target = scope.get("raw_path") or path.encode("utf-8")
        uri = target.decode("latin-1")
        if scope.get("query_string"):
            uri += "?" + scope["query_string"].decode("latin-1")
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        raw_sender = headers.get(b"x-lime-user-identity") or headers.get(b"from")
        sender = raw_sender.decode("utf-8", "surrogateescape").strip() if raw_sender else None
        content_type = headers.get(b"content-type", b"").decode("latin-1") or None
        client = scope.get("client")
        peer = str(client[0]) if client else "?"
        args = (server, method, uri, authorization, sender, body, content_type, peer)
        if self._inline:
            status, answer, extra = self._process(*args)
        else:
            status, answer, extra = await asyncio.to_thread(self._process, *args)
        await self._respond(send, status, answer, CONTENT_TYPE if status == 200 else text, extra)

    def _process(
        self,
        server: KeyServer,
        method: str,
        uri: str,
        authorization: str | None,
        sender: str | None,
        body: bytes,
        content_type: str | None,
        peer: str = "?",
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Authenticate, parse, authorise and answer one request: (status, body, headers).

        Blocking (database work): runs inline for SQLite, in a worker thread otherwise.
        """
        account: Account | None = None
        if self._auth is not None:
            auth = self._auth
            try:
                result = auth.authenticate(method, uri, authorization)
            except StorageError as exc:
                log.error("authentication failed on a storage error: %s", exc)
                return 503, b"database unavailable\n", []
            if result.account is None:
                if authorization:  # a bare first request is the normal start of the handshake
                    log.info("authentication refused: %s", result.reason)
                challenge = [
                    (b"www-authenticate", c.encode()) for c in auth.challenge(result.stale)
                ]
                return 401, b"authentication required\n", challenge
            account = result.account
        if self._limiter is not None:
            who = f"{account.username}@{account.realm}" if account else f"address {peer}"
            try:
                wait = self._limiter.wait(who)
            except StorageError as exc:
                log.error("rate limit failed on a storage error: %s", exc)
                return 503, b"database unavailable\n", []
            if wait > 0:
                log.info("rate limit: %s", who)
                retry = str(max(1, int(wait + 0.999))).encode()
                return 429, b"too many requests\n", [(b"retry-after", retry)]
        if account is None or len(body) < 3:
            # Open mode, or nothing to authorise: the core answers everything, errors included.
            return 200, server.handle(sender, body, content_type), []
        curve = body[2]
        if content_type is None or content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
            return 200, server.handle(sender, body, content_type), []
        try:
            request = parse_request(body)
        except X3DHParseError as exc:
            return 200, ErrorMessage(exc.curve, exc.code, str(exc)).to_bytes(), []
        if not sender or not is_canonical_device_id(sender):
            error = ErrorMessage(curve, ErrorCode.MISSING_SENDER_ID, "no valid sender device id")
            return 200, error.to_bytes(), []
        # Fetching bundles needs any account; everything else acts on the sender's own keys.
        if not isinstance(request, GetPeerBundle) and not DigestAuthenticator.owns(account, sender):
            log.warning(
                "account %s@%s refused %s on device %s",
                account.username,
                account.realm,
                type(request).__name__,
                sender,
            )
            return 403, b"this account does not own that device\n", []
        # The account pays for the OPks its bundle requests take, whichever device asks.
        requester = f"{account.username}@{account.realm.lower()}"
        try:
            return 200, server.handle_request(sender, request, requester=requester).to_bytes(), []
        except Exception:  # a bug must not become a 500 that lime cannot read
            log.exception("internal error while answering a key-server request")
            error = ErrorMessage(curve, ErrorCode.SERVER_FAILURE, "internal error")
            return 200, error.to_bytes(), []


def app_from_environment() -> KeyServerApp:
    """The app configured by $PYLIME_KEYSERVER_CONFIG (uvicorn's factory for worker processes)."""
    return KeyServerApp(ServerConfig.from_json(os.environ[ENV_CONFIG]))
