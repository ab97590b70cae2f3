"""How SIP messages travel between the agent and its outbound proxy: UDP, TCP or TLS, on asyncio.

A user agent of a Linphone service keeps one flow to its proxy (Flexisip sends requests for the
device back over the connection the device registered on, RFC 5626 style), so a transport here
is bound to one proxy address: :meth:`Transport.send` without ``to`` goes there. UDP also
receives datagrams from anyone (and answers them where they came from, RFC 3581): the agent
decides whom to trust. Framing and parsing are :mod:`pylime.sip.message`'s; this module only
moves bytes and reports what arrived, what could not be parsed, and a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from pylime.sip.errors import MessageTooLargeError, SipParseError, SipTransportError
from pylime.sip.message import (
    MAX_BODY_SIZE,
    BadInput,
    SipRequest,
    SipResponse,
    StreamParser,
    parse_message,
)

__all__ = ["MAX_DATAGRAM", "Flow", "Transport", "open_transport"]

log = logging.getLogger("pylime.sip")

MAX_DATAGRAM = 65507
"""The largest UDP payload; bigger messages need TCP or TLS (RFC 3261 §18.1.1)."""

KEEPALIVE_INTERVAL = 30.0
"""Seconds between RFC 5626 CRLFCRLF keep-alives on a stream to the proxy."""


@dataclass(frozen=True)
class Flow:
    """Where a message came from: the transport name (UDP, TCP, TLS) and the peer's address."""

    transport: str
    remote: tuple[str, int]


Received = Callable[[SipRequest | SipResponse, Flow], None]
Refused = Callable[[BadInput, Flow], None]
Lost = Callable[[BaseException | None], None]


class Transport:
    """One flow to the outbound proxy; subclasses move the bytes.

    ``on_message``, ``on_bad_input`` and ``on_lost`` are set by the owner before traffic flows;
    they run on the event loop and must not raise.
    """

    name = ""
    reliable = False

    def __init__(self, proxy: tuple[str, int], *, max_body: int = MAX_BODY_SIZE) -> None:
        self.proxy = proxy
        self.max_body = max_body
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.on_message: Received = lambda m, f: None
        self.on_bad_input: Refused = lambda b, f: None
        self.on_lost: Lost = lambda e: None
        self.closed = False

    async def send(self, message: SipRequest | SipResponse, to: tuple[str, int] | None = None) -> None:
        """Send one message to ``to`` (the proxy by default)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop; idempotent."""
        self.closed = True

    def _deliver(self, data: bytes | SipRequest | SipResponse | BadInput, flow: Flow) -> None:
        if isinstance(data, BadInput):
            self.on_bad_input(data, flow)
        elif isinstance(data, SipRequest | SipResponse):
            self.on_message(data, flow)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        owner = self.owner
        if not data.strip(b"\r\n"):
            return  # keep-alive
        flow = Flow("UDP", (addr[0], addr[1]))
        try:
            message = parse_message(data, max_body=owner.max_body)
        except SipParseError as exc:
            owner._deliver(BadInput(exc, getattr(exc, "head", None)), flow)
            return
        owner._deliver(message, flow)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction layer's timers deal with it.
        log.debug("UDP error: %s", type(exc).__name__)


class UdpTransport(Transport):
    """UDP on one local port; sends to the proxy, receives from anyone."""

    name = "UDP"

    async def start(self, local_host: str | None) -> None:
        loop = asyncio.get_running_loop()
        host = local_host or _route_to(self.proxy)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), local_addr=(host, 0))
        self._udp: asyncio.DatagramTransport = transport
        sock = transport.get_extra_info("sockname")
        self.local = (sock[0], sock[1])

    async def send(self, message: SipRequest | SipResponse, to: tuple[str, int] | None = None) -> None:
        data = bytes(message)
        if len(data) > MAX_DATAGRAM:
            raise MessageTooLargeError(f"a {len(data)}-byte message does not fit a UDP datagram: use TCP or TLS")
        if self.closed:
            raise SipTransportError("the UDP transport is closed")
        self._udp.sendto(data, to or self.proxy)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._udp.close()


class StreamTransport(Transport):
    """One TCP or TLS connection to the proxy, with CRLFCRLF keep-alives."""

    reliable = True

    def __init__(self, proxy: tuple[str, int], *, tls: ssl.SSLContext | None, server_hostname: str | None,
                 max_body: int = MAX_BODY_SIZE) -> None:
        super().__init__(proxy, max_body=max_body)
        self.name = "TLS" if tls is not None else "TCP"
        self._tls = tls
        self._server_hostname = server_hostname
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, local_host: str | None) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.proxy[0], self.proxy[1], ssl=self._tls,
                server_hostname=self._server_hostname if self._tls is not None else None,
                local_addr=(local_host, 0) if local_host else None)
        except (OSError, ssl.SSLError) as exc:
            raise SipTransportError(f"cannot connect to the proxy {self.proxy[0]}:{self.proxy[1]} "
                                    f"over {self.name}: {type(exc).__name__}") from exc
        sock = self._writer.get_extra_info("sockname")
        self.local = (sock[0], sock[1])
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._keepalive())]

    async def _read(self) -> None:
        parser = StreamParser(max_body=self.max_body)
        flow = Flow(self.name, self.proxy)
        error: BaseException | None = None
        try:
            while not parser.broken:
                chunk = await self._reader.read(65536)
                if not chunk:
                    break
                for item in parser.feed(chunk):
                    if item == b"ping":
                        continue
                    self._deliver(item, flow)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            error = exc
        finally:
            if not self.closed:
                self.closed = True
                self._writer.close()
                self.on_lost(error)

    async def _keepalive(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, SipTransportError):
            while not self.closed:
                await asyncio.sleep(KEEPALIVE_INTERVAL)
                await self._write(b"\r\n\r\n")

    async def _write(self, data: bytes) -> None:
        if self.closed:
            raise SipTransportError(f"the {self.name} connection to the proxy is closed")
        async with self._lock:
            self._writer.write(data)
            await self._writer.drain()

    async def send(self, message: SipRequest | SipResponse, to: tuple[str, int] | None = None) -> None:
        try:
            await self._write(bytes(message))
        except (OSError, ssl.SSLError) as exc:
            raise SipTransportError(f"sending over {self.name} failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()


def _route_to(proxy: tuple[str, int]) -> str:
    """The local address the system would use to reach the proxy (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(proxy)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


async def open_transport(kind: str, proxy: tuple[str, int], *, local_host: str | None = None,
                         tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                         max_body: int = MAX_BODY_SIZE) -> Transport:
    """Open a flow to ``proxy`` over ``kind`` (``udp``, ``tcp`` or ``tls``).

    Raises:
        SipTransportError: the proxy cannot be reached (TCP/TLS) or ``kind`` is unknown.
    """
    kind = kind.lower()
    transport: UdpTransport | StreamTransport
    if kind == "udp":
        transport = UdpTransport(proxy, max_body=max_body)
    elif kind in ("tcp", "tls"):
        if kind == "tls" and tls is None:
            tls = ssl.create_default_context()
        transport = StreamTransport(proxy, tls=tls if kind == "tls" else None,
                                    server_hostname=server_hostname or proxy[0], max_body=max_body)
    else:
        raise SipTransportError(f"unknown SIP transport {kind!r}: use udp, tcp or tls")
    await transport.start(local_host)
    return transport
