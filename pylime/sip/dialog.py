"""Building requests as this user agent, in and out of dialogs (RFC 3261 §8.1, §12).

:class:`Endpoint` knows who we are (AOR, GRUU once registered, capabilities) and how to reach
the proxy; it writes the Via, From, Contact and Max-Forwards of every request. A
:class:`Dialog` holds what in-dialog requests need (Call-ID, tags, remote target, route set,
CSeq) for a SUBSCRIBE to a room's conference event or an INVITE to a room.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pylime.sip.message import NameAddr, SipRequest, SipResponse, new_branch, new_call_id, new_tag
from pylime.sip.transaction import TransactionLayer

__all__ = ["SPECS", "Dialog", "Endpoint"]

SPECS = "groupchat/1.1,lime"
"""Our ``+org.linphone.specs``: a conference server puts a device in an encrypted room only with
both (flexisip ``isContactCompatible``; 5.1.65's own server core checks the same)."""

ALLOW = "INVITE, ACK, CANCEL, BYE, MESSAGE, NOTIFY, SUBSCRIBE, OPTIONS"


class Endpoint:
    """This user agent on the wire: identity, contact, and the transaction layer it sends with."""

    def __init__(self, layer: TransactionLayer, aor: str, *, user_agent: str, display: str = "") -> None:
        self.layer = layer
        self.aor = aor
        self.gruu: str | None = None
        self.user_agent = user_agent
        self.display = display
        self.proxy_route: str | None = None

    @property
    def user(self) -> str:
        """The user part of our AOR."""
        return self.aor.split(":", 1)[1].split("@", 1)[0]

    def transport_contact(self) -> str:
        """Where the proxy reaches us before a GRUU exists: our transport address."""
        t = self.layer.transport
        host, port = t.local
        return f"sip:{self.user}@{host}:{port};transport={t.name.lower()}"

    def contact(self, *extra_params: str) -> str:
        """Our Contact: the GRUU once registered (Linphone's form), with our capabilities."""
        uri = self.gruu or self.transport_contact()
        params = "".join(f";{p}" for p in extra_params)
        return f'<{uri}>{params};+org.linphone.specs="{SPECS}"'

    def via(self) -> str:
        """A fresh top Via for a new client transaction."""
        t = self.layer.transport
        host, port = t.local
        return f"SIP/2.0/{t.name} {host}:{port};branch={new_branch()};rport"

    def request(self, method: str, uri: str, *, to: str, from_uri: str | None = None,
                from_tag: str | None = None, call_id: str | None = None, cseq: int = 1,
                route: Iterable[str] = (), extra: Iterable[tuple[str, str]] = (),
                body: bytes = b"") -> SipRequest:
        """A request out of or in a dialog; From is our GRUU (else AOR) unless given."""
        sender = from_uri or self.gruu or self.aor
        name = f'"{self.display}" ' if self.display and sender == self.aor else ""
        headers = [("Via", self.via()), ("Max-Forwards", "70"),
                   ("From", f"{name}<{sender}>;tag={from_tag or new_tag()}"), ("To", to),
                   ("Call-ID", call_id or new_call_id()), ("CSeq", f"{cseq} {method}")]
        routes = list(route)
        if not routes and self.proxy_route:
            routes = [self.proxy_route]
        headers += [("Route", r) for r in routes]
        headers += [("User-Agent", self.user_agent), *extra]
        return SipRequest(headers=headers, body=body, method=method, uri=uri)

    async def send(self, request: SipRequest, timeout: float | None = None) -> SipResponse:
        """Send a request and return its final answer (see TransactionLayer.request)."""
        return await self.layer.request(request, timeout=timeout)


@dataclass
class Dialog:
    """An established dialog, seen from our side."""

    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    cseq: int = 1

    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The dialog our request created (route set = Record-Route reversed, §12.1.2)."""
        contact = response.contacts[0].uri if response.get("Contact") else request.uri
        return cls(call_id=request.call_id, local_uri=request.from_.uri, local_tag=request.from_.tag or "",
                   remote_uri=request.to.uri, remote_tag=response.to.tag or "", remote_target=contact,
                   route_set=list(reversed(response.get_all("Record-Route"))), cseq=request.cseq.number)

    @classmethod
    def from_uas(cls, request: SipRequest, local_tag: str) -> Dialog:
        """The dialog a request to us created (route set = Record-Route in order, §12.1.1)."""
        contact = request.contacts[0].uri if request.get("Contact") else request.from_.uri
        return cls(call_id=request.call_id, local_uri=request.to.uri, local_tag=local_tag,
                   remote_uri=request.from_.uri, remote_tag=request.from_.tag or "", remote_target=contact,
                   route_set=list(request.get_all("Record-Route")), cseq=0)

    def request(self, endpoint: Endpoint, method: str, *, extra: Iterable[tuple[str, str]] = (),
                body: bytes = b"", cseq: int | None = None) -> SipRequest:
        """The next in-dialog request (``cseq`` given for an ACK, which reuses the INVITE's)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        return endpoint.request(
            method, self.remote_target, to=str(NameAddr(self.remote_uri, params=(("tag", self.remote_tag),))),
            from_uri=self.local_uri, from_tag=self.local_tag, call_id=self.call_id, cseq=cseq,
            route=self.route_set, extra=extra, body=body)
