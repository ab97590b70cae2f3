"""SIP transactions (RFC 3261 §17): retransmissions, matching, and absorbing duplicates.

Client side: :meth:`TransactionLayer.request` sends a request, retransmits it over UDP
(Timer A/E, doubling from T1, capped at T2 for non-INVITE), ignores provisional answers, sends
the ACK of a non-2xx INVITE answer itself, and gives up after Timer F/B (64·T1) with
:class:`~pylime.sip.errors.SipTimeoutError`. Server side: every new request becomes a
:class:`ServerTransaction` handed to the owner; a retransmitted request gets the last answer
again (or nothing yet, while the owner is still working), and is never handed over twice; a
2xx to an INVITE is retransmitted over UDP until its ACK arrives (§13.3.1.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from pylime.sip.errors import SipParseError, SipTimeoutError, SipTransportError
from pylime.sip.message import SipRequest, SipResponse, make_response
from pylime.sip.transport import Flow, Transport

__all__ = ["T1", "T2", "ServerTransaction", "TransactionLayer"]

log = logging.getLogger("pylime.sip")

T1 = 0.5
T2 = 4.0


def _server_key(request: SipRequest) -> tuple[str, ...]:
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    if via.branch.startswith("z9hG4bK"):
        return (via.branch, f"{via.host}:{via.port}", method)
    # An RFC 2543 peer: match on the dialog identifiers and CSeq instead (§17.2.3).
    return (request.call_id, str(request.cseq.number), request.from_.tag or "", method)


class ServerTransaction:
    """One received request waiting for (or holding) its final answer."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, flow: Flow) -> None:
        self.layer = layer
        self.request = request
        self.flow = flow
        self.last: SipResponse | None = None
        self.created = time.monotonic()
        self._retransmit: asyncio.Task[None] | None = None

    @property
    def answered(self) -> bool:
        """Whether a final answer was sent."""
        return self.last is not None and self.last.status >= 200

    async def respond(self, status: int, reason: str | None = None, *, to_tag: str | None = None,
                      extra: Iterable[tuple[str, str]] = (), body: bytes = b"") -> SipResponse:
        """Build and send the answer (a second final answer is ignored: the first one stands)."""
        response = make_response(self.request, status, reason, to_tag=to_tag, extra=extra)
        response.body = body
        await self.send(response)
        return response

    async def send(self, response: SipResponse) -> None:
        """Send an answer built by the caller."""
        if self.answered:
            return
        self.last = response
        with contextlib.suppress(SipTransportError):
            await self.layer.transport.send(response, self.flow.remote)
        if (self.request.method == "INVITE" and 200 <= response.status < 300
                and not self.layer.transport.reliable):
            self._retransmit = asyncio.create_task(self._retransmit_2xx(response))

    async def _retransmit_2xx(self, response: SipResponse) -> None:
        delay = T1
        deadline = time.monotonic() + 64 * T1
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            with contextlib.suppress(SipTransportError):
                await self.layer.transport.send(response, self.flow.remote)
            delay = min(2 * delay, T2)

    def acked(self) -> None:
        """The ACK arrived: stop retransmitting the 2xx."""
        if self._retransmit is not None:
            self._retransmit.cancel()


class _Client:
    def __init__(self, request: SipRequest) -> None:
        self.request = request
        self.future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.provisional = False


