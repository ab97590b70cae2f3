"""A minimal SIP registrar, GRUU proxy and RTP relay for the interop tests, on 127.0.0.1 only.

Written for these tests (RFC 3261 / RFC 5627 basics, nothing more):

- REGISTER with ``+sip.instance="<urn:uuid:X>"`` gets 200 OK with the Contact echoed and
  ``;expires=N;pub-gruu="sip:user@DOMAIN;gr=urn:uuid:X"`` — a Flexisip-style GRUU, without port,
  which is the only form under which liblinphone 5.1.65 stores ZRTP trust under the same id as
  the lime device id (linphone-5.1.65.md §3.5).
- Any other request is forwarded statelessly: by ``gr=`` to the registered contact of that GRUU,
  else to the first contact of the address-of-record, else through an extra route given by the
  test (``routes``: a user-name prefix → a host:port, for a conference server). The proxy adds
  its Via and, on dialog-creating requests, a Record-Route, so that in-dialog requests to a
  port-less GRUU come back through it. Responses follow the Via chain.
- With ``relay_media``, SDP offers and answers are rewritten so that audio RTP flows through a
  relay here; the relay keeps every ZRTP packet it forwards, for the aux-secret check.
- TCP on the same port number as UDP, and TLS on ``tls_port`` when given a certificate: a
  device registered over a stream is reached over that connection (as Flexisip does); a route
  given as ``tcp_routes`` is reached over a connection the proxy opens.
- With ``accounts`` (user → password), REGISTER is challenged with HTTP Digest (401, or 407
  with ``proxy_auth``), MD5 with qop=auth, and refused with 403 when the answer is wrong.

Everything it sees goes into ``transcript``. It runs an asyncio loop in a daemon thread and
stops on ``close()``; sockets are bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Binding", "SipMessage", "SipProxy", "ZrtpPacket", "parse_sip"]


def _status_line_of(data: bytes) -> int | None:
    """The status code of a raw SIP response, or None."""
    m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(m.group(1)) if m else None

HOST = "127.0.0.1"
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type", "e": "content-encoding", "k": "supported", "o": "event"}


@dataclass
class SipMessage:
    """A parsed SIP message: start line, headers in order (names as sent), body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        """True for a request, False for a response."""
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response."""
        if self.is_request:
            return self.start.split(" ", 1)[0]
        return (self.get("CSeq") or " ").split()[-1]

    @property
    def uri(self) -> str:
        """The Request-URI."""
        return self.start.split(" ")[1]

    @property
    def status(self) -> int:
        """The response status code."""
        return int(self.start.split(" ")[1])

    def all(self, name: str) -> list[str]:
        """Every value of a header (compact forms understood), comma lists not split."""
        key = name.lower()
        return [v for k, v in self.headers if _COMPACT.get(k.lower(), k.lower()) == key]

    def get(self, name: str) -> str | None:
        """The first value of a header."""
        values = self.all(name)
        return values[0] if values else None

    def remove(self, name: str) -> None:
        """Drop every occurrence of a header."""
        key = name.lower()
        self.headers = [(k, v) for k, v in self.headers if _COMPACT.get(k.lower(), k.lower()) != key]

    def to_bytes(self) -> bytes:
        """Serialise, with Content-Length recomputed."""
        self.remove("Content-Length")
        lines = [self.start, *(f"{k}: {v}" for k, v in self.headers), f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse_sip(data: bytes) -> SipMessage:
    """Parse one SIP message from a datagram (header folding not supported: belle-sip sends none)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    msg = SipMessage(lines[0], headers, body)
    length = msg.get("Content-Length")
    if length is not None and length.isdigit():
        msg.body = body[: int(length)]
    return msg


