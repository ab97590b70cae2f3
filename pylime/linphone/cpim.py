"""``message/cpim`` as liblinphone writes it: the inner plaintext and the cleartext sender part.

Layout (RFC 3862, liblinphone src/chat/cpim/message/cpim-message.cpp ``Message::asString``):
message headers, each ``Name: value`` CRLF, then CRLF; content headers, then CRLF; then the
content. liblinphone groups message headers by namespace, the unprefixed ones first, so
``From``/``To``/``DateTime``/``NS`` come before ``imdn.*``. The cleartext part of a lime envelope
is the same shape with only ``From``, ``NS: imdn`` and ``imdn.Message-ID`` and an empty content
(linphone.md §1.3).
"""

from __future__ import annotations

import datetime as _dt
import secrets
import string
from dataclasses import dataclass, field

from pylime.linphone.address import uri_only
from pylime.linphone.errors import CpimError, InvalidDeviceIdError

__all__ = [
    "IMDN_NS",
    "CpimMessage",
    "build_minimal_cpim",
    "build_text_cpim",
    "new_message_id",
    "parse_cpim",
]

IMDN_NS = "imdn <urn:ietf:params:imdn>"
_ID_ALPHABET = string.ascii_letters + string.digits


def new_message_id() -> str:
    """A fresh 12-character IMDN Message-ID, the length liblinphone uses."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


@dataclass(frozen=True)
class CpimMessage:
    """A parsed or built CPIM message; header names keep their namespace prefix (``imdn.Message-ID``)."""

    headers: tuple[tuple[str, str], ...]
    content_headers: tuple[tuple[str, str], ...]
    content: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        """The first message header called ``name`` (case-insensitive), or None."""
        return _find(self.headers, name)

    def content_header(self, name: str) -> str | None:
        """The first content header called ``name`` (case-insensitive), or None."""
        return _find(self.content_headers, name)

    @property
    def sender(self) -> str | None:
        """The ``From`` address, URI-only (display name and brackets removed), or None."""
        value = self.header("From")
        if value is None:
            return None
        try:
            return uri_only(value)
        except InvalidDeviceIdError as exc:
            raise CpimError("the CPIM From header is not a SIP address") from exc

    @property
    def message_id(self) -> str | None:
        """The IMDN ``imdn.Message-ID``, or None."""
        return self.header("imdn.Message-ID")

    @property
    def content_type(self) -> str | None:
        """The content's ``Content-Type``, or None."""
        return self.content_header("Content-Type")

    @property
    def text(self) -> str:
        """The content decoded as UTF-8 (a text/plain message's text)."""
        return self.content.decode("utf-8")

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line endings, as liblinphone does."""
        out = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        if self.headers:
            out += "\r\n"
        out += "".join(f"{k}: {v}\r\n" for k, v in self.content_headers)
        out += "\r\n"
        return out.encode("utf-8") + self.content


def _find(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


def _parse_block(lines: list[str], what: str) -> tuple[tuple[str, str], ...]:
    parsed: list[tuple[str, str]] = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip() or " " in key:
            raise CpimError(f"malformed CPIM {what} header line")
        parsed.append((key, value.strip()))
    return tuple(parsed)


def parse_cpim(data: bytes) -> CpimMessage:
    """Parse a CPIM message (CRLF line endings; bare LF is tolerated).

    Raises:
        CpimError: no blank line after the message headers or after the content headers,
            a malformed header line, or headers that are not UTF-8.
    """
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    sep = newline * 2
    head, found, rest = data.partition(sep)
    if not found:
        raise CpimError("no blank line after the CPIM message headers")
    if rest.startswith(newline) or not rest:
        # No content headers at all: a blank line, then the content.
        content_head, content = b"", rest[len(newline) :]
    else:
        content_head, found, content = rest.partition(sep)
        if not found:
            if rest.endswith(newline):
                content_head, content = rest[: -len(newline)], b""
            else:
                raise CpimError("no blank line after the CPIM content headers")
    try:
        head_lines = head.decode("utf-8").split(newline.decode()) if head else []
        content_lines = content_head.decode("utf-8").split(newline.decode()) if content_head else []
    except UnicodeDecodeError as exc:
        raise CpimError("CPIM headers are not UTF-8") from exc
    return CpimMessage(
        headers=_parse_block(head_lines, "message"),
        content_headers=_parse_block(content_lines, "content"),
        content=content,
    )


def build_minimal_cpim(sender: str, message_id: str) -> CpimMessage:
    """The cleartext CPIM part of a lime envelope: sender and IMDN id, empty text/plain content."""
    return CpimMessage(
        headers=(("From", f"<{sender}>"), ("NS", IMDN_NS), ("imdn.Message-ID", message_id)),
        content_headers=(("Content-Type", "text/plain"),),
        content=b"",
    )


def build_text_cpim(
    sender: str,
    to: str,
    text: str,
    *,
    message_id: str | None = None,
    date: _dt.datetime | None = None,
    disposition: str | None = "positive-delivery, display",
) -> CpimMessage:
    """The full CPIM liblinphone encrypts for a text message (linphone.md §1.5).

    Args:
        sender: the sender's device id (GRUU); it becomes the ``From``.
        to: the conversation address (the chat room GRUU).
        text: the message text, sent as UTF-8 ``text/plain``.
        message_id: the IMDN id; a fresh one when None.
        date: the send time; now when None. Written in UTC with a ``Z``.
        disposition: ``imdn.Disposition-Notification``, or None to leave it out.
    """
    when = (date or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    headers = [
        ("From", f"<{sender}>"),
        ("To", f"<{to}>"),
        ("DateTime", when.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("NS", IMDN_NS),
        ("imdn.Message-ID", message_id or new_message_id()),
    ]
    if disposition is not None:
        headers.append(("imdn.Disposition-Notification", disposition))
    body = text.encode("utf-8")
    return CpimMessage(
        headers=tuple(headers),
        content_headers=(("Content-Type", "text/plain"), ("Content-Length", str(len(body)))),
        content=body,
    )
