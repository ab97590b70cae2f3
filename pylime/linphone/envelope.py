"""The ``multipart/encrypted`` body liblinphone sends and accepts for a lime chat message.

Build side, byte for byte what Debian's liblinphone 5.1.65 survives (linphone-5.1.65.md §2.4/§2.5;
its belle-sip 5.1.64 *crashes* on most other shapes):

- ``Content-Type: multipart/encrypted;protocol="application/lime";boundary=<b>`` — protocol
  double-quoted, boundary **last and unquoted**, no spaces;
- boundary ``----------`` + 59 characters of ``[A-Za-z0-9-]`` (belle-sip src/bodyhandler.c);
- CRLF line endings, no preamble: ``--b CRLF`` headers CRLF body, ``CRLF --b CRLF`` between parts,
  ``CRLF --b-- CRLF`` at the end (belle-sip ``belle_sip_multipart_body_handler_send_chunk``);
- parts in liblinphone's order (lime-x3dh-encryption-engine.cpp ``processOutgoingMessage``):
  cleartext ``message/cpim``, ``message/sipfrag`` (``From: <sender>``), one ``application/lime`` per
  device (``Content-Id`` spelled exactly so, bare GRUU, ``Content-Description: Cipher key``,
  unwrapped base64 DR message), exactly one ``application/octet-stream``
  (``Content-Description: Encrypted message``, unwrapped base64 cipher message);
- the whole body zlib-compressed (RFC 1950, ``zlib.compress``) with ``Content-Encoding: deflate``
  when it is at least :data:`DEFLATE_THRESHOLD` bytes and compression saves more than
  :data:`DEFLATE_HEADER_COST` bytes (belle-sip src/bodyhandler.c
  ``belle_sip_memory_body_handler_apply_encoding``; raw deflate gets 415).

Parse side: lenient where Linphone is lenient (header order and case, a quoted or non-last
boundary only where the type is not spelled ``multipart`` in lower case, wrapped base64, missing
``protocol`` as legacy), and a typed :class:`~pylime.linphone.errors.EnvelopeError`
for everything Linphone would drop or crash on. Header blocks go through the standard ``email``
parser; the framing is split here because ``email`` re-parses ``message/*`` bodies as MIME.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email import policy as _email_policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value

from pylime.linphone.address import parse_sip_uri, uri_only
from pylime.linphone.cpim import build_minimal_cpim, parse_cpim
from pylime.linphone.errors import (
    AmbiguousCipherMessageError,
    ContentEncodingError,
    DeviceNotInEnvelopeError,
    DuplicateKeyPartError,
    EnvelopeError,
    InvalidBase64Error,
    InvalidDeviceIdError,
    MalformedMultipartError,
    MissingBoundaryError,
    MissingCipherMessageError,
    MissingSenderError,
    NotEncryptedError,
)

__all__ = [
    "DEFLATE_HEADER_COST",
    "DEFLATE_THRESHOLD",
    "MAX_INFLATED_SIZE",
    "EncryptedBody",
    "Envelope",
    "KeyPart",
    "Part",
    "build_envelope",
    "build_multipart",
    "content_type_for",
    "header_value",
    "inflate",
    "new_boundary",
    "parse_envelope",
    "parse_multipart",
]

DEFLATE_THRESHOLD = 256
"""belle-sip compresses a body of at least this many bytes, and sends smaller ones as they are."""

DEFLATE_HEADER_COST = 27
"""belle-sip sends the body uncompressed unless deflating saves more than this many bytes."""

MAX_INFLATED_SIZE = 16 * 1024 * 1024
"""We refuse to inflate a body beyond this size (a deflate bomb guard; Linphone has none)."""

_BOUNDARY_ALPHABET = string.ascii_letters + string.digits + "-"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,70}$")


def new_boundary() -> str:
    """A fresh boundary the way belle-sip makes one: ten dashes and 59 random token characters."""
    return "-" * 10 + "".join(secrets.choice(_BOUNDARY_ALPHABET) for _ in range(59))


def content_type_for(boundary: str) -> str:
    """The exact Content-Type value Linphone 5.1.65 accepts without crashing."""
    return f'multipart/encrypted;protocol="application/lime";boundary={boundary}'


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up by case-insensitive name, as SIP header names are case-insensitive."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


@dataclass(frozen=True)
class Part:
    """One body part: its headers in wire order and its raw body (without the CRLF before a delimiter)."""

    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def content_type(self) -> str:
        """The part's media type, lower case, without parameters (``text/plain`` if absent)."""
        msg = Message()
        msg["Content-Type"] = self.header("Content-Type") or "text/plain"
        return msg.get_content_type()