def _uri_of(value: str) -> str:
    """The URI inside a name-addr (``"x" <sip:..>;tag=``) or a bare addr-spec."""
    m = re.search(r"<([^>]*)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


def _user_of(uri: str) -> str | None:
    m = re.match(r"sips?:([^@;>]+)@", uri)
    return m.group(1) if m else None


def _hostport(uri: str) -> tuple[str, int]:
    m = re.match(r"sips?:(?:[^@;>]+@)?([^:;>]+)(?::(\d+))?", uri)
    if not m:
        raise ValueError(f"no host in {uri!r}")
    host = m.group(1)
    return (HOST if host == "localhost" else host), int(m.group(2) or 5060)


def _param(value: str, name: str) -> str | None:
    m = re.search(rf";\s*{re.escape(name)}(?:=(\"[^\"]*\"|[^;,>\s]*))?", value, re.IGNORECASE)
    if not m:
        return None
    return (m.group(1) or "").strip('"')


@dataclass
class Binding:
    """One registered device: its AOR, GRUU, instance id and where it listens."""

    aor: str
    gruu: str
    instance: str
    contact: str
    addr: tuple[str, int]
    contact_header: str


@dataclass
class ZrtpPacket:
    """A ZRTP message the relay forwarded, with the leg it came from."""

    leg: str  # "caller" or "callee": who sent it
    type: str  # "Hello", "Commit", "DHPart1", ...
    message: bytes = field(repr=False)


class _Relay(asyncio.DatagramProtocol):
    """One side of an RTP relay: packets arriving here go out of the peer socket to ``target``."""

    def __init__(self, proxy: SipProxy, leg: str) -> None:
        self.proxy = proxy
        self.leg = leg  # who sends to this socket
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: _Relay | None = None
        self.target: tuple[str, int] | None = None  # where packets from this side's sender go
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and data[0] & 0xF0 == 0x10 and data[4:8] == b"ZRTP":
            self.proxy._zrtp(self.leg, data)
        if self.peer is not None and self.peer.transport is not None and self.target is not None:
            self.peer.transport.sendto(data, self.target)


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, proxy: SipProxy) -> None:
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.proxy._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.proxy._on_datagram(data, addr)
        except Exception as exc:  # noqa: BLE001 (a test proxy keeps running: record, drop)
            self.proxy.errors.append(f"{type(exc).__name__}: {exc}")


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection: bytes cut into messages by Content-Length."""

    def __init__(self, proxy: SipProxy) -> None:
        self.proxy = proxy
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.proxy._streams[self.peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.proxy._streams.get(self.peer) is self:
            del self.proxy._streams[self.peer]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", self.buffer[:end])
            size = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buffer) < size:
                return
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            try:
                self.proxy._on_datagram(data, self.peer)
            except Exception as exc:  # noqa: BLE001 (a test proxy keeps running: record, drop)
                self.proxy.errors.append(f"{type(exc).__name__}: {exc}")


class SipProxy:
    """Registrar + GRUU proxy on 127.0.0.1 (UDP and TCP, port 0; TLS optional), in its own thread.

    Args:
        domain: the SIP domain of the accounts (``localhost``: resolves to 127.0.0.1 only).
        routes: user-name prefix → (host, port) for requests that no registration serves
            (a conference server's factory and chat rooms).
        relay_media: rewrite SDP so that audio goes through a relay that records ZRTP.
        expires: the registration lifetime granted when the REGISTER asks for none.
        tls: (certificate, key) PEM files to also listen for TLS on ``tls_port``.
        accounts: user → password: REGISTER must answer a Digest challenge.
        proxy_auth: challenge with 407 Proxy-Authenticate instead of 401.

    ``sdp_filter`` (a man in the middle for tests) may rewrite every SDP it forwards.
    """

    def __init__(
        self,
        domain: str = "localhost",
        *,
        routes: dict[str, tuple[str, int]] | None = None,
        relay_media: bool = False,
        expires: int = 3600,
        tls: tuple[str, str] | None = None,
        accounts: dict[str, str] | None = None,
        proxy_auth: bool = False,
    ) -> None:
        self.domain = domain
        self.routes = dict(routes or {})
        self.relay_media = relay_media
        self.expires = expires
        self.tls = tls
        self.accounts = dict(accounts or {})
        self.proxy_auth = proxy_auth
        self.tcp_routes: set[tuple[str, int]] = set()  # targets reached over a TCP connection we open
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._nonces: set[str] = set()
        self.tls_port = 0
        self.bindings: dict[str, Binding] = {}  # gruu -> binding
        self.transcript: list[dict[str, Any]] = []
        self.raw_bodies: list[bytes] = []  # entry["raw"] indexes this: the exact bytes of each body
        self.zrtp: list[ZrtpPacket] = []
        self.errors: list[str] = []
        # A man in the middle for tests: rewrites each SDP it forwards (offer=True for INVITEs).
        self.sdp_filter: Callable[[bytes, bool], bytes] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._branches = itertools.count(1)
        self._calls: dict[str, tuple[_Relay, _Relay]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sip-proxy", daemon=True)
        self._ready = threading.Event()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(
            self._loop.create_datagram_endpoint(lambda: _Sip(self), local_addr=(HOST, 0))
        )
        assert self._transport is not None
        self.port = self._transport.get_extra_info("sockname")[1]
        servers = [self._loop.run_until_complete(self._loop.create_server(lambda: _Stream(self), HOST, self.port))]
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            servers.append(self._loop.run_until_complete(
                self._loop.create_server(lambda: _Stream(self), HOST, 0, ssl=context)))
            self.tls_port = servers[-1].sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        for a, b in self._calls.values():
            for side in (a, b):
                if side.transport is not None:
                    side.transport.close()
        self._transport.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()
        for server in servers:
            server.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def start(self, timeout: float = 10.0) -> SipProxy:
        """Start the proxy thread; return once it listens."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the SIP proxy did not start")
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait for the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> SipProxy:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uri(self) -> str:
        """The proxy as an account's ``reg_proxy`` / route."""
        return f"<sip:{self.domain}:{self.port};transport=udp>"

    def uri_for(self, transport: str) -> str:
        """The proxy over ``udp``, ``tcp`` or ``tls``."""
        port = self.tls_port if transport == "tls" else self.port
        return f"<sip:{self.domain}:{port};transport={transport}>"

    # ------------------------------------------------------------------ queries (any thread)

    def requests(self, method: str) -> list[dict[str, Any]]:
        """Transcript entries of received requests of ``method``."""
        with self._lock:
            return [e for e in self.transcript if e["dir"] == "in" and e["method"] == method and e["request"]]

    def binding_for(self, user: str) -> Binding | None:
        """The (last) binding registered for ``user``."""
        with self._lock:
            found = [b for b in self.bindings.values() if _user_of(b.aor) == user]
        return found[-1] if found else None

    def wait_bindings(self, count: int, timeout: float) -> None:
        """Wait until ``count`` devices are registered."""
        deadline = time.monotonic() + timeout
        while len(self.bindings) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.bindings)} of {count} devices registered")
            time.sleep(0.02)

    # ------------------------------------------------------------------ SIP

    def _log(self, direction: str, msg: SipMessage, addr: tuple[str, int]) -> None:
        entry = {
            "t": round(time.time(), 3),
            "dir": direction,
            "addr": f"{addr[0]}:{addr[1]}",
            "request": msg.is_request,
            "method": msg.method,
            "start": msg.start,
            "headers": [list(h) for h in msg.headers],
            "body": msg.body.decode("utf-8", "replace") if len(msg.body) < 8192 else f"<{len(msg.body)} bytes>",
        }
        with self._lock:
            entry["raw"] = len(self.raw_bodies)
            self.raw_bodies.append(msg.body)
            self.transcript.append(entry)

    def _is_stream(self, addr: tuple[str, int]) -> bool:
        return addr in self._streams or addr in self.tcp_routes

    def _send(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        self._log("out", msg, addr)
        stream = self._streams.get(addr)
        if stream is not None and stream.transport is not None:
            stream.transport.write(msg.to_bytes())
        elif addr in self.tcp_routes:
            asyncio.ensure_future(self._connect_and_send(addr, msg.to_bytes()))
        else:
            assert self._transport is not None
            self._transport.sendto(msg.to_bytes(), addr)

    async def _connect_and_send(self, addr: tuple[str, int], data: bytes) -> None:
        stream = self._streams.get(addr)
        if stream is None:
            try:
                _, stream = await self._loop.create_connection(lambda: _Stream(self), addr[0], addr[1])
            except OSError as exc:
                self.errors.append(f"connect {addr}: {exc}")
                return
            self._streams[addr] = stream
        assert stream.transport is not None
        stream.transport.write(data)

    def _reply(self, req: SipMessage, status: int, reason: str, extra: list[tuple[str, str]] | None = None) -> None:
        headers = [(k, v) for k, v in req.headers if _COMPACT.get(k.lower(), k.lower()) in ("via", "from", "call-id", "cseq")]
        to = req.get("To") or ""
        if ";tag=" not in to:
            to += f";tag={uuid.uuid4().hex[:10]}"
        headers.insert(2, ("To", to))
        headers += extra or []
        self._send(SipMessage(f"SIP/2.0 {status} {reason}", headers), self._via_addr(req.all("Via")[0]))

    @staticmethod
    def _via_addr(via: str) -> tuple[str, int]:
        m = re.match(r"SIP/2\.0/\w+\s+([^;:\s]+)(?::(\d+))?", via)
        if not m:
            raise ValueError(f"bad Via {via!r}")
        host = _param(via, "received") or m.group(1)
        rport = _param(via, "rport")
        port = int(rport) if rport else int(m.group(2) or 5060)
        return (HOST if host == "localhost" else host), port

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip() == b"":
            return  # keep-alive
        msg = parse_sip(data)
        self._log("in", msg, addr)
        if not msg.is_request:
            self._forward_response(msg)
            return
        # RFC 3581: note where the request came from in the top Via.
        vias = msg.all("Via")
        top = vias[0]
        if ";rport" in top and not re.search(r";rport=\d", top):
            top = top.replace(";rport", f";rport={addr[1]}", 1)
        if ";received=" not in top:
            top += f";received={addr[0]}"
        self._set_top_via(msg, top)
        if msg.method == "REGISTER":
            self._register(msg, addr)
        else:
            self._forward_request(msg)

    @staticmethod
    def _set_top_via(msg: SipMessage, value: str) -> None:
        for i, (k, _) in enumerate(msg.headers):
            if _COMPACT.get(k.lower(), k.lower()) == "via":
                msg.headers[i] = (k, value)
                return

    def _authorized(self, req: SipMessage) -> bool:
        """Digest check of a REGISTER (401/407 challenge, 403 for a wrong answer); True to go on."""
        user = _user_of(_uri_of(req.get("To") or "")) or ""
        answer = req.get("Proxy-Authorization" if self.proxy_auth else "Authorization")
        if answer is None:
            nonce = secrets.token_hex(8)
            self._nonces.add(nonce)
            header = "Proxy-Authenticate" if self.proxy_auth else "WWW-Authenticate"
            challenge = f'Digest realm="{self.domain}", nonce="{nonce}", qop="auth", algorithm=MD5'
            self._reply(req, 407 if self.proxy_auth else 401, "Unauthorized", [(header, challenge)])
            return False
        fields = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', answer)}
        password = self.accounts.get(user)

        def h(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ok = password is not None and fields.get("nonce") in self._nonces and fields.get("username") == user
        if ok:
            ha1 = h(f"{user}:{self.domain}:{password}")
            ha2 = h(f"REGISTER:{fields.get('uri')}")
            expected = h(f"{ha1}:{fields['nonce']}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
            ok = fields.get("response") == expected
        if not ok:
            self._reply(req, 403, "Forbidden")
        return ok

    def _register(self, req: SipMessage, addr: tuple[str, int]) -> None:
        if self.accounts and not self._authorized(req):
            return
        aor = _uri_of(req.get("To") or "")
        contacts = req.all("Contact")
        if not contacts:
            self._reply(req, 200, "Ok")
            return
        contact = contacts[0]
        expires = _param(contact, "expires") or req.get("Expires") or str(self.expires)
        instance = _param(contact, "+sip.instance")
        if instance is None:
            self._reply(req, 200, "Ok", [("Contact", contact)])
            return
        instance = instance.strip("<>")
        gruu = f"sip:{_user_of(aor)}@{self.domain};gr={instance}"
        if int(expires) == 0:
            with self._lock:
                self.bindings.pop(gruu, None)
            self._reply(req, 200, "Ok")
            return
        curi = _uri_of(contact)
        with self._lock:
            where = addr if addr in self._streams else _hostport(curi)  # a stream device: its connection
            self.bindings[gruu] = Binding(aor, gruu, instance, curi, where, contact)
        echoed = f'{contact.split(";expires")[0]};expires={expires};pub-gruu="{gruu}"'
        self._reply(req, 200, "Ok", [("Contact", echoed), ("Supported", "gruu")])

    def _target(self, msg: SipMessage) -> tuple[str, int] | None:
        uri = msg.uri
        gr = _param(uri, "gr")
        user = _user_of(uri)
        with self._lock:
            for prefix, hostport in self.routes.items():
                if user is not None and user.startswith(prefix):
                    return hostport
            if gr is not None:
                for b in self.bindings.values():
                    if b.instance == gr:
                        return b.addr
                return None
            for b in self.bindings.values():
                if _user_of(b.aor) == user:
                    return b.addr
        host, port = _hostport(uri)
        if (host, port) == (HOST, self.port):
            return None
        return (host, port)

    def _forward_request(self, msg: SipMessage) -> None:
        # Loose routing: drop the Route entries that name us.
        kept = []
        for k, v in msg.headers:
            if _COMPACT.get(k.lower(), k.lower()) == "route":
                entries = [e.strip() for e in v.split(",")]
                entries = [e for e in entries if not self._is_me(_uri_of(e))]
                if entries:
                    kept.append((k, ", ".join(entries)))
            else:
                kept.append((k, v))
        msg.headers = kept
        route = msg.get("Route")
        target = _hostport(_uri_of(route.split(",")[0])) if route else self._target(msg)
        if target is None:
            if msg.method != "ACK":
                self._reply(msg, 404, "Not Found")
            return
        mf = msg.get("Max-Forwards")
        if mf is not None:
            if int(mf) <= 0:
                self._reply(msg, 483, "Too Many Hops")
                return
            msg.remove("Max-Forwards")
            msg.headers.append(("Max-Forwards", str(int(mf) - 1)))
        # RFC 3261 §16.11: a stateless proxy derives its branch from the incoming one, so that the
        # ACK of a non-2xx (and a CANCEL) gets the INVITE's branch and matches its transaction.
        incoming = _param(msg.get("Via") or "", "branch") or str(next(self._branches))
        branch = "z9hG4bK" + hashlib.sha256(incoming.encode()).hexdigest()[:16]
        kind = "TCP" if self._is_stream(target) else "UDP"
        msg.headers.insert(0, ("Via", f"SIP/2.0/{kind} {HOST}:{self.port};branch={branch};rport"))
        if msg.method in ("INVITE", "SUBSCRIBE", "REFER") and ";tag=" not in (msg.get("To") or ""):
            msg.headers.insert(1, ("Record-Route", f"<sip:{HOST}:{self.port};lr>"))
        if msg.body and "application/sdp" in (msg.get("Content-Type") or ""):
            if self.sdp_filter is not None:
                msg.body = self.sdp_filter(msg.body, msg.method == "INVITE")
            if self.relay_media:
                msg.body = self._relay_sdp(msg, offer=msg.method == "INVITE")
        self._send(msg, target)

    def _is_me(self, uri: str) -> bool:
        try:
            return _hostport(uri) == (HOST, self.port)
        except ValueError:
            return False

    def _forward_response(self, msg: SipMessage) -> None:
        vias = msg.all("Via")
        if len(vias) < 2:
            return
        # Drop our own (first) Via.
        for i, (k, _) in enumerate(msg.headers):
            if _COMPACT.get(k.lower(), k.lower()) == "via":
                del msg.headers[i]
                break
        if msg.body and msg.method == "INVITE" and msg.status == 200 \
                and "application/sdp" in (msg.get("Content-Type") or ""):
            if self.sdp_filter is not None:
                msg.body = self.sdp_filter(msg.body, False)
            if self.relay_media:
                msg.body = self._relay_sdp(msg, offer=False)
        self._send(msg, self._via_addr(vias[1]))

    # ------------------------------------------------------------------ media relay

    def _relay_sdp(self, msg: SipMessage, *, offer: bool) -> bytes:
        call_id = msg.get("Call-ID") or ""
        sdp = msg.body.decode()
        m = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
        if not m:
            return msg.body
        sender_port = int(m.group(1))
        if call_id not in self._calls:
            a, b = _Relay(self, "callee"), _Relay(self, "caller")
            a.peer, b.peer = b, a
            self._calls[call_id] = (a, b)
        a, b = self._calls[call_id]
        # a: faces the callee (its port goes into the offer); b: faces the caller.
        if offer:
            b.target = None
            a.target = (HOST, sender_port)  # callee → a → (sent from b) → caller's port
            relay = a
        else:
            b.target = (HOST, sender_port)  # caller → b → (sent from a) → callee's port
            relay = b
        port = self._relay_port(relay)
        return (sdp[: m.start(1)] + str(port) + sdp[m.end(1):]).encode()

    def _relay_port(self, relay: _Relay) -> int:
        # The endpoint is created on this loop; we are inside a callback, so bind synchronously.
        if relay.port == 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            relay.port = int(sock.getsockname()[1])
            asyncio.ensure_future(self._loop.create_datagram_endpoint(lambda: relay, sock=sock))
        return relay.port

    def _zrtp(self, leg: str, packet: bytes) -> None:
        message = packet[12:-4]  # RTP-like header (12) ... CRC (4)
        kind = message[4:12].decode("ascii", "replace").strip()
        with self._lock:
            self.zrtp.append(ZrtpPacket(leg, kind, message))
