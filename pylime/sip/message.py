"""SIP messages without I/O: parse, frame and serialise (RFC 3261 §7, §18.3, §20, §25).

This is the sans-IO core the rest of :mod:`pylime.sip` stands on (h11's split between protocol
and I/O): :func:`parse_message` turns one datagram into a :class:`SipRequest` or
:class:`SipResponse`, :class:`StreamParser` cuts a TCP/TLS byte stream into messages by
``Content-Length``, and ``bytes(message)`` writes one back. Header values are kept exactly as
they came (device ids are compared as strings by Linphone, so nothing here re-encodes a URI);
the typed views (:class:`NameAddr`, :class:`Via`, :class:`CSeq`) parse quoted strings and angle
brackets properly, which matters for ``pub-gruu="sip:u@d;gr=urn:uuid:…"`` and
``+org.linphone.specs="groupchat/1.1,lime"``.

Every refusal is a :class:`~pylime.sip.errors.SipParseError` (or its
:class:`~pylime.sip.errors.MessageTooLargeError`); when enough of the head parsed to answer,
the error carries it as ``head`` so the agent can reply 400 or 413 instead of staying silent.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pylime.sip.errors import MessageTooLargeError, SipParseError

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_HEAD_SIZE",
    "BadInput",
    "CSeq",
    "NameAddr",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "StreamParser",
    "Via",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "split_list",
    "unquote",
]

MAX_HEAD_SIZE = 64 * 1024
"""Start line and headers larger than this are refused (belle-sip's own limit is of that order)."""

MAX_BODY_SIZE = 1024 * 1024
"""Bodies larger than this are refused with 413; a lime envelope for 600 devices is ~260 kB."""

REASONS = {
    100: "Trying", 200: "Ok", 202: "Accepted", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 420: "Bad Extension", 481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops", 488: "Not Acceptable Here", 489: "Bad Event", 500: "Server Internal Error",
    503: "Service Unavailable",
}

# RFC 3261 §7.3.3 compact forms, and the canonical spelling we write.
_COMPACT = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
            "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
            "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To", "x": "Session-Expires"}
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(rf"^{_TOKEN}$")
_REQUEST_LINE = re.compile(rf"^({_TOKEN}) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) ?([^\r\n]*)$")
_VIA_RE = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;]+)(?::([0-9]{1,5}))?")
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 96 random bits)."""
    return "z9hG4bK" + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


def new_call_id() -> str:
    """A fresh Call-ID."""
    return secrets.token_hex(16)


def canonical_name(name: str) -> str:
    """The header name we write: compact forms expanded, known names in their usual case."""
    return _COMPACT.get(name.lower(), name) if len(name) == 1 else name


def unquote(value: str) -> str:
    """A quoted-string's content (backslash escapes undone); other values unchanged."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _scan(text: str, stops: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) of each char in ``stops`` that is outside quotes and angle brackets."""
    quoted = escaped = False
    angle = 0
    for i, ch in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif angle == 0 and ch in stops:
            yield i, ch
    if quoted or angle:
        raise SipParseError("unbalanced quotes or angle brackets in a header value")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and angle brackets."""
    out, start = [], 0
    for i, _ in _scan(value, ","):
        out.append(value[start:i].strip())
        start = i + 1
    out.append(value[start:].strip())
    return [item for item in out if item]


def _params(text: str) -> tuple[tuple[str, str | None], ...]:
    """``;a=b;c;d="x;y"`` → ((a, b), (c, None), (d, '"x;y"')): values as written."""
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError("expected ';' before header parameters")
    cuts = [i for i, _ in _scan(text, ";")] + [len(text)]
    out: list[tuple[str, str | None]] = []
    for a, b in itertools.pairwise(cuts):
        item = text[a + 1 : b].strip()
        if not item:
            raise SipParseError("empty header parameter")
        name, sep, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_RE.match(name):
            raise SipParseError("a header parameter name is not a token")
        out.append((name, value.strip() if sep else None))
    return tuple(out)


def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    for key, value in params:
        if key.lower() == name.lower():
            return "" if value is None else unquote(value)
    return None


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact/Route value: display name, URI (exactly as written), header parameters."""

    uri: str
    display: str = ""
    params: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        """Parse ``"Name" <uri>;p=v`` or ``uri;p=v`` (then parameters belong to the header).

        Raises:
            SipParseError: no URI, unbalanced brackets or quotes, or bad parameters.
        """
        text = value.strip()
        lt = text.find("<", _display_end(text))
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError("unbalanced angle brackets in an address")
            display = unquote(text[:lt].strip())
            uri = text[lt + 1 : gt].strip()
            rest = text[gt + 1 :]
        else:
            cut = text.find(";")
            uri, rest, display = (text, "", "") if cut < 0 else (text[:cut], text[cut:], "")
        if not re.match(r"^[A-Za-z][A-Za-z0-9+\-.]*:\S+$", uri):
            raise SipParseError("an address has no URI")
        return cls(uri=uri, display=display, params=_params(rest))

    def param(self, name: str) -> str | None:
        """A header parameter's value, unquoted; ``""`` for a flag, None if absent."""
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter."""
        return self.param("tag")

    def __str__(self) -> str:
        text = f'"{self.display}" ' if self.display else ""
        text += f"<{self.uri}>"
        for key, value in self.params:
            text += f";{key}" if value is None else f";{key}={value}"
        return text


def _display_end(text: str) -> int:
    """Where a quoted display name ends (0 when there is none), so '<' inside it is skipped."""
    if not text.startswith('"'):
        return 0
    escaped = False
    for i, ch in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i + 1
    raise SipParseError("unterminated display name")


@dataclass(frozen=True)
class Via:
    """One Via entry: transport, sent-by host and port, parameters."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one Via value (``SIP/2.0/UDP host:port;branch=…``)."""
        m = _VIA_RE.match(value.strip())
        if m is None:
            raise SipParseError("malformed Via")
        return cls(m.group(1).upper(), m.group(2), int(m.group(3)) if m.group(3) else None,
                   _params(value.strip()[m.end() :]))

    def param(self, name: str) -> str | None:
        """A parameter's value; ``""`` for a flag, None if absent."""
        return _param(self.params, name)

    @property
    def branch(self) -> str:
        """The branch parameter ("" when missing: an RFC 2543 peer)."""
        return self.param("branch") or ""


