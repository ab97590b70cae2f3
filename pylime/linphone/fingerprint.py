"""Manual verification of an identity key: pylime's own fingerprint and QR payload.

Linphone and lime define no fingerprint or QR format (linphone.md §5): their only trust path
is the ZRTP SAS. These formats are pylime's own, are not understood by Linphone's UI, and
change only lime's local peer status, which is what Linphone's SAS does too.

Fingerprint, version 1
----------------------
It commits to the curve and the key, so a curve448 key never shares a fingerprint with a
curve25519 one::

    digest = SHA-512(b"pylime-ik-fingerprint-v1" || curve_id || Ik)

where ``curve_id`` is lime's CurveId byte (1 = curve25519, 2 = curve448) and ``Ik`` the raw
EdDSA public identity key (32 or 57 bytes). The first 60 bytes of the digest are cut into
twelve 5-byte chunks; each chunk, read as a big-endian integer modulo 100000, gives one group
of five decimal digits (zero-padded). Twelve groups, sixty digits, about 199 bits: easy to read
aloud group by group, and far beyond any second-preimage search. Shown as three lines of four
groups, prefixed by the curve name::

    c25519  01234 56789 01234 56789
            01234 56789 01234 56789
            01234 56789 01234 56789

QR payload, version 1
---------------------
One line of text, in byte mode, error correction level M::

    pylime:ik:1:<curve_id>:<base64url(Ik), no padding>:<device id>

The device id comes last, so it may contain ``:``. Scanning it and calling
:func:`trust_scanned` trusts that key for that device, exactly as a verified SAS with a
matching auxiliary secret does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO

import segno

from pylime.linphone.address import normalize_device_id
from pylime.linphone.errors import InvalidDeviceIdError, InvalidFingerprintError
from pylime.linphone.events import SecurityEvents
from pylime.linphone.zrtp import AuxSecretStatus, IdentityKey, PeerTrustManager, apply_sas_verdict
from pylime.types import Curve, PeerStatus

__all__ = [
    "QR_PREFIX",
    "ScannedIdentity",
    "fingerprint",
    "fingerprints_match",
    "format_fingerprint",
    "parse_qr_payload",
    "qr_code",
    "qr_payload",
    "qr_terminal",
    "save_qr",
    "trust_scanned",
]

_DOMAIN = b"pylime-ik-fingerprint-v1"
_KEY_SIZES = {Curve.C25519: 32, Curve.C448: 57}
QR_PREFIX = "pylime:ik:1:"


def _curve(curve: Curve | int) -> Curve:
    try:
        return Curve(curve)
    except ValueError as exc:
        raise InvalidFingerprintError(f"unknown curve id {curve!r}") from exc


def _check_key(key: bytes, curve: Curve) -> bytes:
    key = bytes(key)
    if len(key) != _KEY_SIZES[curve]:
        raise InvalidFingerprintError(
            f"a {curve.name} identity key has {_KEY_SIZES[curve]} bytes, not {len(key)}"
        )
    return key


def fingerprint(key: bytes, curve: Curve | int = Curve.C25519) -> str:
    """The sixty-digit fingerprint of an identity key: twelve space-separated groups of five."""
    c = _curve(curve)
    digest = hashlib.sha512(_DOMAIN + bytes((int(c),)) + _check_key(key, c)).digest()
    groups = [int.from_bytes(digest[i : i + 5], "big") % 100000 for i in range(0, 60, 5)]
    return " ".join(f"{g:05d}" for g in groups)


def format_fingerprint(key: bytes, curve: Curve | int = Curve.C25519) -> str:
    """The fingerprint as three lines of four groups, the first prefixed by the curve name."""
    c = _curve(curve)
    groups = fingerprint(key, c).split()
    label = "c25519" if c is Curve.C25519 else "c448"
    lines = [" ".join(groups[i : i + 4]) for i in range(0, 12, 4)]
    pad = " " * (len(label) + 2)
    return "\n".join((f"{label}  " if n == 0 else pad) + line for n, line in enumerate(lines))


def fingerprints_match(a: str, b: str) -> bool:
    """Compare two fingerprints as read out, ignoring spacing, line breaks and a curve label."""

    def digits(text: str) -> str:
        words = text.split()
        if words and words[0] in ("c25519", "c448"):
            words = words[1:]
        return "".join(words)

    da, db = digits(a), digits(b)
    if len(da) != 60 or not da.isdigit() or len(db) != 60 or not db.isdigit():
        raise InvalidFingerprintError("a fingerprint has sixty digits")
    return hmac.compare_digest(da, db)


@dataclass(frozen=True)
class ScannedIdentity:
    """What an identity QR code says: this device has this identity key."""

    device_id: str
    curve: Curve
    key: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint, to show next to the scan result."""
        return fingerprint(self.key, self.curve)