@dataclass(frozen=True)
class KeyPart:
    """One recipient device's Double Ratchet message."""

    device_id: str
    dr_message: bytes = field(repr=False)


@dataclass(frozen=True)
class Envelope:
    """What a lime envelope carries, independent of its MIME framing."""

    sender: str
    message_id: str | None
    key_parts: tuple[KeyPart, ...]
    cipher_message: bytes = field(repr=False)
    cipher_deflated: bool = False
    """The decrypted plaintext is zlib-compressed (``Content-Encoding: deflate`` on the cipher part)."""

    def dr_message_for(self, device_id: str) -> bytes:
        """The DR message for ``device_id``, matched by exact string as Linphone does.

        Raises:
            DeviceNotInEnvelopeError: no key part carries that Content-Id.
        """
        for part in self.key_parts:
            if part.device_id == device_id:
                return part.dr_message
        raise DeviceNotInEnvelopeError(
            f"the envelope from {self.sender} has no key part for {device_id} "
            f"({len(self.key_parts)} device(s) addressed)"
        )

    @property
    def device_ids(self) -> tuple[str, ...]:
        """The devices addressed, in envelope order."""
        return tuple(p.device_id for p in self.key_parts)


@dataclass(frozen=True)
class EncryptedBody:
    """A ready-to-send SIP MESSAGE body with the headers that go with it."""

    content_type: str
    body: bytes = field(repr=False)
    content_encoding: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type`` and, when compressed, ``Content-Encoding``."""
        out = {"Content-Type": self.content_type}
        if self.content_encoding is not None:
            out["Content-Encoding"] = self.content_encoding
        return out


# --------------------------------------------------------------------------- build


def _check_address(address: str, what: str) -> None:
    if any(c in address for c in "\r\n<>"):
        raise InvalidDeviceIdError(f"{what} must be a bare URI on one line")
    parse_sip_uri(address)


def build_multipart(parts: Sequence[Part], boundary: str) -> bytes:
    """Frame parts exactly as belle-sip does: no preamble, CRLF everywhere, closing ``--b--`` CRLF.

    Raises:
        MalformedMultipartError: the boundary is not a token or occurs inside a part, or the
            last part is empty (belle-sip 5.1.64 crashes on that).
    """
    if not _TOKEN_RE.match(boundary):
        raise MalformedMultipartError("the boundary must be 1 to 70 token characters (it is sent unquoted)")
    if parts and not parts[-1].body:
        # belle-sip 5.1.64 dereferences a missing part when the last body is empty: SIGSEGV.
        raise MalformedMultipartError("the last part is empty (Linphone 5.1.65 crashes on it)")
    dash = b"--" + boundary.encode("ascii")
    chunks: list[bytes] = []
    for index, part in enumerate(parts):
        head = "".join(f"{k}: {v}\r\n" for k, v in part.headers).encode("utf-8") + b"\r\n"
        if dash in head or dash in part.body:
            raise MalformedMultipartError("the boundary occurs inside a part")
        chunks.append((b"" if index == 0 else b"\r\n") + dash + b"\r\n" + head + part.body)
    chunks.append(b"\r\n" + dash + b"--\r\n")
    return b"".join(chunks)


def _b64(data: bytes) -> bytes:
    # Unwrapped, padded base64: the form bctoolbox writes and Linphone 5.1.65 reads.
    return base64.b64encode(data)


def build_envelope(
    envelope: Envelope,
    *,
    boundary: str | None = None,
    deflate: bool = True,
) -> EncryptedBody:
    """Build the body and headers of a lime-encrypted SIP MESSAGE.

    Args:
        envelope: the sender, IMDN id, per-device DR messages and the cipher message.
            ``message_id`` None leaves out the cleartext CPIM part (only the legacy sipfrag).
        boundary: a fixed boundary (tests); a fresh random one when None.
        deflate: compress bodies of :data:`DEFLATE_THRESHOLD` bytes or more when that saves
            more than :data:`DEFLATE_HEADER_COST` bytes, as belle-sip does.

    Raises:
        InvalidDeviceIdError: a device id or the sender is not a bare SIP URI.
        MalformedMultipartError: a bad fixed boundary.
        EnvelopeError: no key part, or an empty cipher message.
    """
    _check_address(envelope.sender, "the sender")
    if not envelope.key_parts:
        raise EnvelopeError("an envelope needs at least one application/lime part")
    if not envelope.cipher_message:
        # Linphone encrypts with lime's cipherMessage policy, whose cipher message is never empty
        # (it carries a 16-byte tag). The DR-message policy gives an empty one, and an empty last
        # part kills a Linphone 5.1.65 receiver (SIGSEGV in belle-sip).
        raise EnvelopeError("the cipher message is empty: encrypt with Policy.CIPHER_MESSAGE, as Linphone does")
    parts: list[Part] = []
    if envelope.message_id is not None:
        if any(c in envelope.message_id for c in "\r\n"):
            raise EnvelopeError("the IMDN Message-ID must be one line")
        cpim = build_minimal_cpim(envelope.sender, envelope.message_id).to_bytes()
        parts.append(Part((("Content-Type", "message/cpim"), ("Content-Length", str(len(cpim)))), cpim))
    sipfrag = f"From: <{envelope.sender}>".encode()
    parts.append(Part((("Content-Type", "message/sipfrag"), ("Content-Length", str(len(sipfrag)))), sipfrag))
    seen: set[str] = set()
    for key in envelope.key_parts:
        _check_address(key.device_id, "a device id")
        if key.device_id in seen:
            raise DuplicateKeyPartError(f"two key parts for {key.device_id}")
        seen.add(key.device_id)
        body = _b64(key.dr_message)
        parts.append(
            Part(
                (
                    ("Content-Id", key.device_id),
                    ("Content-Description", "Cipher key"),
                    ("Content-Type", "application/lime"),
                    ("Content-Length", str(len(body))),
                ),
                body,
            )
        )
    body = _b64(envelope.cipher_message)
    headers: list[tuple[str, str]] = [("Content-Description", "Encrypted message")]
    if envelope.cipher_deflated:
        headers.append(("Content-Encoding", "deflate"))
    headers += [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
    parts.append(Part(tuple(headers), body))

    while True:
        chosen = boundary or new_boundary()
        try:
            raw = build_multipart(parts, chosen)
            break
        except MalformedMultipartError:
            if boundary is not None:
                raise
    if deflate and len(raw) >= DEFLATE_THRESHOLD:
        packed = zlib.compress(raw)
        # belle-sip keeps the body as it is unless compression saves more than the 27 bytes
        # of the Content-Encoding header it adds.
        if len(packed) + DEFLATE_HEADER_COST < len(raw):
            return EncryptedBody(content_type_for(chosen), packed, "deflate")
    return EncryptedBody(content_type_for(chosen), raw, None)


# --------------------------------------------------------------------------- parse


def inflate(data: bytes, *, limit: int = MAX_INFLATED_SIZE) -> bytes:
    """Inflate zlib-format data (what belle-sip and liblinphone call deflate), up to ``limit`` bytes.

    Raises:
        ContentEncodingError: not zlib data, truncated, or larger than ``limit``.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise ContentEncodingError("the body is not zlib-compressed (deflate) data") from exc
    if inflater.unconsumed_tail:
        raise ContentEncodingError(f"the inflated body exceeds {limit} bytes")
    if not inflater.eof:
        raise ContentEncodingError("the compressed body is truncated")
    return out


