"""REGISTER as a Linphone device does it: instance id, capabilities, digest, GRUU (RFC 3261 §10, RFC 5627).

The Contact carries ``+sip.instance="<urn:uuid:…>"`` and ``+org.linphone.specs``, with
``Supported: replaces, outbound, gruu``. A 401 or 407 is answered once per challenge with the
account's digest credentials (a second challenge with ``stale=true`` is answered again; one
without is a wrong password). The 200's Contact for our instance carries ``pub-gruu``: that
GRUU, in Linphone's URI-only form (:func:`~pylime.linphone.address.normalize_device_id`, which
drops any port or parameter other than ``gr``), is our lime device id. Refreshes reuse the
Call-ID with an increasing CSeq, at 90 % of the granted lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass

from pylime.linphone.address import normalize_device_id
from pylime.linphone.errors import InvalidDeviceIdError
from pylime.sip.dialog import SPECS, Endpoint
from pylime.sip.digest import Challenge, DigestCredentials, authorization
from pylime.sip.errors import RegistrationError, SipParseError
from pylime.sip.message import SipRequest, SipResponse, new_call_id, new_tag

__all__ = ["Registration", "RegistrationResult"]


@dataclass(frozen=True)
class RegistrationResult:
    """A successful REGISTER: our device id (the GRUU) and the lifetime granted."""

    gruu: str
    expires: int


class Registration:
    """Registers one AOR + instance through an :class:`Endpoint`; :meth:`register` again to refresh."""

    def __init__(self, endpoint: Endpoint, instance: str, *, credentials: DigestCredentials | None = None,
                 expires: int = 3600) -> None:
        self.endpoint = endpoint
        self.instance = instance
        self.credentials = credentials
        self.expires = expires
        self.call_id = new_call_id()
        self.tag = new_tag()
        self.cseq = 0
        self._nc = 0
        self._challenges: dict[str, Challenge] = {}

    @property
    def registrar(self) -> str:
        """The Request-URI: the AOR's domain."""
        return "sip:" + self.endpoint.aor.split("@", 1)[1]

    def _request(self, expires: int) -> SipRequest:
        self.cseq += 1
        contact = (f'<{self.endpoint.transport_contact()}>;+sip.instance="<{self.instance}>"'
                   f';+org.linphone.specs="{SPECS}"')
        extra = [("Contact", contact), ("Expires", str(expires)), ("Supported", "replaces, outbound, gruu"),
                 ("Allow", "INVITE, ACK, CANCEL, BYE, MESSAGE, NOTIFY, SUBSCRIBE, OPTIONS")]
        request = self.endpoint.request("REGISTER", self.registrar, to=f"<{self.endpoint.aor}>",
                                        from_uri=self.endpoint.aor, from_tag=self.tag,
                                        call_id=self.call_id, cseq=self.cseq, extra=extra)
        for header, challenge in self._challenges.items():
            self._nc += 1
            assert self.credentials is not None
            request.add(header, authorization(challenge, self.credentials, "REGISTER", self.registrar,
                                              nonce_count=self._nc))
        return request

    async def register(self) -> RegistrationResult:
        """REGISTER (answering challenges) and return the GRUU and lifetime.

        Raises:
            RegistrationError: a final failure, a challenge we cannot answer, or no GRUU.
            SipTimeoutError, SipTransportError: no answer.
        """
        response = await self._exchange(self.expires)
        return self._result(response)

    async def unregister(self) -> None:
        """Remove our binding (Expires: 0)."""
        await self._exchange(0)

    async def _exchange(self, expires: int) -> SipResponse:
        answered_fresh = False
        while True:
            response = await self.endpoint.send(self._request(expires))
            if response.status not in (401, 407):
                break
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
            if self.credentials is None:
                raise RegistrationError("the registrar wants credentials and none were given",
                                        response.status, response.reason)
            try:
                challenge = Challenge.parse(response.get(header) or "")
            except SipParseError as exc:
                raise RegistrationError(f"cannot answer the challenge: {exc}", response.status,
                                        response.reason) from exc
            known = self._challenges.get(answer)
            if known is not None and known.nonce != challenge.nonce:
                answered_fresh = False  # a new nonce (our old one expired): answer it once more
            if answered_fresh and not challenge.stale:
                raise RegistrationError("the registrar refused our credentials", response.status,
                                        response.reason)
            self._challenges[answer] = challenge
            self._nc = 0
            answered_fresh = True
        if response.status != 200:
            raise RegistrationError(f"REGISTER got {response.status} {response.reason}", response.status,
                                    response.reason)
        return response

    def _result(self, response: SipResponse) -> RegistrationResult:
        for contact in response.contacts:
            if (contact.param("+sip.instance") or "").strip("<>") != self.instance:
                continue
            gruu = contact.param("pub-gruu")
            if not gruu:
                break
            try:
                device = normalize_device_id(gruu)
            except InvalidDeviceIdError as exc:
                raise RegistrationError(f"the registrar's pub-gruu is not a GRUU: {exc}", 200) from exc
            expires = contact.param("expires") or response.get("Expires") or str(self.expires)
            return RegistrationResult(device, int(expires) if expires.isdigit() else self.expires)
        raise RegistrationError("the registrar gave no pub-gruu for our instance: a lime device id "
                                "must be a GRUU (is the registrar GRUU-capable?)", 200)
