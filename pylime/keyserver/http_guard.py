"""The HTTP limits uvicorn lacks, as a guard around its HTTP protocol (one object per connection).

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and, with h11, incomplete
heads (``h11_max_incomplete_event_size``, answered 400). It has no deadline for a request's
head, no timeout for a connection that never sends anything, no size limit at all with
httptools, and no cap per client address: a client trickling one header byte every few
seconds, or sending an 8 MiB header, holds a connection (and the memory) for as long as it
likes. :class:`GuardedHttpTools` and :class:`GuardedH11` add what :class:`HttpLimits` says:

- a new connection sends its first byte within ``idle_timeout``, else it is closed;
- a request line ends within ``request_line_timeout`` of the request's first byte, its head
  within ``header_timeout``; else 408 and close;
- a head (request line and headers) over ``max_header_bytes`` gets 414 (request line alone)
  or 431, read no further than about one socket read past the limit;
- at most ``max_connections_per_address`` connections per client address per process;
  one more is answered 503 and closed.

Refused connections get their status, then a short lingering close (at most 2 s and
256 KiB, what nginx does) so that a client still sending can read it. Counters are per process:
with ``--workers N`` an address may hold up to N times the cap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pylime.keyserver.app import HttpLimits

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is in the server extra; h11 always comes with uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

__all__ = ["GuardedH11", "GuardedHttpTools", "GuardedProtocol", "guarded_config"]

log = logging.getLogger("pylime.keyserver.http")

# Where guarded_config leaves the limits on uvicorn's Config (pickled to worker processes).
_LIMITS_ATTR = "pylime_http_limits"
# A refused connection is still read (and what it sends dropped) for this long or this many
# bytes, so that a client still sending reads its answer before the close (nginx's lingering
# close, bounded in bytes too: a flood of 8 MiB heads must not cost the server 8 MiB each).
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024

_IDLE, _LINE, _HEAD, _BUSY, _REFUSED = range(5)

_REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class _Throttled:
    """One log line per reason per second at most: an attack must not become a log flood."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def info(self, reason: str, client: str) -> None:
        now = time.monotonic()
        last, skipped = self._last.get(reason, (0.0, 0))
        if now - last < 1.0:
            self._last[reason] = (last, skipped + 1)
            return
        more = f" (and {skipped} more in the last second)" if skipped else ""
        log.info("http limit: %s from %s%s", reason, client, more)
        self._last[reason] = (now, 0)


