"""The application API: :class:`Agent`, a Linphone-compatible device for encrypted chat.

An agent registers one account (getting its GRUU, the lime device id), creates its lime user
on the first successful REGISTER as Linphone does, joins the chat rooms a conference server
invites it to (or creates them), and exchanges lime-encrypted messages and IMDNs in them::

    manager = pylime.Manager("bot.lime.sqlite3", transport=HttpsTransport())
    config = AgentConfig(aor="sip:bot@example.org", proxy="sip:example.org;transport=tls",
                         keyserver_url="https://lime.example.org/lime-server",
                         store_path="bot.sip.sqlite3", password="...")
    async with Agent(config, manager) as agent:
        async for event in agent.events():
            if isinstance(event, MessageReceived):
                await agent.send(event.room, "echo: " + event.text)

lime runs in one worker thread of the agent (its calls touch SQLite and, for encrypt, the key
server through the manager's blocking transport), one call at a time and in arrival order, so
the event loop keeps answering SIP meanwhile. The SIP pieces live in their own modules:
:mod:`~pylime.sip.message` (parse/serialise), :mod:`~pylime.sip.transport` (UDP/TCP/TLS),
:mod:`~pylime.sip.transaction`, :mod:`~pylime.sip.dialog`, :mod:`~pylime.sip.registration`,
:mod:`~pylime.sip.rooms` and :mod:`~pylime.sip.store`; this module only wires them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from pylime.errors import DecryptionError, LimeError
from pylime.linphone.address import normalize_device_id, parse_sip_uri, uri_only
from pylime.linphone.cpim import CpimMessage, parse_cpim
from pylime.linphone.envelope import parse_envelope
from pylime.linphone.errors import (
    EnvelopeError,
    InnerSenderMismatchError,
    InvalidDeviceIdError,
    LinphoneError,
    UnsafeSenderError,
)
from pylime.linphone.imdn import ImdnStatus, build_imdn_cpim, is_imdn, parse_imdn, parse_imdns
from pylime.linphone.messaging import LimeManager, decrypt_message, encrypt_message
from pylime.sip.dialog import ALLOW, Dialog, Endpoint
from pylime.sip.digest import DigestCredentials
from pylime.sip.errors import (
    AgentClosedError,
    MessageTooLargeError,
    SipError,
    SipParseError,
    SipRequestFailed,
    SipTimeoutError,
    SipTransportError,
    UnknownRoomError,
)
from pylime.sip.events import (
    Disconnected,
    Event,
    ImdnReceived,
    MessageReceived,
    Refusal,
    Registered,
    RequestRefused,
    RoomJoined,
    RoomLeft,
    RoomUpdated,
)
from pylime.sip.message import MAX_BODY_SIZE, BadInput, SipRequest, make_response, new_tag
from pylime.sip.registration import Registration
from pylime.sip.rooms import Room, parse_conference_info
from pylime.sip.store import InboxEntry, Store
from pylime.sip.transaction import ServerTransaction, TransactionLayer
from pylime.sip.transport import Flow, Transport, open_transport
from pylime.types import Curve, PeerStatus

__all__ = ["Agent", "AgentConfig", "AgentManager", "SentMessage"]

log = logging.getLogger("pylime.sip")
T = TypeVar("T")


class AgentManager(LimeManager, Protocol):
    """What the agent needs of a lime manager (Manager or ReferenceManager both fit)."""

    def is_user(self, device_id: str) -> bool:
        """Whether the local user exists."""
        ...

    def create_user(self, device_id: str, server_url: str, curve: Curve, opk_batch: int = ...) -> None:
        """Create and publish a local user."""
        ...

    def stale_sessions(self, device_id: str, peer_device_id: str) -> None:
        """Start a fresh session with that peer on the next message."""
        ...

    def update(self, opk_low_limit: int = ..., opk_batch: int = ...) -> None:
        """Refresh the signed prekey and top up one-time prekeys."""
        ...


@dataclass
class AgentConfig:
    """How an agent reaches its service.

    Args:
        aor: the account, ``sip:user@domain``.
        proxy: the outbound proxy as a SIP URI (``sip:host:port;transport=tls``) or ``host:port``.
        keyserver_url: the lime key server (``https://…/lime-server``).
        store_path: the agent's own SQLite file (instance id, rooms, inbox).
        password, username: digest credentials (username defaults to the AOR's user).
        transport: ``udp``, ``tcp`` or ``tls``; defaults to the proxy URI's ``transport``, else UDP.
        ca_file: CA to verify the proxy's TLS certificate with (system store when None).
        tls_server_name: the name to verify in the proxy's certificate (the proxy host by default).
        conference_factory: the factory URI to create rooms with (``sip:conference-factory@domain``).
        expires: the registration lifetime asked for.
        curve: the lime curve of the user created on first registration.
        trusted_sources: extra ``(host, port)`` allowed to send us requests over UDP besides the
            proxy (requests from anywhere else are refused with 403).
        max_body: the largest body accepted (413 beyond).
        keep_history: keep plaintexts in the store after handing them over.
        unregister_on_close: send REGISTER Expires: 0 when closing.
        t1: the SIP retransmission base timer (RFC 3261 T1).
    """

    aor: str
    proxy: str
    keyserver_url: str
    store_path: str | os.PathLike[str]
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    transport: str | None = None
    ca_file: str | os.PathLike[str] | None = None
    tls_server_name: str | None = None
    conference_factory: str | None = None
    expires: int = 3600
    curve: Curve = Curve.C25519
    trusted_sources: Sequence[tuple[str, int]] = ()
    max_body: int = MAX_BODY_SIZE
    keep_history: bool = False
    unregister_on_close: bool = True
    display_name: str = ""
    t1: float = 0.5

    def proxy_address(self) -> tuple[str, str, int]:
        """(transport, host, port) of the outbound proxy."""
        text = self.proxy.strip()
        if text.startswith(("sip:", "sips:")):
            uri = parse_sip_uri(text)
            kind = self.transport or uri.param("transport") or ("tls" if uri.scheme == "sips" else "udp")
            default = 5061 if kind.lower() == "tls" else 5060
            return kind.lower(), uri.host, uri.port or default
        host, _, port = text.rpartition(":")
        kind = (self.transport or "udp").lower()
        return kind, host or text, int(port) if port.isdigit() else (5061 if kind == "tls" else 5060)


@dataclass(frozen=True)
class SentMessage:
    """A message the room accepted (200): its IMDN id, for matching notifications."""

    room: str
    message_id: str
    devices: tuple[str, ...]


@dataclass
class _Subscription:
    dialog: Dialog | None = None
    expires_at: float = 0.0


def _hostport(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


class Agent:
    """One Linphone-compatible device: register, rooms, encrypted messages and IMDNs.

    Args:
        config: where and who.
        manager: a lime manager holding (or about to hold) our user, or a zero-argument
            factory returning one (called in the agent's lime thread, closed by :meth:`close`).
    """

    def __init__(self, config: AgentConfig, manager: AgentManager | Callable[[], AgentManager]) -> None:
        self.config = config
        self._manager_arg = manager
        self._manager: AgentManager | None = None
        self._owns_manager = not hasattr(manager, "encrypt")
        self._lime = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pylime-sip-lime")
        self.store: Store | None = None
        self.rooms: dict[str, Room] = {}
        self._subs: dict[str, _Subscription] = {}
        self._invites: dict[str, Dialog] = {}
        self._events: asyncio.Queue[Event | InboxEntry] = asyncio.Queue()
        self._incoming: asyncio.Queue[ServerTransaction] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._room_changed = asyncio.Event()
        self._closed = False
        self._started = False
        self.transport: Transport | None = None
        self.layer: TransactionLayer | None = None
        self.endpoint: Endpoint | None = None
        self.registration: Registration | None = None
        self.device_id: str | None = None
        self._trusted: set[tuple[str, int]] = set()
        self._last_status: int | None = None  # the sender's lime status from the last _decrypt

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the lime thread (one call at a time, in submission order)."""
        return await asyncio.get_running_loop().run_in_executor(self._lime, fn, *args)

    @property
    def manager(self) -> AgentManager:
        """The lime manager (available once started)."""
        if self._manager is None:
            raise AgentClosedError("the agent is not started")
        return self._manager

    async def start(self) -> None:
        """Connect, register, create the lime user if needed, and rejoin the stored rooms.

        Raises:
            RegistrationError, SipTransportError, SipTimeoutError: the service is unreachable or
                refuses us; KeyServerError: the lime user could not be created.
        """
        if self._closed:
            raise AgentClosedError("the agent was closed")
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        cfg = self.config
        store = await self._run(functools.partial(Store, cfg.store_path, keep_history=cfg.keep_history))
        self.store = store
        self._manager = (self._manager_arg if not self._owns_manager  # type: ignore[assignment]
                         else await self._run(self._manager_arg))  # type: ignore[arg-type]
        instance = await self._run(store.instance)
        for room in await self._run(store.rooms):
            self.rooms[room.address] = room
        await self._connect()
        assert self.endpoint is not None
        credentials = None
        if cfg.password is not None:
            credentials = DigestCredentials(cfg.username or self.endpoint.user, cfg.password)
        self.registration = Registration(self.endpoint, instance, credentials=credentials, expires=cfg.expires)
        await self._register()
        for entry in await self._run(store.pending):
            self._events.put_nowait(entry)
        self._spawn(self._process_incoming())
        for address in list(self.rooms):
            self._spawn(self._subscribe(address))
        for due in await self._run(store.imdns_due):
            self._spawn(self._send_owed_imdn(*due))

    async def _connect(self) -> None:
        cfg = self.config
        kind, host, port = cfg.proxy_address()
        tls = None
        if kind == "tls":
            tls = ssl.create_default_context(cafile=os.fspath(cfg.ca_file) if cfg.ca_file else None)
        transport = await open_transport(kind, (host, port), tls=tls, server_hostname=cfg.tls_server_name or host,
                                         max_body=cfg.max_body)
        self._trusted = {(host if host != "localhost" else "127.0.0.1", port), *cfg.trusted_sources}
        if self.layer is None:
            self.layer = TransactionLayer(transport, self._on_request, t1=cfg.t1)
            self.endpoint = Endpoint(self.layer, uri_only(cfg.aor), user_agent="pylime (Lime)",
                                     display=cfg.display_name)
        else:
            self.layer.transport = transport
        transport.on_message = self.layer.receive
        transport.on_bad_input = self._on_bad_input
        transport.on_lost = self._on_lost
        self.transport = transport

    async def _register(self) -> None:
        assert self.registration is not None and self.endpoint is not None
        result = await self.registration.register()
        first = self.device_id is None
        self.device_id = result.gruu
        self.endpoint.gruu = result.gruu
        if first and not await self._run(self.manager.is_user, result.gruu):
            # As liblinphone 5.1.65: the lime user is created on the first REGISTER 200.
            await self._run(self.manager.create_user, result.gruu, self.config.keyserver_url, self.config.curve)
        self._emit(Registered(result.gruu, result.expires))
        self._spawn(self._refresh_registration(result.expires))

    async def _refresh_registration(self, expires: int) -> None:
        await asyncio.sleep(max(1.0, min(expires * 0.9, expires - 5)))
        while not self._closed:
            try:
                await self._register()
                return
            except (SipError, LimeError) as exc:
                log.warning("re-REGISTER failed (%s); retrying in 10 s", type(exc).__name__)
                self._emit(Disconnected(f"re-REGISTER failed: {type(exc).__name__}"))
                await asyncio.sleep(10)

    def _on_lost(self, error: BaseException | None) -> None:
        if self._closed:
            return
        reason = f"connection to the proxy lost ({type(error).__name__ if error else 'closed'})"
        self._emit(Disconnected(reason))
        if self.layer is not None:
            self.layer.fail_all(SipTransportError(reason))
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.2
        while not self._closed:
            try:
                await self._connect()
                await self._register()
                for address in list(self.rooms):
                    self._subs.pop(address, None)
                    self._spawn(self._subscribe(address))
                return
            except (SipError, OSError) as exc:
                log.warning("reconnecting to the proxy failed (%s)", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        """Unregister (if configured), stop every task, close the transport and the store."""
        if self._closed:
            return
        self._closed = True
        if self.registration is not None and self.device_id is not None and self.config.unregister_on_close:
            with contextlib.suppress(SipError, OSError):
                await asyncio.wait_for(self.registration.unregister(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.layer is not None:
            await self.layer.close()
        if self.transport is not None:
            await self.transport.close()
        if self._owns_manager and self._manager is not None:
            close = getattr(self._manager, "close", None)
            if close is not None:
                await self._run(close)
        if self.store is not None:
            await self._run(self.store.close)
        self._lime.shutdown(wait=True)
        self._events.put_nowait(_CLOSED)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, event: Event) -> None:
        self._events.put_nowait(event)

    # -- the application's side ------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order; messages and notifications exactly once across restarts."""
        while True:
            item = await self._events.get()
            if item is _CLOSED:
                return
            if isinstance(item, InboxEntry):
                events = self._inbox_events(item)
                assert self.store is not None
                await self._run(self.store.mark_handed, item.seq)
                for event in events:
                    yield event
                continue
            assert isinstance(item, Event)
            yield item

    def _inbox_events(self, entry: InboxEntry) -> list[Event]:
        """The application's view of an inbox entry (an aggregated IMDN gives several events)."""
        try:
            cpim = parse_cpim(entry.cpim)
        except LinphoneError:
            return []
        if entry.kind == "imdn":
            try:
                imdns = parse_imdns(cpim)
            except LinphoneError:
                return []
            return [ImdnReceived(entry.room, entry.sender, imdn.message_id, imdn.status, imdn.reason_code,
                                 entry.seq, encrypted=entry.message_id != "clear") for imdn in imdns]
        disposition = (cpim.header("imdn.Disposition-Notification") or "").lower()
        status = PeerStatus(entry.status) if entry.status is not None else PeerStatus.UNKNOWN
        return [MessageReceived(entry.room, entry.sender, entry.message_id, cpim.content_type or "text/plain",
                                cpim.content.decode("utf-8", "replace"), entry.seq, sender_status=status,
                                wants_display_notification="display" in disposition)]

    async def wait_room(self, address: str | None = None, *, timeout: float = 15.0,
                        devices: int = 1) -> Room:
        """Wait until a room (any, when ``address`` is None) knows at least ``devices`` devices."""
        deadline = time.monotonic() + timeout
        while True:
            for room in self.rooms.values():
                if (address is None or room.address == address) and room.known \
                        and len(room.recipients(self.device_id or "")) >= devices:
                    return room
            left = deadline - time.monotonic()
            if left <= 0:
                raise SipTimeoutError(f"no room with {devices} other device(s) within {timeout} s")
            self._room_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room_changed.wait(), left)

    async def send(self, room: str, text: str | CpimMessage, *, timeout: float = 15.0) -> SentMessage:
        """Encrypt ``text`` to every device of ``room`` and send it to the room; wait for its 200.

        Raises:
            UnknownRoomError: we are not in that room.
            SipRequestFailed: the room answered an error; SipTimeoutError: it did not answer.
            LinphoneError / LimeError: encryption refused (unsafe device, no key bundle...).
        """
        address = self._room_address(room)
        if not self.rooms[address].known:
            await self.wait_room(address, timeout=timeout, devices=0)
        async with self._send_lock:  # keeps a burst in order on the wire
            return await self._send_cpim(address, text, timeout=timeout)

    async def _send_cpim(self, address: str, text: str | CpimMessage, *, timeout: float,
                         extra: Sequence[tuple[str, str]] = ()) -> SentMessage:
        assert self.device_id is not None and self.endpoint is not None
        devices = self.rooms[address].recipients(self.device_id)
        out = await self._run(encrypt_message, self.manager, self.device_id, address, devices, text)
        headers = [("Contact", self.endpoint.contact()), *out.headers.items(), *extra]
        request = self.endpoint.request("MESSAGE", address, to=f"<{address}>", extra=headers, body=out.body.body)
        response = await self.endpoint.send(request, timeout=timeout)
        if response.status >= 300:
            raise SipRequestFailed(f"the room answered {response.status} {response.reason}",
                                   response.status, response.reason)
        return SentMessage(address, out.message_id, tuple(d for d, _ in out.statuses))

    async def send_direct(self, device_id: str, text: str | CpimMessage, *, timeout: float = 15.0) -> SentMessage:
        """Send to one device without a conference server (pylime to pylime; Linphone 5.1.65 only
        encrypts in conference rooms). The conversation is the recipient's address.

        Raises:
            InvalidDeviceIdError: ``device_id`` is not a GRUU; SipRequestFailed, SipTimeoutError.
        """
        assert self.device_id is not None and self.endpoint is not None
        target = normalize_device_id(device_id)
        async with self._send_lock:
            out = await self._run(encrypt_message, self.manager, self.device_id, target, [target], text)
            extra = [("Contact", self.endpoint.contact()), *out.headers.items()]
            request = self.endpoint.request("MESSAGE", target, to=f"<{target}>", extra=extra, body=out.body.body)
            response = await self.endpoint.send(request, timeout=timeout)
        if response.status >= 300:
            raise SipRequestFailed(f"{target} answered {response.status} {response.reason}",
                                   response.status, response.reason)
        return SentMessage(target, out.message_id, (target,))

    async def mark_displayed(self, message: MessageReceived) -> None:
        """Tell the sender (through the room) that ``message`` was displayed, if it asked."""
        if message.message_id and message.wants_display_notification:
            await self._send_imdn(message.room, message.message_id, ImdnStatus.DISPLAYED)

    async def _send_imdn(self, room: str, message_id: str, status: ImdnStatus) -> None:
        assert self.device_id is not None
        cpim = build_imdn_cpim(self.device_id, room, message_id, status)
        async with self._send_lock:
            await self._send_cpim(room, cpim, timeout=15.0, extra=[("Priority", "non-urgent")])

    async def _send_owed_imdn(self, seq: int, room: str, sender: str, message_id: str, status: str) -> None:
        if room not in self.rooms:
            return
        for attempt in range(4):  # a busy room answers 503: try again, then keep it owed
            try:
                await self.wait_room(room, timeout=15.0, devices=0)
                await self._send_imdn(room, message_id, ImdnStatus(status))
                break
            except (SipError, LimeError, ValueError) as exc:
                retry = isinstance(exc, SipTimeoutError | SipTransportError) or (
                    isinstance(exc, SipRequestFailed) and exc.status in (408, 480, 500, 503))
                if not retry or attempt == 3:
                    log.warning("a delivery notification could not be sent (%s); kept for the next start",
                                type(exc).__name__)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        assert self.store is not None
        await self._run(self.store.imdn_sent, seq)

    def _room_address(self, room: str) -> str:
        address = uri_only(room)
        if address not in self.rooms:
            raise UnknownRoomError(f"not in room {address}")
        return address

    async def create_room(self, participants: Sequence[str], *, subject: str = "pylime",
                          one_to_one: bool = False, timeout: float = 15.0) -> Room:
        """Create an encrypted room on the conference factory and wait for its device list.

        Raises:
            SipRequestFailed: the factory or the room refused; SipError: no conference factory.
        """
        factory = self.config.conference_factory
        if not factory:
            raise SipRequestFailed("no conference_factory configured", 0)
        assert self.endpoint is not None
        body = ('<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n'
                '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>'
                + "".join(f'<entry uri="{_xml_attr(uri_only(p))}"/>' for p in participants)
                + "</list></resource-lists>").encode()
        extra = [("Contact", self.endpoint.contact("text")), ("Subject", subject),
                 ("Content-Type", "application/resource-lists+xml"),
                 ("Content-Disposition", "recipient-list"), ("Require", "recipient-list-invite"),
                 ("End-To-End-Encrypted", "true"), ("Supported", "gruu"), ("Allow", ALLOW)]
        if one_to_one:
            extra.append(("One-To-One-Chat-Room", "true"))
        target = factory
        for _ in range(3):  # the factory answers 302 with the room's address
            invite = self.endpoint.request("INVITE", target, to=f"<{target}>", from_uri=self.endpoint.aor,
                                           extra=extra, body=body)
            response = await self.endpoint.send(invite, timeout=timeout)
            if response.status in (301, 302) and response.get("Contact"):
                target = response.contacts[0].uri
                continue
            if response.status >= 300:
                raise SipRequestFailed(f"creating the room got {response.status} {response.reason}",
                                       response.status, response.reason)
            dialog = Dialog.from_uac(invite, response)
            ack = dialog.request(self.endpoint, "ACK", cseq=invite.cseq.number)
            assert self.layer is not None
            await self.layer.send_ack(invite, response, ack)
            address = uri_only(target)
            self._invites[address] = dialog
            await self._joined(address, subject, one_to_one)
            return await self.wait_room(address, timeout=timeout, devices=0)
        raise SipRequestFailed("the conference factory redirected too often", 302)

    async def _joined(self, address: str, subject: str, one_to_one: bool) -> None:
        if address not in self.rooms:
            room = Room(address, subject=subject, one_to_one=one_to_one)
            self.rooms[address] = room
            assert self.store is not None
            await self._run(self.store.save_room, room)
            self._emit(RoomJoined(address, subject, one_to_one))
        self._spawn(self._subscribe(address))

    # -- conference subscription -----------------------------------------------------------

    async def _subscribe(self, address: str) -> None:
        """SUBSCRIBE to the room's conference event and keep the subscription refreshed."""
        assert self.endpoint is not None
        sub = self._subs.setdefault(address, _Subscription())
        while not self._closed and address in self.rooms:
            extra = [("Contact", self.endpoint.contact()), ("Event", "conference"), ("Expires", "600"),
                     ("Accept", "application/conference-info+xml"),
                     ("Last-Notify-Version", str(self.rooms[address].version if sub.dialog else 0))]
            if sub.dialog is None:
                request = self.endpoint.request("SUBSCRIBE", address, to=f"<{address}>", extra=extra)
            else:
                request = sub.dialog.request(self.endpoint, "SUBSCRIBE", extra=extra)
            try:
                response = await self.endpoint.send(request)
            except SipError as exc:
                log.warning("SUBSCRIBE to a room failed (%s)", type(exc).__name__)
                await asyncio.sleep(5)
                continue
            if response.status >= 300:
                if sub.dialog is not None:
                    sub.dialog = None  # the subscription is gone (481): start a new one
                    continue
                log.warning("the room refused our SUBSCRIBE with %d", response.status)
                await asyncio.sleep(30)
                continue
            if sub.dialog is None:
                sub.dialog = Dialog.from_uac(request, response)
            granted = response.get("Expires") or "600"
            await asyncio.sleep(max(5.0, (int(granted) if granted.isdigit() else 600) * 0.9))

    # -- incoming requests -----------------------------------------------------------------

    def _on_bad_input(self, bad: BadInput, flow: Flow) -> None:
        head = bad.head
        too_large = isinstance(bad.error, MessageTooLargeError)
        status = 0
        if isinstance(head, SipRequest) and head.method != "ACK" and self.layer is not None:
            status = 413 if too_large else 400
            response = make_response(head, status, None if too_large else f"Bad Request ({_short(bad.error)})",
                                     to_tag=new_tag())
            self._spawn(self._quiet(self.layer.transport.send(response, flow.remote)))
        method = head.method if isinstance(head, SipRequest) else ""
        self._emit(RequestRefused(method, status, Refusal.TOO_LARGE if too_large else Refusal.MALFORMED,
                                  str(bad.error), _hostport(flow.remote)))

    async def _quiet(self, coro: Any) -> None:
        with contextlib.suppress(SipError, OSError):
            await coro

    def _refuse(self, tx: ServerTransaction, status: int, reason: Refusal, detail: str, *,
                room: str | None = None, sender: str | None = None, phrase: str | None = None) -> None:
        self._spawn(self._quiet(tx.respond(status, phrase, to_tag=new_tag())))
        self._emit(RequestRefused(tx.request.method, status, reason, detail, _hostport(tx.flow.remote),
                                  room, sender))

    def _on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        if tx.flow.transport == "UDP" and tx.flow.remote not in self._trusted:
            self._refuse(tx, 403, Refusal.UNTRUSTED_SOURCE,
                         "requests are accepted from the outbound proxy only")
            return
        method = request.method
        if method == "MESSAGE":
            self._incoming.put_nowait(tx)
        elif method == "INVITE":
            self._spawn(self._on_invite(tx))
        elif method == "NOTIFY":
            self._spawn(self._on_notify(tx))
        elif method == "BYE":
            self._on_bye(tx)
        elif method in ("OPTIONS", "CANCEL"):
            self._spawn(self._quiet(tx.respond(200, to_tag=new_tag(), extra=[("Allow", ALLOW)])))
        elif method == "SUBSCRIBE":
            self._refuse(tx, 489, Refusal.NOT_ALLOWED, "no event package is served here")
        else:
            self._spawn(self._quiet(tx.respond(405, to_tag=new_tag(), extra=[("Allow", ALLOW)])))
            self._emit(RequestRefused(method, 405, Refusal.NOT_ALLOWED, f"method {method[:20]} not allowed",
                                      _hostport(tx.flow.remote)))

    async def _on_invite(self, tx: ServerTransaction) -> None:
        request = tx.request
        assert self.endpoint is not None
        contact = request.contacts[0] if request.get("Contact") else None
        is_focus = contact is not None and contact.param("isfocus") is not None
        if not is_focus:
            self._refuse(tx, 488, Refusal.NOT_ALLOWED, "this agent takes chat-room invitations only")
            return
        try:
            address = uri_only(request.from_.uri)
            parse_sip_uri(address)
        except (SipParseError, InvalidDeviceIdError):
            self._refuse(tx, 400, Refusal.MALFORMED, "the room's From is not a SIP URI")
            return
        tag = request.to.tag or new_tag()
        await tx.respond(200, to_tag=tag, extra=[("Contact", self.endpoint.contact()),
                                                 ("Supported", "gruu"), ("Allow", ALLOW)])
        self._invites[address] = Dialog.from_uas(request, tag)
        one_to_one = (request.get("One-To-One-Chat-Room") or "").lower() == "true"
        await self._joined(address, request.get("Subject") or "", one_to_one)

    def _on_bye(self, tx: ServerTransaction) -> None:
        address = uri_only(tx.request.from_.uri)
        self._spawn(self._quiet(tx.respond(200, to_tag=new_tag())))
        if self.rooms.pop(address, None) is not None:
            self._subs.pop(address, None)
            self._invites.pop(address, None)
            assert self.store is not None
            self._spawn(self._run(self.store.drop_room, address))
            self._emit(RoomLeft(address))

    async def _on_notify(self, tx: ServerTransaction) -> None:
        request = tx.request
        address = uri_only(request.from_.uri)
        room = self.rooms.get(address)
        if (request.get("Event") or "").split(";")[0].strip() != "conference":
            self._refuse(tx, 489, Refusal.NOT_ALLOWED, "only the conference event is subscribed to")
            return
        if room is None:
            self._refuse(tx, 481, Refusal.UNKNOWN_ROOM, "a NOTIFY for a room we are not in", room=address)
            return
        body = request.body
        try:
            if (request.get("Content-Encoding") or "").lower() == "deflate":
                body = _inflate(body, self.config.max_body)
            info = parse_conference_info(body) if body else None
        except SipParseError as exc:
            self._refuse(tx, 400, Refusal.MALFORMED, str(exc), room=address)
            return
        await tx.respond(200, to_tag=request.to.tag or new_tag())
        if info is not None and room.apply(info):
            assert self.store is not None
            await self._run(self.store.save_room, room)
            self._room_changed.set()
            self._emit(RoomUpdated(address, tuple(room.all_devices())))

    # -- incoming messages, one at a time ----------------------------------------------------

    async def _process_incoming(self) -> None:
        while True:
            tx = await self._incoming.get()
            try:
                await self._on_message(tx)
            except Exception as exc:  # one bad message never stops the agent
                log.exception("handling a MESSAGE failed")
                self._refuse(tx, 500, Refusal.MALFORMED, f"internal error: {type(exc).__name__}")

    async def _on_message(self, tx: ServerTransaction) -> None:
        request = tx.request
        assert self.store is not None and self.device_id is not None
        txn = f"{request.call_id}|{request.cseq.number}|{request.from_.tag or ''}"
        earlier = await self._run(self.store.answer_for, txn)
        if earlier is not None:  # handled before a restart: same answer, nothing handed over again
            await tx.respond(earlier, to_tag=new_tag())
            return
        from_uri = uri_only(request.from_.uri)
        room = self.rooms.get(from_uri)
        session_mode = (request.get("Session-mode") or "").lower() == "true"
        content_type = (request.get("Content-Type") or "").split(";")[0].strip().lower()
        if room is None:
            if session_mode or content_type != "multipart/encrypted":
                await self._record_refusal(tx, txn, from_uri, 488, Refusal.UNKNOWN_ROOM,
                                           "a message from a room we are not in")
                return
            conversation = uri_only(request.to.uri)  # a direct message: the conversation is us
            try:
                expected_sender = normalize_device_id(from_uri)
            except InvalidDeviceIdError:
                await self._record_refusal(tx, txn, from_uri, 488, Refusal.SPOOFED_SENDER,
                                           "a direct message whose From is not a device GRUU")
                return
        else:
            conversation, expected_sender = room.address, None
        if content_type in ("message/cpim", "text/plain"):
            await self._clear_message(tx, txn, conversation, room)
            return
        outcome = await self._run(self._decrypt, request, conversation, room, expected_sender)
        status, refusal, detail, sender, message_id, cpim = outcome
        peer_status = self._last_status
        if status != 200:
            assert refusal is not None
            await self._record_refusal(tx, txn, conversation, status, refusal, detail, sender=sender)
            if refusal is Refusal.UNDECRYPTABLE and room is not None and message_id:
                self._spawn(self._quiet(self._send_failed_imdn(conversation, message_id)))
            return
        assert sender is not None and cpim is not None
        duplicate = bool(message_id) and await self._run(self.store.seen, sender, message_id or "")
        kind = "imdn" if is_imdn(cpim) else "message"
        owed = None
        disposition = (cpim.header("imdn.Disposition-Notification") or "").lower()
        if kind == "message" and message_id and "positive-delivery" in disposition and room is not None:
            owed = ImdnStatus.DELIVERED.value
        seq = await self._run(functools.partial(
            self.store.record, txn, conversation, 200, sender=sender, message_id=message_id, kind=kind,
            cpim=cpim.to_bytes(), imdn_due=None if duplicate else owed, hand_over=not duplicate,
            status=peer_status))
        await tx.respond(200, to_tag=new_tag())
        if duplicate:
            return
        entry = await self._run(self.store.entry, seq)
        if entry is not None:
            self._events.put_nowait(entry)
        if owed is not None:
            self._spawn(self._send_owed_imdn(seq, conversation, sender, message_id or "", owed))

    def _decrypt(self, request: SipRequest, conversation: str, room: Room | None,
                 expected_sender: str | None) -> tuple[int, Refusal | None, str, str | None, str | None,
                                                      CpimMessage | None]:
        """In the lime thread: the envelope checks, then lime; (status, refusal, detail, sender, id, cpim)."""
        assert self.device_id is not None
        self._last_status = None
        headers = {k: v for k, v in request.headers if k.lower() in ("content-type", "content-encoding")}
        try:
            envelope = parse_envelope(headers.get("Content-Type", ""), request.body,
                                      headers.get("Content-Encoding"))
        except EnvelopeError as exc:
            return 488, Refusal.UNDECRYPTABLE, f"envelope refused: {type(exc).__name__}", None, None, None
        sender, message_id = envelope.sender, envelope.message_id
        if expected_sender is not None and sender != expected_sender:
            return 488, Refusal.SPOOFED_SENDER, "the envelope's sender is not the SIP From", sender, message_id, None
        if room is not None and room.known and not room.has_device(sender):
            return (403, Refusal.NOT_A_PARTICIPANT, "the sender device is not a participant of the room",
                    sender, message_id, None)
        if sender == self.device_id:
            return 488, Refusal.SPOOFED_SENDER, "a message claiming to come from this device", sender, \
                message_id, None
        if message_id and self.store is not None and self.store.seen(sender, message_id):
            # Re-sent under a new transaction: accept it again without decrypting (lime would
            # refuse the replay) and without handing it over twice.
            return 200, None, "", sender, message_id, CpimMessage((("From", f"<{sender}>"),
                                                                  ("imdn.Message-ID", message_id)), (), b"")
        try:
            msg = decrypt_message(self.manager, self.device_id, request.body, headers, room=conversation)
        except InnerSenderMismatchError:
            return 488, Refusal.SPOOFED_SENDER, "the encrypted CPIM From is not the sender", sender, message_id, None
        except UnsafeSenderError:
            return 488, Refusal.UNSAFE_SENDER, "the sender device is marked unsafe", sender, message_id, None
        except (EnvelopeError, DecryptionError) as exc:
            return 488, Refusal.UNDECRYPTABLE, f"lime could not decrypt: {type(exc).__name__}", sender, \
                message_id, None
        self._last_status = int(msg.status)  # read back on the loop right after this call
        return 200, None, "", sender, msg.message_id or message_id, msg.cpim

    async def _record_refusal(self, tx: ServerTransaction, txn: str, room: str, status: int, reason: Refusal,
                              detail: str, *, sender: str | None = None) -> None:
        assert self.store is not None
        await self._run(functools.partial(self.store.record, txn, room, status, sender=sender))
        self._refuse(tx, status, reason, detail, room=room, sender=sender)

    async def _clear_message(self, tx: ServerTransaction, txn: str, conversation: str,
                             room: Room | None) -> None:
        """Cleartext in an encrypted room: only a failed IMDN is accepted (as 5.1.65), else 415."""
        assert self.store is not None and self.device_id is not None
        request = tx.request
        try:
            cpim = parse_cpim(request.body) if request.body.startswith(b"From") else None
            imdn = parse_imdn(cpim.content) if cpim is not None and is_imdn(cpim) else None
        except LinphoneError:
            cpim = imdn = None
        if cpim is None or imdn is None or imdn.status not in (ImdnStatus.FAILED, ImdnStatus.ERROR) \
                or room is None:
            await self._record_refusal(tx, txn, conversation, 415, Refusal.UNENCRYPTED,
                                       "unencrypted content other than an error IMDN")
            return
        try:
            sender = normalize_device_id(cpim.sender or "")
        except InvalidDeviceIdError:
            await self._record_refusal(tx, txn, conversation, 488, Refusal.SPOOFED_SENDER,
                                       "an error IMDN without a device sender")
            return
        if room.known and not room.has_device(sender):
            await self._record_refusal(tx, txn, conversation, 403, Refusal.NOT_A_PARTICIPANT,
                                       "an error IMDN from a device not in the room", sender=sender)
            return
        # As Linphone: a peer that could not decrypt gets a fresh X3DH session next time.
        with contextlib.suppress(LimeError):
            await self._run(self.manager.stale_sessions, self.device_id, sender)
        seq = await self._run(functools.partial(self.store.record, txn, conversation, 200, sender=sender,
                                                message_id="clear", kind="imdn", cpim=cpim.to_bytes()))
        await tx.respond(200, to_tag=new_tag())
        entry = await self._run(self.store.entry, seq)
        if entry is not None:
            self._events.put_nowait(entry)

    async def _send_failed_imdn(self, room: str, message_id: str) -> None:
        """The clear-text failed IMDN (reason 488) 5.1.65 sends for a message it could not decrypt."""
        assert self.endpoint is not None and self.device_id is not None
        cpim = build_imdn_cpim(self.device_id, room, message_id, ImdnStatus.FAILED, reason_code=488,
                               reason="Not acceptable here")
        extra = [("Contact", self.endpoint.contact()), ("Content-Type", "message/cpim"), ("Priority", "non-urgent")]
        request = self.endpoint.request("MESSAGE", room, to=f"<{room}>", extra=extra, body=cpim.to_bytes())
        await self.endpoint.send(request)


_CLOSED: Any = object()


def _inflate(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise SipParseError("a deflate body that does not inflate") from exc
    if len(out) > limit:
        raise MessageTooLargeError("an inflated body exceeds the limit")
    return out


def _xml_attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _short(error: BaseException) -> str:
    return str(error).replace("\r", " ").replace("\n", " ")[:80]

