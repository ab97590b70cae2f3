"""Running the key server: as the ``serve`` command (uvicorn, workers) or in a thread (tests).

uvicorn gives us HTTP/1.1 keep-alive, TLS, worker processes and graceful shutdown: on
SIGINT/SIGTERM it stops accepting, lets in-flight requests finish (up to
``graceful_timeout`` seconds), then runs the app's shutdown, which closes the database.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import uvicorn
from uvicorn.supervisors import Multiprocess

from pylime.keyserver.app import ENV_CONFIG, KeyServerApp, ServerConfig
from pylime.keyserver.core import KeyServer
from pylime.keyserver.http_guard import guarded_config
from pylime.keyserver.logs import log_config

__all__ = ["ServerThread", "serve"]

log = logging.getLogger("pylime.keyserver")


def _needs_shared_db(db: str) -> bool:
    return db in ("", ":memory:")


def serve(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 25519,
    *,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    workers: int = 1,
    log_level: str = "info",
    graceful_timeout: float = 10.0,
    log_format: str = "text",
    metrics_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Serve until interrupted. Without ``tls_cert`` the server speaks plain HTTP.

    Several workers need a database they can share (an SQLite file or PostgreSQL). With
    metrics on and several workers, the workers write their metrics into ``metrics_dir``
    (emptied first; a private temporary directory if None) and any worker's /metrics sums them.
    """
    if workers > 1 and _needs_shared_db(config.db):
        raise ValueError("--workers > 1 needs a shared database: an SQLite file or PostgreSQL")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("give both the TLS certificate and its key")
    if workers > 1 and config.shared_state == "auto":
        # Workers on one SQLite file must agree on nonces and rate buckets too.
        config = dataclasses.replace(config, shared_state="database")
    # Worker processes rebuild the app from this variable (see app_from_environment).
    os.environ[ENV_CONFIG] = config.to_json()
    cleanup = None
    if config.metrics and workers > 1:
        cleanup = _multiprocess_metrics(metrics_dir)
    try:
        _serve(config, host, port, tls_cert, tls_key, workers, log_level, graceful_timeout,
               log_format)
    finally:
        if cleanup is not None:
            cleanup()


def _multiprocess_metrics(directory: str | os.PathLike[str] | None) -> Callable[[], None]:
    """Point prometheus-client's multiprocess mode at an empty directory; return its cleanup."""
    if directory is None:
        path = Path(tempfile.mkdtemp(prefix="pylime-metrics-"))
        remove = True
    else:
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's counters must not be summed in
            stale.unlink()
        remove = False
    # Read by prometheus-client when a worker imports it (spawned workers inherit it).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)

    def cleanup() -> None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if remove:
            shutil.rmtree(path, ignore_errors=True)

    return cleanup


def _serve(
    config: ServerConfig,
    host: str,
    port: int,
    tls_cert: str | os.PathLike[str] | None,
    tls_key: str | os.PathLike[str] | None,
    workers: int,
    log_level: str,
    graceful_timeout: float,
    log_format: str,
) -> None:
    # The HTTP limits (header size and deadlines, idle and keep-alive timeouts, connections
    # per address) come from config.http through the guarded protocol (http_guard.py).
    uv_config = guarded_config(
        config.http,
        "pylime.keyserver.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=None if tls_cert is None else os.fspath(tls_cert),
        ssl_keyfile=None if tls_key is None else os.fspath(tls_key),
        log_level=log_level,
        log_config=log_config(log_level, log_format),
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(graceful_timeout),
    )
    if workers == 1:
        server = uvicorn.Server(uv_config)
        server.run()
        if not server.started:
            raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
        return
    # What uvicorn.run does for workers, plus TCP_NODELAY: uvicorn's own socket has proto 0,
    # so asyncio does not disable Nagle on accepted connections, and every response's body
    # segment then waits for the client's delayed ACK (about 40 ms per request). Linux copies
    # TCP_NODELAY from the listening socket to the sockets it accepts.
    sock = uv_config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.36
        Multiprocess(uv_config, target=uvicorn.Server(uv_config).run, sockets=[sock]).run()  # type: ignore[call-arg]
    else:
        Multiprocess(uv_config, sockets=[sock]).run()


class ServerThread:
    """A key server on 127.0.0.1 (port 0 by default) served by uvicorn in a background thread.

    ::

        with ServerThread(ServerConfig(open=True), cert=c, key=k) as s:
            HttpsTransport(ca_file=c).post(s.url, device, body)
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        server: KeyServer | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.app = KeyServerApp(config, server=server)
        self.host = host
        self.tls = cert is not None
        uv_config = guarded_config(
            config.http,
            self.app,
            host=host,
            port=port,
            ssl_certfile=None if cert is None else str(Path(cert)),
            ssl_keyfile=None if key is None else str(Path(key)),
            log_level=log_level,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._server.run, name="pylime-keyserver", daemon=True
        )
        self.port = 0

    @property
    def url(self) -> str:
        """The server's base URL (any path is served)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/lime-server"

    def start(self, timeout: float = 20.0) -> ServerThread:
        """Start serving; return once the socket listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the key server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Shut down gracefully and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:  # noqa: PYI034 (typing.Self needs 3.11)
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