_throttled = _Throttled()


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a refused request."""


class _Guard:
    """The limits, mixed in before a uvicorn HTTP protocol class (see the module docstring)."""

    # Provided by the uvicorn protocol this is mixed into.
    transport: asyncio.Transport
    client: tuple[str, int] | None
    server_state: Any
    loop: asyncio.AbstractEventLoop
    _count_head_bytes = True  # h11 bounds incomplete heads itself

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        self._limits: HttpLimits = getattr(config, _LIMITS_ATTR, None) or HttpLimits()
        self._phase = _IDLE
        self._chunk_phase = _IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0
        self._head_bytes = 0
        self._skip_chunk = False
        self._address: str | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        cap = self._limits.max_connections_per_address
        if cap and self.client:
            counts: dict[str, int] = self.server_state.__dict__.setdefault(
                "pylime_connections_per_address", {}
            )
            host = self.client[0]
            held = counts.get(host, 0)
            if held >= cap:
                self._refuse(503, "too many connections from this address", b"retry-after: 5\r\n")
                return
            counts[host] = held + 1
            self._address = host
        self._arm(self._limits.idle_timeout, self._on_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._address is not None:
            counts = self.server_state.__dict__["pylime_connections_per_address"]
            held = counts.get(self._address, 1) - 1
            if held > 0:
                counts[self._address] = held
            else:
                counts.pop(self._address, None)
            self._address = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._phase == _REFUSED:  # lingering: read and drop, up to a bound
            self._head_bytes += len(data)
            if self._head_bytes > LINGER_BYTES:
                if self._in_flight():
                    self.transport.pause_reading()  # uvicorn closes once that response is out
                else:
                    self.transport.close()
            return
        self._chunk_phase = self._phase
        if self._phase == _IDLE and not self._count_head_bytes:
            self._begin()  # h11 has no message-begin callback: the first byte is the begin
        if self._phase == _LINE and b"\n" in data:
            self._phase = _HEAD
        super().data_received(data)  # type: ignore[misc]
        if self._phase == _LINE and b"\n" in data:
            self._phase = _HEAD  # httptools: the request began inside this chunk
        if self._phase in (_LINE, _HEAD):
            if not self._count_head_bytes:
                return
            if self._skip_chunk:
                self._skip_chunk = False  # the head began inside this chunk, after other bytes
            else:
                self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse_too_large(request_line=self._phase == _LINE)

    def on_response_complete(self) -> None:
        if self._phase == _BUSY and not getattr(self, "pipeline", None):
            self._phase = _IDLE  # now uvicorn's keep-alive timeout runs
        super().on_response_complete()  # type: ignore[misc]

    def send_400_response(self, msg: str) -> None:
        if self._phase != _REFUSED:  # a refusal already answered and stopped the parser
            super().send_400_response(msg)  # type: ignore[misc]

    # ------------------------------------------------------------ head phases

    def _begin(self) -> None:
        """A request's first byte arrived: its request-line and header deadlines start."""
        limits = self._limits
        self._phase = _LINE
        self._head_bytes = 0
        self._skip_chunk = self._chunk_phase == _BUSY  # pipelined behind a body
        self._head_deadline = self.loop.time() + limits.header_timeout
        self._arm(min(limits.request_line_timeout, limits.header_timeout), self._on_deadline)

    def _head_done(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The head is parsed: refuse it if too large (raising _Refused), else go on."""
        line = len(target) + 20  # method, spaces, version, CRLF
        size = line + sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self._limits.max_header_bytes:
            self._refuse_too_large(request_line=line > self._limits.max_header_bytes)
            raise _Refused
        self._phase = _BUSY
        self._cancel()  # the body has the app's own deadline (ServerConfig.body_timeout)

    def _on_deadline(self) -> None:
        self._timer = None
        if self._phase == _LINE:
            self._refuse(408, "request line too slow")
        elif self._phase == _HEAD:
            left = self._head_deadline - self.loop.time()
            if left > 0:
                self._arm(left, self._on_deadline)
            else:
                self._refuse(408, "request header too slow")

    def _on_idle(self) -> None:
        self._timer = None
        if self._phase == _IDLE and not self.transport.is_closing():
            _throttled.info("idle connection closed", self._client_name())
            self.transport.close()

    # ------------------------------------------------------------ refusing

    def _refuse_too_large(self, *, request_line: bool) -> None:
        if request_line:
            self._refuse(414, "request line too long")
        else:
            self._refuse(431, "request header too large")

    def _refuse(self, status: int, reason: str, extra: bytes = b"") -> None:
        """Answer ``status`` and close after a short linger (the client may still be sending)."""
        if self._phase == _REFUSED:
            return
        self._phase = _REFUSED
        self._head_bytes = 0  # now counts the bytes dropped while lingering
        self._cancel()
        getattr(self, "_unset_keepalive_if_required", lambda: None)()
        _throttled.info(f"{status} {reason}", self._client_name())
        transport = self.transport
        if transport.is_closing():
            return
        if self._in_flight():
            # A pipelined request refused while the previous one's response is being written:
            # no status in the middle of it; the connection closes once that response is out.
            self.cycle.keep_alive = False  # type: ignore[attr-defined]
            return
        body = reason.encode() + b"\n"
        transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n%s\r\n%s"
            % (status, _REASONS[status], len(body), extra, body)
        )
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    # ------------------------------------------------------------ helpers

    def _in_flight(self) -> bool:
        """Whether a response is being produced on this connection (pipelining)."""
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def _arm(self, delay: float, callback: Any) -> None:
        self._cancel()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _client_name(self) -> str:
        return self.client[0] if self.client else "?"


if HttpToolsProtocol is not None:
    import httptools

    class _HttpToolsParser(httptools.HttpRequestParser):
        """httptools' parser, stopped quietly by a refusal (uvicorn would log and answer 400)."""

        def __init__(self, guard: GuardedHttpTools) -> None:
            super().__init__(guard)
            self._guard = guard

        def feed_data(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
            try:
                super().feed_data(data)
            except httptools.HttpParserCallbackError:
                if self._guard._phase != _REFUSED:
                    raise

    class GuardedHttpTools(_Guard, HttpToolsProtocol):
        """uvicorn's httptools protocol with the limits of :class:`HttpLimits`."""

        def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.parser = _HttpToolsParser(self)
            # as uvicorn does: answer the first of pipelined requests sent before a close
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._begin()

        def on_headers_complete(self) -> None:
            self._head_done(self.url, self.headers)
            super().on_headers_complete()

else:  # pragma: no cover (httptools is installed with pylime[server])
    GuardedHttpTools = None  # type: ignore[assignment,misc]


class _H11Connection(h11.Connection):
    """h11's connection telling the protocol when a head is complete, before uvicorn acts."""

    def __init__(self, guard: GuardedH11, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._guard = guard

    def next_event(self) -> Any:
        guard = self._guard
        if guard._phase == _REFUSED:
            return h11.NEED_DATA  # nothing more is parsed on a refused connection
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint != 431:
                raise  # uvicorn answers 400
            # h11's own bound on an incomplete head: answer 431/414, not uvicorn's 400
            guard._refuse_too_large(request_line=guard._phase == _LINE)
            return h11.NEED_DATA
        if isinstance(event, h11.Request):
            try:
                guard._head_done(event.target, list(event.headers))
            except _Refused:
                return h11.NEED_DATA
        return event


class GuardedH11(_Guard, H11Protocol):
    """uvicorn's h11 protocol with the limits of :class:`HttpLimits` (h11 bounds the head)."""

    _count_head_bytes = False

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.conn = _H11Connection(self, self._limits.max_header_bytes)


#: The guarded protocol for this installation: httptools where installed, else h11.
GuardedProtocol: type[asyncio.Protocol] = (
    GuardedH11 if GuardedHttpTools is None else GuardedHttpTools
)


def guarded_config(limits: HttpLimits, app: Any, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn Config serving ``app`` through :data:`GuardedProtocol` under ``limits``."""
    config = uvicorn.Config(
        app,
        http=GuardedProtocol,
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **kwargs,
    )
    setattr(config, _LIMITS_ATTR, limits)
    return config
