"""A pylime device on the SIP side: a minimal user agent for a Linphone group chat, for the tests.

It does what a Linphone device does around a conference server, and nothing more: REGISTER with
``+sip.instance`` and ``+org.linphone.specs="groupchat/1.1,lime"`` (it gets a Flexisip-style GRUU,
its lime device id), accept the chat room's INVITE, SUBSCRIBE to the room's ``conference`` event,
answer NOTIFYs and MESSAGEs with 200, and send MESSAGEs to the room. The encryption is pylime's
(:func:`pylime.linphone.encrypt_message` / :func:`~pylime.linphone.decrypt_message`), done by the
test on the bodies this agent hands over. UDP on 127.0.0.1 only; an asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tests.interop.sipproxy import HOST, SipMessage, _param, _uri_of, parse_sip

__all__ = ["SipDevice"]

SPECS = "groupchat/1.1,lime"


@dataclass
class Received:
    """A request the device received (and answered 200)."""

    method: str
    message: SipMessage = field(repr=False)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, device: SipDevice) -> None:
        self.device = device

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.device._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip():
            self.device._on_message(parse_sip(data), addr)


class SipDevice:
    """One pylime device: ``user`` at ``domain``, reaching everything through ``proxy_port``."""

    def __init__(self, user: str, proxy_port: int, domain: str = "localhost") -> None:
        self.user = user
        self.domain = domain
        self.aor = f"sip:{user}@{domain}"
        self.proxy = (HOST, proxy_port)
        self.instance = f"urn:uuid:{uuid.uuid4()}"
        self.gruu: str | None = None
        self.received: list[Received] = []
        self.log: list[dict[str, Any]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[tuple[str, str], Future[SipMessage]] = {}
        self._cseq = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"sip-{user}", daemon=True)
        self._ready = threading.Event()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(
            self._loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(HOST, 0))
        )
        assert self._transport is not None
        self.port = self._transport.get_extra_info("sockname")[1]
        self._ready.set()
        self._loop.run_forever()
        self._transport.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def start(self) -> SipDevice:
        """Start the agent's thread; return once it listens."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the SIP device did not start")
        return self

    def close(self) -> None:
        """Stop the loop and wait for the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    @property
    def contact(self) -> str:
        """Our Contact: the GRUU once registered, with our capabilities."""
        uri = self.gruu or f"sip:{self.user}@{HOST}:{self.port};transport=udp"
        return f'<{uri}>;+org.linphone.specs="{SPECS}"'

    # ------------------------------------------------------------------ sending (any thread)

    def _headers(self, method: str, to: str, call_id: str, from_tag: str) -> list[tuple[str, str]]:
        with self._lock:
            self._cseq += 1
            cseq = self._cseq
        return [
            ("Via", f"SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport"),
            ("Max-Forwards", "70"),
            # Once registered, From is the GRUU, as a Linphone device sends to its rooms (the
            # conference server skips the device named in From when it forwards a message).
            ("From", f"<{self.gruu or self.aor}>;tag={from_tag}"),
            ("To", f"<{to}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]

    def request(self, method: str, uri: str, extra: list[tuple[str, str]], body: bytes = b"",
                *, to: str | None = None, timeout: float = 10.0) -> SipMessage:
        """Send a request through the proxy; return its final response."""
        call_id = uuid.uuid4().hex
        headers = self._headers(method, to or uri, call_id, uuid.uuid4().hex[:8]) + extra
        msg = SipMessage(f"{method} {uri} SIP/2.0", headers, body)
        future: Future[SipMessage] = Future()
        self._waiting[(call_id, method)] = future
        self._send(msg, self.proxy)
        return future.result(timeout)

    def register(self, timeout: float = 10.0) -> str:
        """REGISTER and adopt the pub-gruu the registrar hands out; return it (our device id)."""
        contact = (f'<sip:{self.user}@{HOST}:{self.port};transport=udp>;+sip.instance="<{self.instance}>"'
                   f';+org.linphone.specs="{SPECS}"')
        answer = self.request("REGISTER", f"sip:{self.domain}", [("Contact", contact), ("Expires", "3600"),
                                                                ("Supported", "gruu")], to=self.aor,
                              timeout=timeout)
        if answer.status != 200:
            raise RuntimeError(f"REGISTER got {answer.start}")
        gruu = _param(answer.get("Contact") or "", "pub-gruu")
        if not gruu:
            raise RuntimeError("the registrar gave no pub-gruu")
        self.gruu = gruu
        return gruu

    def subscribe_conference(self, room: str, timeout: float = 10.0) -> SipMessage:
        """SUBSCRIBE to the room's ``conference`` event, as a participant device does."""
        return self.request("SUBSCRIBE", room, [
            ("Contact", self.contact), ("Event", "conference"), ("Expires", "600"),
            ("Accept", "application/conference-info+xml"), ("Last-Notify-Version", "0"),
        ], timeout=timeout)

    def send_message(self, room: str, body: bytes, headers: dict[str, str], timeout: float = 10.0) -> int:
        """A MESSAGE to the chat room; returns the final status."""
        extra = [("Contact", self.contact), *headers.items()]
        return self.request("MESSAGE", room, extra, body, timeout=timeout).status

    def wait_for(self, method: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """Wait until ``count`` requests of ``method`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.received if r.method == method]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}: {len(got)} of {count} {method} within {timeout} s")
            time.sleep(0.02)

    def _send(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        self._log("out", msg)

        def go() -> None:
            assert self._transport is not None
            self._transport.sendto(msg.to_bytes(), addr)

        self._loop.call_soon_threadsafe(go)

    def _log(self, direction: str, msg: SipMessage) -> None:
        with self._lock:
            self.log.append({"t": round(time.time(), 3), "dir": direction, "start": msg.start,
                             "headers": [list(h) for h in msg.headers], "bytes": len(msg.body)})

    # ------------------------------------------------------------------ receiving (loop thread)

    def _on_message(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        self._log("in", msg)
        if not msg.is_request:
            if msg.status < 200:
                return
            future = self._waiting.pop((msg.get("Call-ID") or "", msg.method), None)
            if future is not None and not future.done():
                future.set_result(msg)
            return
        if msg.method == "ACK":
            self.received.append(Received("ACK", msg))
            return
        self.received.append(Received(msg.method, msg))
        extra = []
        if msg.method == "INVITE":
            extra = [("Contact", self.contact),
                     ("Supported", "gruu"), ("Allow", "INVITE, ACK, BYE, MESSAGE, NOTIFY, SUBSCRIBE")]
        self._answer(msg, 200, "Ok", extra, addr)

    def _answer(self, req: SipMessage, status: int, reason: str, extra: list[tuple[str, str]],
                addr: tuple[str, int]) -> None:
        keep = ("via", "from", "call-id", "cseq", "record-route")
        headers = [(k, v) for k, v in req.headers if k.lower() in keep]
        to = req.get("To") or ""
        if ";tag=" not in to:
            to += f";tag={uuid.uuid4().hex[:10]}"
        headers.append(("To", to))
        headers += extra
        # Responses go back where the request came from (the proxy: its Via is on top).
        self._send(SipMessage(f"SIP/2.0 {status} {reason}", headers), addr)


def room_of(received: Received) -> str:
    """The conference address a request from the room came from (its From URI)."""
    return _uri_of(received.message.get("From") or "")