def qr_payload(device_id: str, key: bytes, curve: Curve | int = Curve.C25519) -> str:
    """The QR text for our device and identity key (see the module docstring)."""
    c = _curve(curve)
    device = normalize_device_id(device_id)
    b64 = base64.urlsafe_b64encode(_check_key(key, c)).rstrip(b"=").decode("ascii")
    return f"{QR_PREFIX}{int(c)}:{b64}:{device}"


def parse_qr_payload(payload: str) -> ScannedIdentity:
    """Read an identity QR payload.

    Raises:
        InvalidFingerprintError: not a pylime identity payload, or a bad curve, key or device id.
    """
    text = payload.strip()
    if not text.startswith(QR_PREFIX):
        raise InvalidFingerprintError("not a pylime identity QR payload (version 1)")
    parts = text[len(QR_PREFIX) :].split(":", 2)
    if len(parts) != 3:
        raise InvalidFingerprintError("an identity QR payload has curve, key and device id")
    curve_text, b64, device = parts
    if not curve_text.isdigit():
        raise InvalidFingerprintError("the curve id is not a number")
    c = _curve(int(curve_text))
    try:
        key = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidFingerprintError("the key is not base64url") from exc
    try:
        device_id = normalize_device_id(device)
    except InvalidDeviceIdError as exc:
        raise InvalidFingerprintError("the device id is not a GRUU") from exc
    return ScannedIdentity(device_id, c, _check_key(key, c))


def qr_code(payload: str) -> segno.QRCode:
    """The QR code of a payload (byte mode, error correction M), for any segno output."""
    return segno.make(payload, error="m", micro=False, boost_error=False)


def qr_terminal(payload: str, *, border: int = 2) -> str:
    """The QR code as plain text with Unicode half blocks, two modules per character cell.

    Dark modules are drawn as spaces on the light block characters, so it reads on a dark
    terminal; no ANSI escapes are used, so the text can be logged or printed anywhere.
    """
    rows = [list(row) for row in qr_code(payload).matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    glyph = {(0, 0): "\u2588", (0, 1): "\u2580", (1, 0): "\u2584", (1, 1): " "}
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2]):
        lines.append("".join(glyph[(1 if t else 0, 1 if b else 0)] for t, b in zip(top, bottom)))
    return "\n".join(lines)


def save_qr(
    payload: str,
    target: str | os.PathLike[str] | BinaryIO,
    *,
    kind: str = "png",
    scale: int = 8,
    border: int = 4,
) -> None:
    """Write the QR code as PNG or SVG to a path or a binary stream."""
    if kind not in ("png", "svg"):
        raise ValueError("kind must be 'png' or 'svg'")
    if isinstance(target, (str, os.PathLike)):
        qr_code(payload).save(os.fspath(target), kind=kind, scale=scale, border=border)
    else:
        buffer = io.BytesIO()
        qr_code(payload).save(buffer, kind=kind, scale=scale, border=border)
        target.write(buffer.getvalue())


def trust_scanned(
    manager: PeerTrustManager,
    payload: str | ScannedIdentity,
    *,
    events: SecurityEvents | None = None,
) -> PeerStatus:
    """Trust the key a scanned QR code (or a matching read-aloud fingerprint) vouches for.

    Same rules as a verified SAS with a matching auxiliary secret: a different stored key
    replaces the device (with an IdentityKeyChanged event unless it was unsafe).
    """
    scanned = parse_qr_payload(payload) if isinstance(payload, str) else payload
    return apply_sas_verdict(
        manager,
        scanned.device_id,
        verified=True,
        aux_status=AuxSecretStatus.MATCH,
        peer_keys=[IdentityKey.of(scanned.curve, scanned.key)],
        curve=scanned.curve,
        events=events,
    )
