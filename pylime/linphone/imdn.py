"""IMDN notifications (RFC 5438) as liblinphone 5.1.65 writes and reads them.

A delivery or display notification is an ordinary chat message whose inner CPIM carries
``Content-Disposition: notification`` and ``Content-Type: message/imdn+xml``; 5.1.65 puts no
``imdn.Message-ID`` on it (observed: the IMDN of a real core, decrypted by pylime). Its XML is
one line::

    <?xml version="1.0" encoding="UTF-8" standalone="no" ?><imdn xmlns="urn:ietf:params:xml:ns:imdn">
    <message-id>ID</message-id><datetime>…Z</datetime>
    <delivery-notification><status><delivered/></status></delivery-notification></imdn>

A failed delivery carries Linphone's reason extension
(``<imdn:reason code="488">Not acceptable here</imdn:reason>`` in the namespace
``http://www.linphone.org/xsds/imdn.xsd``, observed from 5.1.65);
that one is sent in clear, as a bare ``message/cpim`` (linphone.md §1.6). In group rooms 5.1.65
aggregates several notifications into one message: the CPIM content is then
``multipart/mixed`` with one ``message/imdn+xml`` part each (observed).
"""

from __future__ import annotations

import datetime as _dt
import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.message import Message

from pylime.linphone.cpim import CpimMessage
from pylime.linphone.errors import CpimError

__all__ = [
    "IMDN_CONTENT_TYPE",
    "Imdn",
    "ImdnStatus",
    "build_imdn",
    "build_imdn_cpim",
    "is_imdn",
    "parse_imdn",
    "parse_imdns",
]

IMDN_CONTENT_TYPE = "message/imdn+xml"
_NS = "urn:ietf:params:xml:ns:imdn"
_LINPHONE_NS = "http://www.linphone.org/xsds/imdn.xsd"
_MAX_XML = 64 * 1024


class ImdnStatus(enum.Enum):
    """What a notification says about the message it names."""

    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    FAILED = "failed"
    ERROR = "error"
    FORBIDDEN = "forbidden"


_KIND = {ImdnStatus.DISPLAYED: "display-notification"}


@dataclass(frozen=True)
class Imdn:
    """A parsed notification: the message it is about, its status, when, and a failure reason."""

    message_id: str
    status: ImdnStatus
    datetime: str | None = None
    reason_code: int | None = None
    reason: str | None = None


def build_imdn(message_id: str, status: ImdnStatus, *, when: _dt.datetime | None = None,
               reason_code: int | None = None, reason: str = "") -> bytes:
    """The ``message/imdn+xml`` document for ``message_id``, as liblinphone writes it."""
    stamp = (when or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kind = _KIND.get(status, "delivery-notification")
    extra = ""
    ns = ""
    if reason_code is not None:
        ns = f' xmlns:imdn="{_LINPHONE_NS}"'
        extra = f'<imdn:reason code="{int(reason_code)}">{_escape(reason)}</imdn:reason>'
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="no" ?><imdn xmlns="{_NS}"{ns}>'
            f"<message-id>{_escape(message_id)}</message-id><datetime>{stamp}</datetime>"
            f"<{kind}><status><{status.value}/>{extra}</status></{kind}></imdn>").encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_imdn_cpim(sender: str, conversation: str, message_id: str, status: ImdnStatus, *,
                    when: _dt.datetime | None = None, reason_code: int | None = None,
                    reason: str = "") -> CpimMessage:
    """The CPIM message carrying a notification from ``sender`` into ``conversation``."""
    now = (when or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    body = build_imdn(message_id, status, when=now, reason_code=reason_code, reason=reason)
    return CpimMessage(
        headers=(("From", f"<{sender}>"), ("To", f"<{conversation}>"),
                 ("DateTime", now.strftime("%Y-%m-%dT%H:%M:%SZ"))),
        content_headers=(("Content-Disposition", "notification"), ("Content-Type", IMDN_CONTENT_TYPE),
                         ("Content-Length", str(len(body)))),
        content=body,
    )


def is_imdn(cpim: CpimMessage) -> bool:
    """Whether the CPIM message carries a notification (one, or several aggregated)."""
    kind = (cpim.content_type or "").split(";")[0].strip().lower()
    if kind == IMDN_CONTENT_TYPE:
        return True
    return kind == "multipart/mixed" and IMDN_CONTENT_TYPE.encode() in cpim.content[:4096]


def parse_imdns(cpim: CpimMessage) -> list[Imdn]:
    """Every notification a CPIM message carries, single or aggregated, in order.

    Raises:
        CpimError: not a notification, or one that does not parse.
    """
    content_type = cpim.content_type or ""
    if content_type.split(";")[0].strip().lower() == IMDN_CONTENT_TYPE:
        return [parse_imdn(cpim.content)]
    holder = Message()
    holder["Content-Type"] = content_type.replace("\r", " ").replace("\n", " ")
    boundary = holder.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise CpimError("an aggregated IMDN without a multipart boundary")
    out = []
    # message/* parts are split by hand: the email package would re-parse them as messages.
    for chunk in cpim.content.split(b"--" + boundary.encode("utf-8", "replace"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        if IMDN_CONTENT_TYPE.encode() in head.lower():
            out.append(parse_imdn(body.rstrip(b"\r\n")))
    if not out:
        raise CpimError("a multipart notification without message/imdn+xml parts")
    return out


def parse_imdn(data: bytes) -> Imdn:
    """Parse a ``message/imdn+xml`` document.

    Raises:
        CpimError: not an IMDN document we understand (or a DOCTYPE, which we never accept).
    """
    if len(data) > _MAX_XML or b"<!DOCTYPE" in data.upper().replace(b"<!doctype", b"<!DOCTYPE"):
        raise CpimError("an IMDN document that is too large or declares a DOCTYPE")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise CpimError("an IMDN document that is not well-formed XML") from exc
    if root.tag != f"{{{_NS}}}imdn":
        raise CpimError("not an urn:ietf:params:xml:ns:imdn document")
    message_id = root.findtext(f"{{{_NS}}}message-id")
    if not message_id:
        raise CpimError("an IMDN without message-id")
    for kind in ("delivery-notification", "display-notification", "processing-notification"):
        status = root.find(f"{{{_NS}}}{kind}/{{{_NS}}}status")
        if status is None:
            continue
        for child in status:
            name = child.tag.rsplit("}", 1)[-1]
            try:
                value = ImdnStatus(name)
            except ValueError:
                continue
            reason = status.find(f"{{{_LINPHONE_NS}}}reason")
            code = reason.get("code") if reason is not None else None
            return Imdn(message_id.strip(), value, root.findtext(f"{{{_NS}}}datetime"),
                        int(code) if code and code.isdigit() else None,
                        reason.text if reason is not None else None)
    raise CpimError("an IMDN without a status we know")
