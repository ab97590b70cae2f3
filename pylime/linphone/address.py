"""Device ids (GRUUs) and chat-room user ids, the way liblinphone spells them.

A lime device id in Linphone is the account's public GRUU in URI-only form,
``sip:user@domain;gr=urn:uuid:<uuid>``: no display name, no angle brackets, no port and no
other URI parameter. liblinphone 5.1.65 builds it with ``IdentityAddress``, which keeps scheme,
user, host and ``gr`` and drops everything else (linphone-5.1.65.md §3.2); Linphone compares
device ids as plain strings (the ``Content-Id`` match is string equality), so we never change
the case of any component.

The recipient user id of a conversation (lime's associated data) is the chat room's address
without its ``gr`` parameter, URI-only (linphone.md §2.4; liblinphone
src/chat/encryption/lime-x3dh-encryption-engine.cpp ``getUriWithoutGruu().asStringUriOnly()``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pylime.deviceid import is_canonical_device_id, split_device_id
from pylime.linphone.errors import InvalidDeviceIdError

__all__ = [
    "DeviceId",
    "SipUri",
    "normalize_device_id",
    "parse_device_id",
    "parse_sip_uri",
    "recipient_user_id",
    "uri_only",
]

# RFC 3261 user part without ';' (kept out so that URI parameters stay unambiguous).
_USER = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,?/]|%[0-9A-Fa-f]{2})+"
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)"
_PARAM = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+"
_URI_RE = re.compile(
    rf"^(?P<scheme>sips?):(?:(?P<user>{_USER})@)?(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?"
    rf"(?P<params>(?:;{_PARAM}(?:={_PARAM}|=\"[^\"]*\")?)*)$"
)
_GR_RE = re.compile(r"^urn:uuid:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def _preview(text: str) -> str:
    """A short, printable rendering of bad input for error messages."""
    return repr(text if len(text) <= 120 else text[:117] + "...")


def uri_only(address: str) -> str:
    """Strip a display name, angle brackets and header parameters from a SIP name-addr.

    ``"Alice" <sip:alice@example.org;gr=urn:uuid:…>;tag=x`` → ``sip:alice@example.org;gr=urn:uuid:…``.
    A bare URI is returned unchanged (surrounding whitespace removed).
    """
    text = address.strip()
    if "<" in text:
        start = text.index("<")
        end = text.find(">", start)
        if end < 0:
            raise InvalidDeviceIdError(f"unbalanced angle brackets in {_preview(address)}")
        text = text[start + 1 : end].strip()
    return text


@dataclass(frozen=True)
class SipUri:
    """A parsed ``sip:``/``sips:`` URI: what device ids and room addresses are made of."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        """The value of URI parameter ``name`` (case-insensitive name), or None if absent."""
        for key, value in self.params:
            if key.lower() == name.lower():
                return value
        return None

    def has_param(self, name: str) -> bool:
        """Whether URI parameter ``name`` is present (with or without a value)."""
        return any(key.lower() == name.lower() for key, _ in self.params)

    def __str__(self) -> str:
        text = f"{self.scheme}:"
        if self.user is not None:
            text += f"{self.user}@"
        text += self.host
        if self.port is not None:
            text += f":{self.port}"
        for key, value in self.params:
            text += f";{key}" if value is None else f";{key}={value}"
        return text


def parse_sip_uri(address: str) -> SipUri:
    """Parse a SIP URI or name-addr (display name and brackets allowed) into its parts.

    Raises:
        InvalidDeviceIdError: the text is not a ``sip:``/``sips:`` URI.
    """
    text = uri_only(address)
    match = _URI_RE.match(text)
    if match is None:
        raise InvalidDeviceIdError(f"not a sip: or sips: URI: {_preview(address)}")
    params: list[tuple[str, str | None]] = []
    for item in match.group("params").split(";")[1:]:
        key, sep, value = item.partition("=")
        params.append((key, value if sep else None))
    port = match.group("port")
    return SipUri(
        scheme=match.group("scheme"),
        user=match.group("user"),
        host=match.group("host"),
        port=int(port) if port is not None else None,
        params=tuple(params),
    )


@dataclass(frozen=True)
class DeviceId:
    """A lime device id: a SIP GRUU ``scheme:user@host;gr=urn:uuid:…`` and nothing else."""

    scheme: str
    user: str
    host: str
    gr: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.user}@{self.host};gr={self.gr}"

    @property
    def aor(self) -> str:
        """The address of record this device belongs to (the GRUU without ``gr``)."""
        return f"{self.scheme}:{self.user}@{self.host}"

    @property
    def instance(self) -> str:
        """The instance UUID (the ``gr`` value without its ``urn:uuid:`` prefix)."""
        return self.gr[len("urn:uuid:") :]


def _device_from_uri(uri: SipUri, original: str) -> DeviceId:
    if uri.user is None:
        raise InvalidDeviceIdError(f"a device id needs a user part: {_preview(original)}")
    gr = uri.param("gr")
    if gr is None:
        raise InvalidDeviceIdError(f"a device id needs a gr=urn:uuid:… parameter: {_preview(original)}")
    if not _GR_RE.match(gr):
        raise InvalidDeviceIdError(f"the gr parameter is not urn:uuid:<uuid>: {_preview(original)}")
    device = DeviceId(scheme=uri.scheme, user=uri.user, host=uri.host, gr=gr)
    # The key server's rule (pylime.deviceid): e.g. no '?' in the user part.
    if not is_canonical_device_id(str(device)):
        raise InvalidDeviceIdError(f"not a device id the key server accepts: {_preview(original)}")
    return device


def parse_device_id(text: str) -> DeviceId:
    """Parse a device id that is already in Linphone's canonical URI-only GRUU form.

    The shape is :func:`pylime.deviceid.split_device_id`'s, the one the key server accepts,
    with a ``gr=urn:uuid:<uuid>`` parameter required.

    Raises:
        InvalidDeviceIdError: anything else, including a port, other parameters or brackets
            (use :func:`normalize_device_id` for a Contact or name-addr).
    """
    try:
        parts = split_device_id(text)
    except ValueError as exc:
        raise InvalidDeviceIdError(str(exc)) from None
    if parts.gr is None:
        raise InvalidDeviceIdError(f"a device id needs a gr=urn:uuid:… parameter: {_preview(text)}")
    if not _GR_RE.match(parts.gr):
        raise InvalidDeviceIdError(f"the gr parameter is not urn:uuid:<uuid>: {_preview(text)}")
    return DeviceId(scheme=parts.scheme, user=parts.user, host=parts.host, gr=parts.gr)


def normalize_device_id(address: str) -> str:
    """Turn a Contact, name-addr or GRUU into the device id lime and Linphone use.

    Drops the display name, angle brackets, port and every URI parameter but ``gr``, as
    liblinphone's ``IdentityAddress`` does; use it on a remote Contact before trusting it.

    Raises:
        InvalidDeviceIdError: no user part, no ``gr=urn:uuid:…`` parameter, or a user part
            the canonical form refuses (``?``, a password part).
    """
    return str(_device_from_uri(parse_sip_uri(address), address))


def recipient_user_id(room_or_peer: str) -> str:
    """The recipient user id of a conversation: its address, URI-only, without ``gr``.

    ``sip:chatroom-Qm9F@conf.example.org;gr=urn:uuid:…`` → ``sip:chatroom-Qm9F@conf.example.org``.
    Other URI parameters are kept, as liblinphone's ``getUriWithoutGruu`` keeps them.
    """
    uri = parse_sip_uri(room_or_peer)
    params = tuple((k, v) for k, v in uri.params if k.lower() != "gr")
    return str(SipUri(uri.scheme, uri.user, uri.host, uri.port, params))