def _boundary_of(content_type: str) -> str:
    msg = Message()
    msg["Content-Type"] = content_type
    if msg.get_content_maintype() != "multipart":
        raise NotEncryptedError(f"expected multipart/encrypted, got {msg.get_content_type()}")
    if msg.get_content_type() != "multipart/encrypted":
        raise NotEncryptedError(f"expected multipart/encrypted, got {msg.get_content_type()}")
    protocol = msg.get_param("protocol")
    if protocol is not None:
        value = collapse_rfc2231_value(protocol)
        if value.lower() != "application/lime":
            raise NotEncryptedError(f"the protocol is {value!r}, not application/lime")
    raw = msg.get_param("boundary")
    if raw is None:
        raise MissingBoundaryError("the multipart Content-Type has no boundary parameter")
    boundary = collapse_rfc2231_value(raw)
    if not boundary:
        raise MissingBoundaryError("the boundary parameter is empty")
    _check_channel_boundary(content_type, boundary)
    return boundary


def _check_channel_boundary(content_type: str, boundary: str) -> None:
    """Refuse what belle-sip 5.1.64's SIP channel crashes on (linphone-5.1.65.md §2.4 quirk 3).

    For a type spelled exactly ``multipart`` the channel takes the boundary to be everything
    after ``;boundary=`` in the re-marshalled Content-Type (spaces around ``;`` and ``=``
    removed, quotes kept); a boundary that is not last, or quoted, yields no part and a SIGSEGV.
    Another spelling (``Multipart``) bypasses the channel, and liblinphone splits it leniently.
    """
    if content_type.split("/", 1)[0].strip() != "multipart":
        return
    pieces = [p.strip() for p in content_type.split(";")]
    normalised = ";".join(
        [pieces[0]] + ["=".join(x.strip() for x in p.split("=", 1)) for p in pieces[1:]]
    )
    index = normalised.find(";boundary=")
    if index < 0 or normalised[index + len(";boundary=") :] != boundary:
        raise MalformedMultipartError(
            "the boundary must be the last Content-Type parameter, unquoted and spelled "
            "';boundary=' (Linphone 5.1.65 crashes on any other multipart Content-Type)"
        )


