"""How a client judges the key server's answer to one request: the one judge both backends use.

:func:`judge` sorts an answer (or the transport's exception) into a :class:`Kind`, with the
typed error it stands for and whether the server may have done what was asked even though
the answer did not reach us intact (``lost``). Each backend then acts on the verdict in its
own way, and both end in the same observable state:

- the binding (:mod:`pylime.manager`) hands liblime the answer as it came where lime
  judges it correctly itself, and a failure (status 0) where lime 5.1.64 would misjudge it
  (an answer of the wrong type it takes as success, a low-order key that corrupts its heap,
  trailing bytes it ignores, a peerBundle without a requested device, on which it loops for
  ever);
- the reference (:mod:`pylime.reference.manager`) raises the error, or acts on the parsed
  message.

The order of the checks is lime's own ``process_response`` order (lime-wire.md §4.5), with
pylime's extra refusals placed where lime would first misjudge. Pure Python.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple, cast

from pylime import errors
from pylime.keycheck import low_order_bundle_device
from pylime.keyserver import protocol as proto

__all__ = ["Kind", "Verdict", "judge"]

_ERROR = int(proto.MessageType.ERROR)


class Kind(enum.Enum):
    """What an answer is, from the client's side."""

    OK = "ok"                    #: a well-formed answer of the type the request calls for
    UNREACHABLE = "unreachable"  #: the transport raised, or returned something not (int, bytes)
    HTTP_ERROR = "http-error"    #: an HTTP status other than 200
    REFUSED = "refused"          #: an X3DH error message: the server did nothing
    MALFORMED = "malformed"      #: not an X3DH message (short, wrong version, error without code)
    WRONG_TYPE = "wrong-type"    #: a message of another type than the request calls for
    LOW_ORDER = "low-order"      #: a peerBundle carrying a low-order key (pylime.keycheck)
    OTHER_CURVE = "other-curve"  #: an answer for another curve than the request's
    INVALID = "invalid"          #: of the right type but unparsable (truncated, bad flag...)
    TRAILING = "trailing"        #: a valid message followed by bytes that belong to none
    INCOMPLETE = "incomplete"    #: a peerBundle without an entry for a device it was asked for


#: Kinds whose answer lime 5.1.64 would misjudge: the binding hands lime a failure instead.
LIME_MISJUDGES = frozenset({Kind.UNREACHABLE, Kind.WRONG_TYPE, Kind.LOW_ORDER, Kind.TRAILING,
                            Kind.INCOMPLETE})
#: Kinds where the operation fails with its own error class (lime's judgement, not ours).
OPERATION_FAILS = frozenset({Kind.OTHER_CURVE, Kind.INVALID})


class Verdict(NamedTuple):
    """The judgement of one answer.

    ``problem`` is the error to raise (None for OK and for the kinds where the operation
    fails with its own error class: then ``detail`` says why). ``lost`` is True when the
    server may have done what was asked. ``code``/``body`` are the answer as received
    (0 and b"" when the transport failed); ``message`` is the parsed answer where it parsed.
    """

    kind: Kind
    problem: errors.KeyServerError | None
    lost: bool
    code: int
    body: bytes
    message: proto.Response | None = None
    detail: str = ""


def _verdict(kind: Kind, problem: errors.KeyServerError | None, code: int, body: bytes, *,
             lost: bool = False, message: proto.Response | None = None,
             detail: str = "") -> Verdict:
    if problem is not None and lost:
        problem.answer_lost = True
    return Verdict(kind, problem, lost, code, body, message, detail)


def judge(url: str, request: bytes, answer: object) -> Verdict:
    """Judge the answer to ``request`` (an X3DH request body) sent to ``url``.

    ``answer`` is what the transport returned, ``(http_status, body)``, or the exception it
    raised. Never raises.
    """
    if not isinstance(answer, BaseException):
        try:
            raw_code, raw_body = cast("tuple[Any, Any]", answer)
            code, body = int(raw_code), bytes(raw_body)
        except Exception as exc:  # noqa: BLE001 - a malformed answer is the transport's fault
            answer = exc
    if isinstance(answer, BaseException):
        problem: errors.KeyServerError = errors.TransportError(
            f"could not reach the key server at {url}: {type(answer).__name__}")
        problem.__cause__ = answer
        return _verdict(Kind.UNREACHABLE, problem, 0, b"", lost=True)
    if code != 200:
        return _verdict(Kind.HTTP_ERROR, errors.KeyServerHTTPError(
            f"key server at {url} answered HTTP {code}", code), code, body, lost=True)
    if len(body) >= 4 and body[0] == proto.PROTOCOL_VERSION and body[1] == _ERROR:
        text = body[4:].decode("utf-8", "replace")[:200]
        return _verdict(Kind.REFUSED, errors.KeyServerProtocolError(
            f"key server at {url} refused the request: error 0x{body[3]:02x} {text!r}",
            body[3]), code, body, message=proto.ErrorMessage(body[2], body[3], text))
    if (len(body) < 3 or body[0] != proto.PROTOCOL_VERSION
            or body[1] == _ERROR):  # an error message too short to carry its code
        return _verdict(Kind.MALFORMED, errors.KeyServerError(
            f"key server at {url} sent a malformed answer"), code, body, lost=True)
    expected = proto.ANSWER_TYPE.get(request[1]) if len(request) > 1 else None
    if expected is not None and body[1] != expected:
        # lime 5.1.64 does not check the type: an acknowledgement answering registerUser
        # counts as success without activating the user, one answering getPeerBundle ends
        # encrypt with nothing encrypted.
        return _verdict(Kind.WRONG_TYPE, errors.KeyServerError(
            f"key server at {url} answered request type 0x{request[1]:02x} with message "
            f"type 0x{body[1]:02x}"), code, body, lost=True)
    try:
        message, size = proto.parse_response_size(body)
    except proto.X3DHParseError as exc:
        message, size, invalid = None, len(body), str(exc)
    else:
        invalid = ""
    if isinstance(message, proto.PeerBundle):
        device = low_order_bundle_device(message)
        if device is not None:
            return _verdict(Kind.LOW_ORDER, errors.KeyServerError(
                f"key server at {url} sent an invalid (low-order) key for {device!r}"),
                code, body, message=message)
        device = _unanswered_device(request, message)
        if device is not None:
            # lime 5.1.64 never returns from processing such an answer (an endless loop).
            return _verdict(Kind.INCOMPLETE, errors.KeyServerError(
                f"key server at {url} sent no bundle entry for {device!r}"),
                code, body, message=message)
    if len(request) > 2 and body[2] != request[2]:
        return _verdict(Kind.OTHER_CURVE, None, code, body,
                        detail=f"key server at {url} answered for another curve")
    if message is None:
        return _verdict(Kind.INVALID, None, code, body,
                        detail=f"key server at {url} sent an invalid answer: {invalid}")
    if size != len(body):
        return _verdict(Kind.TRAILING, errors.KeyServerError(
            f"key server at {url} sent {len(body) - size} bytes after its answer"),
            code, body, lost=True, message=message)
    return _verdict(Kind.OK, None, code, body, message=message)


def _unanswered_device(request: bytes, answer: proto.PeerBundle) -> str | None:
    """A device the getPeerBundle ``request`` asked for that ``answer`` has no entry for."""
    try:
        asked = proto.parse_request(request)
    except proto.X3DHParseError:
        return None
    if not isinstance(asked, proto.GetPeerBundle):
        return None
    answered = {b.device_id for b in answer.bundles}
    return next((d for d in asked.device_ids if d not in answered), None)
