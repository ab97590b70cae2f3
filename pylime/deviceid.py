"""The one canonical shape of a lime device id, shared by the key server and pylime.linphone.

A device id is a SIP URI in URI-only form: ``sip:user@host`` or ``sips:user@host``, with at
most one parameter, ``;gr=<instance>`` (Linphone's GRUU: ``;gr=urn:uuid:<uuid>``). Nothing
else: no display name or angle brackets, no password part (``user:password@``), no port, no
header part (``?``), exactly one ``@``. Anything that a SIP parser could split in two ways is
refused, so the account that owns a device id is never ambiguous: ``sip:alice:x@bob@example.org``
is nobody's.

Imports nothing of pylime but the standard library, so the key server (pylime.keyserver)
and the Linphone layer (pylime.linphone.address) both build on it without depending on
each other.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

__all__ = [
    "CanonicalDeviceId",
    "device_owner",
    "is_canonical_device_id",
    "split_device_id",
]

# RFC 3261 user part, minus ';' and '?' (parameters and headers must stay unambiguous) and
# ':' (the deprecated password part). Characters above U+009F are allowed as they are (Linphone
# puts non-ASCII user names on the wire as UTF-8); C0/C1 controls and lone surrogates (bytes
# that were not UTF-8) are not.
_USER = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,/]|%[0-9A-Fa-f]{2}|[\u00a0-\ud7ff\ue000-\U0010ffff])+"
# A host name, an IPv4 address or a bracketed IPv6 literal; no port.
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)"
# RFC 3261 paramchar (param-unreserved / unreserved / escaped).
_GR = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+"
_CANONICAL = re.compile(
    rf"(?P<scheme>sips?):(?P<user>{_USER})@(?P<host>{_HOST})(?:;gr=(?P<gr>{_GR}))?"
)


@dataclass(frozen=True)
class CanonicalDeviceId:
    """The parts of a canonical device id, exactly as written (nothing decoded or re-cased)."""

    scheme: str
    user: str
    host: str
    gr: str | None

    def __str__(self) -> str:
        text = f"{self.scheme}:{self.user}@{self.host}"
        return text if self.gr is None else f"{text};gr={self.gr}"


def split_device_id(text: str) -> CanonicalDeviceId:
    """The parts of a device id in canonical form.

    Raises:
        ValueError: the text is not ``sip[s]:user@host`` with an optional ``;gr=`` parameter
            (the message says why, without echoing more than a short prefix of the input).
    """
    parsed = _parse(text)
    if parsed is None:
        raise ValueError(f"not a canonical device id ({_why(text)}): {_preview(text)}")
    return parsed[0]


def is_canonical_device_id(text: str) -> bool:
    """Whether ``text`` is a device id in canonical form (see the module docstring)."""
    return _parse(text) is not None


def device_owner(device_id: str) -> tuple[str, str] | None:
    """(user, domain) owning a canonical device id, None for any other text.

    The user part is percent-decoded and stays case-sensitive; the domain is lower-cased
    (host names are case-insensitive). This is what an account (username, realm) must equal.
    """
    parsed = _parse(device_id)
    return None if parsed is None else parsed[1]


def _parse(text: str) -> tuple[CanonicalDeviceId, tuple[str, str]] | None:
    """The parts and the owner of a canonical device id, or None."""
    match = _CANONICAL.fullmatch(text)
    if match is None:
        return None
    try:
        user = urllib.parse.unquote(match["user"], errors="strict")
    except UnicodeDecodeError:  # escapes that are not UTF-8 name no account
        return None
    if not user.isprintable():  # nor does an escaped control character
        return None
    parts = CanonicalDeviceId(
        scheme=match["scheme"], user=match["user"], host=match["host"], gr=match["gr"]
    )
    return parts, (user, match["host"].lower())


def _why(text: str) -> str:
    """A short reason a text is not canonical, for error messages and logs."""
    if text != text.strip() or "<" in text or ">" in text:
        return "no angle brackets or surrounding spaces"
    if not text.startswith(("sip:", "sips:")):
        return "scheme must be sip: or sips:"
    if text.count("@") != 1:
        return "exactly one @"
    if "?" in text:
        return "no ? header part"
    user = text.split(":", 1)[1].split("@", 1)[0]
    if ":" in user:
        return "no password part"
    host_and_params = text.split("@", 1)[1]
    if ":" in host_and_params.split(";", 1)[0].split("]")[-1]:
        return "no port"
    if ";" in host_and_params and not host_and_params.split(";", 1)[1].startswith("gr="):
        return "the only parameter allowed is gr"
    return "bad character, bad escape or empty part"


def _preview(text: str) -> str:
    """A short, printable rendering of bad input."""
    return repr(text if len(text) <= 80 else text[:77] + "...")