def _parse_part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n"):
        raise MalformedMultipartError("a body part has no headers")
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found:
        raise MalformedMultipartError("a body part has no blank line after its headers")
    parsed = BytesHeaderParser(policy=_email_policy.compat32).parsebytes(head + b"\r\n\r\n")
    if parsed.defects:
        raise MalformedMultipartError("a body part has malformed headers")
    items = tuple((str(k), str(v).strip()) for k, v in parsed.items())
    return Part(items, body)


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart body into parts, refusing every shape belle-sip 5.1.64 mishandles.

    Raises:
        NotEncryptedError: the Content-Type is not ``multipart/encrypted`` (lime protocol or none).
        MissingBoundaryError: no boundary parameter.
        MalformedMultipartError: preamble, bare-LF line endings, missing closing delimiter,
            a part without headers, or an empty last part.
    """
    dash = b"--" + _boundary_of(content_type).encode("utf-8", "surrogateescape")
    if not body.startswith(dash):
        if dash in body:
            raise MalformedMultipartError("text before the first boundary (a preamble)")
        raise MalformedMultipartError("the body does not contain the boundary")
    rest = body[len(dash) :]
    if rest.startswith(b"\n"):
        raise MalformedMultipartError("bare LF line endings (CRLF required)")
    if not rest.startswith(b"\r\n"):
        raise MalformedMultipartError("no CRLF after the first boundary")
    rest = rest[2:]
    delimiter = b"\r\n" + dash
    parts: list[Part] = []
    while True:
        end = rest.find(delimiter)
        if end < 0:
            raise MalformedMultipartError("the closing delimiter is missing")
        parts.append(_parse_part(rest[:end]))
        rest = rest[end + len(delimiter) :]
        if rest.startswith(b"--"):
            if rest[2:] not in (b"", b"\r\n"):
                raise MalformedMultipartError("data after the closing delimiter")
            if not parts[-1].body:
                raise MalformedMultipartError("the last part is empty (Linphone 5.1.65 crashes on it)")
            return parts
        if not rest.startswith(b"\r\n"):
            raise MalformedMultipartError("no CRLF after a boundary")
        rest = rest[2:]


def _b64decode(data: bytes, what: str) -> bytes:
    # bctoolbox accepts CRLF-wrapped base64, so we do too; anything else is an error.
    compact = data.replace(b"\r\n", b"").replace(b"\n", b"").strip()
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise InvalidBase64Error(f"the {what} is not valid base64") from exc


def _sender_of(parts: Sequence[Part]) -> tuple[str, str | None]:
    for part in parts:
        if part.content_type != "message/cpim":
            continue
        cpim = parse_cpim(part.body)
        sender = cpim.sender
        if sender:
            return sender, cpim.message_id
    for part in parts:
        if part.content_type != "message/sipfrag":
            continue
        line = part.body.decode("utf-8", "replace").strip()
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "from":
            try:
                return uri_only(value), None
            except InvalidDeviceIdError as exc:
                raise MissingSenderError("the sipfrag From is not a SIP address") from exc
    raise MissingSenderError("neither a cleartext message/cpim nor a message/sipfrag names the sender")


def parse_envelope(
    content_type: str,
    body: bytes,
    content_encoding: str | None = None,
) -> Envelope:
    """Parse a received lime envelope (inflating it first if ``Content-Encoding: deflate``).

    Raises:
        ContentEncodingError: an unknown encoding, or a body that does not inflate.
        NotEncryptedError, MissingBoundaryError, MalformedMultipartError: see :func:`parse_multipart`.
        MissingSenderError: no sender in clear.
        CpimError: the cleartext CPIM part does not parse.
        InvalidBase64Error: a key or cipher part is not base64.
        DuplicateKeyPartError: two key parts for one device.
        MissingCipherMessageError, AmbiguousCipherMessageError: not exactly one cipher part.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding == "deflate":
        body = inflate(body)
    elif encoding not in ("", "identity"):
        raise ContentEncodingError(f"unsupported Content-Encoding {encoding!r}")
    parts = parse_multipart(content_type, body)
    sender, message_id = _sender_of(parts)
    try:
        parse_sip_uri(sender)
    except InvalidDeviceIdError as exc:
        raise MissingSenderError("the sender in clear is not a SIP address") from exc

    keys: list[KeyPart] = []
    seen: set[str] = set()
    ciphers: list[Part] = []
    for part in parts:
        kind = part.content_type
        if kind == "application/lime":
            device = part.header("Content-Id")
            if device is None:
                raise MalformedMultipartError("an application/lime part has no Content-Id")
            if device in seen:
                raise DuplicateKeyPartError(f"two key parts for {device}")
            seen.add(device)
            keys.append(KeyPart(device, _b64decode(part.body, "key part")))
        elif kind == "application/octet-stream":
            ciphers.append(part)
    if not ciphers:
        raise MissingCipherMessageError("the envelope has no application/octet-stream part")
    if len(ciphers) > 1:
        raise AmbiguousCipherMessageError(
            f"the envelope has {len(ciphers)} application/octet-stream parts; Linphone sends one"
        )
    cipher = ciphers[0]
    part_encoding = (cipher.header("Content-Encoding") or "").strip().lower()
    if part_encoding not in ("", "identity", "deflate"):
        raise ContentEncodingError(f"unsupported Content-Encoding {part_encoding!r} on the cipher part")
    return Envelope(
        sender=sender,
        message_id=message_id,
        key_parts=tuple(keys),
        cipher_message=_b64decode(cipher.body, "cipher message"),
        cipher_deflated=part_encoding == "deflate",
    )