class TransactionLayer:
    """Client and server transactions over one transport (replaceable after a reconnect).

    Args:
        transport: the flow to the proxy.
        on_request: called with each new :class:`ServerTransaction` (never with a duplicate).
        on_ack: called with an ACK that matches no transaction (the ACK of a 2xx we sent).
    """

    def __init__(self, transport: Transport, on_request: Callable[[ServerTransaction], None],
                 *, t1: float = T1) -> None:
        self.transport = transport
        self.on_request = on_request
        self.t1 = t1
        self._clients: dict[tuple[str, str], _Client] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._acks: dict[tuple[str, int], tuple[float, SipRequest]] = {}  # ACKs of 2xx, to resend

    # -- client side -----------------------------------------------------------------------

    async def request(self, request: SipRequest, *, timeout: float | None = None) -> SipResponse:
        """Send ``request`` and return its final answer.

        Raises:
            SipTimeoutError: no final answer within Timer F (64·T1), or ``timeout``.
            SipTransportError: the transport failed.
        """
        key = (request.vias[0].branch, request.method)
        client = _Client(request)
        self._clients[key] = client
        limit = 64 * self.t1 if timeout is None else timeout
        try:
            await self.transport.send(request)
            if self.transport.reliable:
                return await asyncio.wait_for(asyncio.shield(client.future), limit)
            return await self._retransmitting(client, limit)
        except TimeoutError:
            raise SipTimeoutError(f"no final answer to {request.method} {request.uri} within "
                                  f"{limit:.0f} s") from None
        finally:
            self._clients.pop(key, None)

    async def _retransmitting(self, client: _Client, limit: float) -> SipResponse:
        deadline = time.monotonic() + limit
        delay = self.t1
        invite = client.request.method == "INVITE"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait([client.future], timeout=min(delay, left))
            if done:
                return client.future.result()
            if invite and client.provisional:
                continue  # a provisional answer stops INVITE retransmissions (Timer A)
            await self.transport.send(client.request)
            delay = 2 * delay if invite else min(2 * delay, T2)

    async def send_ack(self, invite: SipRequest, response: SipResponse, ack: SipRequest) -> None:
        """Send the ACK of a 2xx (built by the dialog) and resend it if the 2xx comes again."""
        self._acks[(invite.call_id, invite.cseq.number)] = (time.monotonic(), ack)
        await self.transport.send(ack)

    def _non_2xx_ack(self, invite: SipRequest, response: SipResponse) -> SipRequest:
        """The ACK the transaction sends for a final non-2xx answer (§17.1.1.3)."""
        headers = [("Via", invite.get_all("Via")[0])]
        headers += [(k, v) for k, v in invite.headers if k.lower() in ("from", "call-id", "route")]
        headers.append(("To", response.get("To") or ""))
        headers.append(("CSeq", f"{invite.cseq.number} ACK"))
        headers.append(("Max-Forwards", "70"))
        return SipRequest(headers=headers, method="ACK", uri=invite.uri)

    def _on_response(self, response: SipResponse) -> None:
        try:
            key = (response.vias[0].branch, response.cseq.method)
        except (SipParseError, IndexError):
            return
        client = self._clients.get(key)
        if client is None:
            # A retransmitted 2xx to an INVITE whose transaction ended: ACK it again.
            entry = self._acks.get((response.call_id, response.cseq.number))
            if entry is not None and response.cseq.method == "INVITE" and response.status < 300:
                asyncio.ensure_future(self._quiet_send(entry[1]))
            return
        if response.status < 200:
            client.provisional = True
            return
        if client.request.method == "INVITE" and response.status >= 300:
            asyncio.ensure_future(self._quiet_send(self._non_2xx_ack(client.request, response)))
        if not client.future.done():
            client.future.set_result(response)

    async def _quiet_send(self, request: SipRequest) -> None:
        with contextlib.suppress(SipTransportError):
            await self.transport.send(request)

    # -- server side -----------------------------------------------------------------------

    def receive(self, message: SipRequest | SipResponse, flow: Flow) -> None:
        """Feed what the transport received."""
        self._expire()
        if isinstance(message, SipResponse):
            self._on_response(message)
            return
        key = _server_key(message)
        existing = self._servers.get(key)
        if message.method == "ACK":
            if existing is not None:  # the ACK of a non-2xx answer: the transaction absorbs it
                existing.acked()
                return
            for tx in self._servers.values():  # the ACK of a 2xx: same Call-ID and CSeq number
                if (tx.request.method == "INVITE" and tx.request.call_id == message.call_id
                        and tx.request.cseq.number == message.cseq.number):
                    tx.acked()
            return
        if existing is not None:
            if existing.last is not None:
                asyncio.ensure_future(self._resend(existing))
            return  # still being handled: the answer will come
        tx = ServerTransaction(self, message, flow)
        self._servers[key] = tx
        self.on_request(tx)

    async def _resend(self, tx: ServerTransaction) -> None:
        assert tx.last is not None
        with contextlib.suppress(SipTransportError):
            await self.transport.send(tx.last, tx.flow.remote)

    def _expire(self) -> None:
        now = time.monotonic()
        limit = 64 * self.t1
        for key in [k for k, tx in self._servers.items() if tx.answered and now - tx.created > limit]:
            del self._servers[key]
        for ack in [k for k, (t, _) in self._acks.items() if now - t > limit]:
            del self._acks[ack]

    def fail_all(self, error: BaseException) -> None:
        """The transport was lost: every pending client request fails with ``error``."""
        for client in self._clients.values():
            if not client.future.done():
                client.future.set_exception(error)

    async def close(self) -> None:
        """Cancel what is still retransmitting."""
        for tx in self._servers.values():
            tx.acked()
        self.fail_all(SipTransportError("the agent is closing"))