@dataclass(frozen=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        """Parse ``123 MESSAGE``."""
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10 or not _TOKEN_RE.match(parts[1]):
            raise SipParseError("malformed CSeq")
        return cls(int(parts[0]), parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass
class SipMessage:
    """Headers in wire order (names as written, compact forms expanded) and the raw body."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = field(default=b"", repr=False)

    def get(self, name: str) -> str | None:
        """The first value of a header (case-insensitive name), or None."""
        key = name.lower()
        for k, v in self.headers:
            if k.lower() == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header; comma lists split for the headers that are lists."""
        key = name.lower()
        values = [v for k, v in self.headers if k.lower() == key]
        if key in ("via", "route", "record-route", "contact", "supported", "allow", "require"):
            return [item for v in values for item in split_list(v)]
        return values

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of a header by one value (appended if it was absent)."""
        key = name.lower()
        for i, (k, _) in enumerate(self.headers):
            if k.lower() == key:
                self.headers[i] = (k, value)
                self.headers[i + 1 :] = [(k2, v2) for k2, v2 in self.headers[i + 1 :] if k2.lower() != key]
                return
        self.headers.append((name, value))

    def add(self, name: str, value: str) -> None:
        """Append one header."""
        self.headers.append((name, value))

    def remove(self, name: str) -> None:
        """Drop every occurrence of a header."""
        key = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != key]

    # -- typed views ---------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        """The CSeq."""
        return CSeq.parse(self.get("CSeq") or "")

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return NameAddr.parse(self.get("From") or "")

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return NameAddr.parse(self.get("To") or "")

    @property
    def vias(self) -> list[Via]:
        """Every Via entry, topmost first."""
        return [Via.parse(v) for v in self.get_all("Via")]

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact entry (``*`` is not used by this agent and fails to parse)."""
        return [NameAddr.parse(v) for v in self.get_all("Contact")]

    def _head_lines(self) -> list[str]:
        return [f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length"]

    def _serialise(self, start: str) -> bytes:
        lines = [start, *self._head_lines(), f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class SipRequest(SipMessage):
    """A SIP request."""

    method: str = ""
    uri: str = ""

    def __bytes__(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} SIP/2.0")

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} Call-ID={self.call_id!r}>"


@dataclass
class SipResponse(SipMessage):
    """A SIP response."""

    status: int = 0
    reason: str = ""

    @property
    def method(self) -> str:
        """The method of the request this answers (from CSeq)."""
        return self.cseq.method

    def __bytes__(self) -> bytes:
        return self._serialise(f"SIP/2.0 {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} Call-ID={self.call_id!r}>"


def _parse_head(head: bytes) -> SipRequest | SipResponse:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("the message head is not UTF-8") from exc
    lines = text.split("\r\n")
    start = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("a continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN_RE.match(name):
            raise SipParseError("a header line without a token name and a colon")
        if any(ord(c) < 32 and c != "\t" for c in value):
            raise SipParseError("a control character in a header value")
        headers.append((canonical_name(name), value.strip()))
    message: SipRequest | SipResponse
    if m := _REQUEST_LINE.match(start):
        message = SipRequest(headers=headers, method=m.group(1), uri=m.group(2))
    elif m := _STATUS_LINE.match(start):
        message = SipResponse(headers=headers, status=int(m.group(1)), reason=m.group(2))
    else:
        raise SipParseError("the start line is neither a SIP/2.0 request nor a status line")
    return message


def _salvage(head: bytes) -> SipRequest | SipResponse | None:
    """What can be answered of a head that did not parse: its well-formed lines only."""
    lines = head.decode("utf-8", "replace").split("\r\n")
    kept = [lines[0]] + [line for line in lines[1:]
                         if _TOKEN_RE.match(line.partition(":")[0].strip()) and ":" in line
                         and not any(ord(c) < 32 and c != "\t" for c in line)]
    try:
        message = _parse_head("\r\n".join(kept).encode())
    except SipParseError:
        return None
    return _answerable(message)


def _check(message: SipRequest | SipResponse) -> None:
    """The mandatory headers of RFC 3261 §8.1.1, parsed, so that later code can rely on them."""
    missing = [h for h in _REQUIRED if message.get(h) is None]
    if missing:
        raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}")
    message.vias  # noqa: B018 - parse to validate
    message.from_  # noqa: B018
    message.to  # noqa: B018
    cseq = message.cseq
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError("the CSeq method is not the request method")


class BadInput:
    """Bytes that did not make a message: the error, and the head when it parsed (to answer)."""

    def __init__(self, error: SipParseError, head: SipRequest | SipResponse | None) -> None:
        self.error = error
        self.head = head

    def __repr__(self) -> str:
        return f"<BadInput {type(self.error).__name__}: {self.error}>"


def _content_length(message: SipMessage) -> int | None:
    value = message.get("Content-Length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 12:
        raise SipParseError("malformed Content-Length")
    return int(value)


def parse_message(data: bytes, *, max_head: int = MAX_HEAD_SIZE,
                  max_body: int = MAX_BODY_SIZE) -> SipRequest | SipResponse:
    """Parse one complete message (a UDP datagram).

    Raises:
        SipParseError: malformed; ``exc.head`` holds the parsed head when there is one.
        MessageTooLargeError: the head or the body exceeds the limits.
    """
    head_bytes, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise _with_head(SipParseError("no blank line after the headers"), None)
    if len(head_bytes) > max_head:
        raise _with_head(MessageTooLargeError("the message head is too large"), None)
    try:
        message = _parse_head(head_bytes)
    except SipParseError as exc:
        raise _with_head(exc, _salvage(head_bytes)) from None
    try:
        _check(message)
        length = _content_length(message)
        if length is not None:
            if length > len(body):
                raise SipParseError("the body is shorter than its Content-Length")
            body = body[:length]
        if len(body) > max_body:
            raise MessageTooLargeError(f"a {len(body)}-byte body exceeds the {max_body}-byte limit")
    except SipParseError as exc:
        raise _with_head(exc, _answerable(message)) from None
    message.body = body
    return message


def _answerable(message: SipRequest | SipResponse) -> SipRequest | SipResponse | None:
    """The head, if it has what an answer needs (Via, From, To, Call-ID, CSeq all parse)."""
    try:
        message.vias  # noqa: B018
        message.from_  # noqa: B018
        message.to  # noqa: B018
        message.cseq  # noqa: B018
    except SipParseError:
        return None
    return message if message.call_id else None


def _with_head(exc: SipParseError, head: SipRequest | SipResponse | None) -> SipParseError:
    exc.head = head  # type: ignore[attr-defined]
    return exc


class StreamParser:
    """Cut a TCP/TLS byte stream into messages (``Content-Length`` framing, RFC 3261 §18.3).

    :meth:`feed` returns what completed: messages, :class:`BadInput` (answerable when its
    ``head`` is set), and ``b"ping"`` for an RFC 5626 CRLFCRLF keep-alive. An oversized body
    is skipped byte for byte so the stream stays in step; a head with no end in sight, or
    without Content-Length (mandatory on streams), cannot be resynchronised: ``broken`` is
    set and the connection should be closed.
    """

    def __init__(self, *, max_head: int = MAX_HEAD_SIZE, max_body: int = MAX_BODY_SIZE) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.broken = False
        self._buffer = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> list[SipRequest | SipResponse | BadInput | bytes]:
        """Add bytes; return every complete item, in order."""
        out: list[SipRequest | SipResponse | BadInput | bytes] = []
        if self.broken:
            return out
        self._buffer += data
        while True:
            if self._skip:
                n = min(self._skip, len(self._buffer))
                del self._buffer[:n]
                self._skip -= n
                if self._skip:
                    return out
            stripped = 0
            while self._buffer[stripped : stripped + 2] == b"\r\n":
                stripped += 2
            if stripped:
                del self._buffer[:stripped]
                if stripped >= 4:
                    out.append(b"ping")
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_head:
                    self._break(out, MessageTooLargeError("the message head is too large"))
                return out
            if end > self.max_head:
                self._break(out, MessageTooLargeError("the message head is too large"))
                return out
            head = bytes(self._buffer[:end])
            try:
                message = _parse_head(head)
            except SipParseError as exc:
                self._break(out, exc, _salvage(head))
                return out
            try:
                length = _content_length(message)
            except SipParseError as exc:
                self._break(out, exc, _answerable(message))
                return out
            if length is None:
                self._break(out, SipParseError("no Content-Length on a stream transport"),
                            _answerable(message))
                return out
            if length > self.max_body:
                del self._buffer[: end + 4]
                self._skip = length
                out.append(BadInput(MessageTooLargeError(
                    f"a {length}-byte body exceeds the {self.max_body}-byte limit"), _answerable(message)))
                continue
            if len(self._buffer) < end + 4 + length:
                return out
            message.body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            try:
                _check(message)
            except SipParseError as exc:
                out.append(BadInput(exc, _answerable(message)))
                continue
            out.append(message)

    def _break(self, out: list[SipRequest | SipResponse | BadInput | bytes], exc: SipParseError,
               head: SipRequest | SipResponse | None = None) -> None:
        self.broken = True
        self._buffer.clear()
        out.append(BadInput(exc, head))


def make_response(request: SipRequest, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, extra: Iterable[tuple[str, str]] = ()) -> SipResponse:
    """The response to ``request`` (RFC 3261 §8.2.6): Via, From, Call-ID, CSeq copied; To tagged.

    ``to_tag`` is added when the request's To has none (never for 100 Trying). Record-Route is
    copied on 2xx to dialog-creating requests (§12.1.1).
    """
    headers = [(k, v) for k, v in request.headers if k.lower() in ("via", "from", "call-id", "cseq")]
    to = request.get("To") or ""
    if status > 100 and to_tag and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    headers.insert(min(2, len(headers)), ("To", to))
    if 200 <= status < 300 and request.method in ("INVITE", "SUBSCRIBE"):
        headers += [(k, v) for k, v in request.headers if k.lower() == "record-route"]
    headers += list(extra)
    return SipResponse(headers=headers, status=status, reason=reason or REASONS.get(status, "Unknown"))
