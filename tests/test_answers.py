"""pylime.answers: one judge of key-server answers, shared by both backends.

Each kind of answer is recognised, with the typed error it stands for and whether the server
may have done the work (``lost``); the order of the checks is lime's own.
"""

from __future__ import annotations

import pytest

from pylime import errors
from pylime.answers import LIME_MISJUDGES, OPERATION_FAILS, Kind, judge
from pylime.keyserver import protocol as proto
from pylime.types import Curve

URL = "https://keys.example.org/lime"
C = int(Curve.C25519)
REGISTER = bytes((1, proto.MessageType.REGISTER_USER, C)) + b"..."
GET_BUNDLE = proto.GetPeerBundle(C, ("sip:bob@example.org;gr=urn:uuid:2",)).to_bytes()
ACK_REGISTER = proto.Ack(C, proto.MessageType.REGISTER_USER).to_bytes()
ED_BASE = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")
X_GOOD = bytes([9]) + bytes(31)


def _bundle(spk: bytes = X_GOOD) -> bytes:
    bundle = proto.Bundle("sip:bob@example.org;gr=urn:uuid:2", ED_BASE, spk, 7, bytes(64))
    return proto.PeerBundle(C, (bundle,)).to_bytes()


def test_a_well_formed_answer_of_the_right_type_is_ok():
    """An acknowledgement of registerUser is OK, parsed, with no problem."""
    verdict = judge(URL, REGISTER, (200, ACK_REGISTER))
    assert verdict.kind is Kind.OK and verdict.problem is None and not verdict.lost
    assert verdict.message == proto.Ack(C, proto.MessageType.REGISTER_USER)
    assert (verdict.code, verdict.body) == (200, ACK_REGISTER)


def test_a_transport_exception_is_unreachable_and_chained():
    """The transport raising gives a TransportError chained to it; the answer counts as lost."""
    cause = ConnectionResetError("reset")
    verdict = judge(URL, REGISTER, cause)
    assert verdict.kind is Kind.UNREACHABLE and verdict.lost
    assert isinstance(verdict.problem, errors.TransportError)
    assert verdict.problem.__cause__ is cause and verdict.problem.answer_lost
    assert (verdict.code, verdict.body) == (0, b"")


@pytest.mark.parametrize("answer", [None, "200", (200,), (200, b"", b""), ("x", b""),
                                    (200, 12.5)])
def test_an_answer_that_is_not_a_status_and_bytes_is_unreachable(answer):
    """Whatever the transport returns that is not (int, bytes) is its failure, typed."""
    verdict = judge(URL, REGISTER, answer)
    assert verdict.kind is Kind.UNREACHABLE
    assert isinstance(verdict.problem, errors.TransportError)


def test_an_http_error_is_lost_and_carries_the_status():
    """An HTTP status other than 200 is KeyServerHTTPError with .status; maybe done: lost."""
    verdict = judge(URL, REGISTER, (503, b"busy"))
    assert verdict.kind is Kind.HTTP_ERROR and verdict.lost
    assert isinstance(verdict.problem, errors.KeyServerHTTPError)
    assert verdict.problem.status == 503


def test_an_x3dh_error_message_is_a_refusal_that_did_nothing():
    """An error message is KeyServerProtocolError with its code, parsed, and not lost."""
    body = proto.ErrorMessage(C, proto.ErrorCode.USER_ALREADY_IN, "taken").to_bytes()
    verdict = judge(URL, REGISTER, (200, body))
    assert verdict.kind is Kind.REFUSED and not verdict.lost
    assert isinstance(verdict.problem, errors.KeyServerProtocolError)
    assert verdict.problem.code == proto.ErrorCode.USER_ALREADY_IN
    assert "taken" in str(verdict.problem) and not verdict.problem.answer_lost
    assert isinstance(verdict.message, proto.ErrorMessage)


@pytest.mark.parametrize("body", [b"", b"\x01", b"\x01\x09", b"\x02\x09\x01",
                                  bytes((1, 0xFF, C))], ids=["empty", "1-byte", "2-bytes",
                                                             "version-2", "error-no-code"])
def test_a_body_that_is_not_an_x3dh_message_is_malformed_and_lost(body):
    """Too short, another protocol version, an error without its code: malformed, lost."""
    verdict = judge(URL, REGISTER, (200, body))
    assert verdict.kind is Kind.MALFORMED and verdict.lost
    assert type(verdict.problem) is errors.KeyServerError


def test_an_answer_of_another_type_is_refused_before_lime_sees_it():
    """An acknowledgement answering getPeerBundle is WRONG_TYPE (lime would encrypt nothing)."""
    verdict = judge(URL, GET_BUNDLE, (200, ACK_REGISTER))
    assert verdict.kind is Kind.WRONG_TYPE and verdict.lost
    assert "request type 0x05" in str(verdict.problem)
    assert Kind.WRONG_TYPE in LIME_MISJUDGES


def test_a_bundle_with_a_low_order_key_is_refused_and_names_the_device():
    """A peerBundle whose SPk is a low-order point is LOW_ORDER, naming the device."""
    verdict = judge(URL, GET_BUNDLE, (200, _bundle(spk=bytes(32))))
    assert verdict.kind is Kind.LOW_ORDER and not verdict.lost
    assert "sip:bob@example.org;gr=urn:uuid:2" in str(verdict.problem)
    assert judge(URL, GET_BUNDLE, (200, _bundle())).kind is Kind.OK


def test_an_answer_for_another_curve_fails_the_operation_itself():
    """An answer for another curve has no problem of its own: the operation fails as lime's."""
    body = bytes((1, proto.MessageType.REGISTER_USER, int(Curve.C448)))
    verdict = judge(URL, REGISTER, (200, body))
    assert verdict.kind is Kind.OTHER_CURVE and verdict.problem is None
    assert "another curve" in verdict.detail and Kind.OTHER_CURVE in OPERATION_FAILS


def test_a_truncated_answer_of_the_right_type_fails_the_operation_itself():
    """A peerBundle cut short is INVALID: the operation's own failure, with the parser's word."""
    verdict = judge(URL, GET_BUNDLE, (200, _bundle()[:-10]))
    assert verdict.kind is Kind.INVALID and verdict.problem is None
    assert "too short" in verdict.detail


@pytest.mark.parametrize("answer,request_body", [
    (ACK_REGISTER, REGISTER),
    (_bundle(), GET_BUNDLE),
    (proto.SelfOPks(C, (1, 2)).to_bytes(), bytes((1, proto.MessageType.GET_SELF_OPKS, C))),
], ids=["ack", "peerBundle", "selfOPks"])
def test_bytes_after_a_valid_answer_are_refused_and_lost(answer, request_body):
    """Trailing bytes (which liblime 5.1.64 ignores) make the answer refused, as if lost."""
    verdict = judge(URL, request_body, (200, answer + b"junk"))
    assert verdict.kind is Kind.TRAILING and verdict.lost
    assert "4 bytes after its answer" in str(verdict.problem)
    assert judge(URL, request_body, (200, answer)).kind is Kind.OK


def test_an_error_message_text_is_never_trailing():
    """An error message's text runs to the end of the body: no trailing bytes there."""
    body = proto.ErrorMessage(C, proto.ErrorCode.SERVER_FAILURE, "x" * 300).to_bytes()
    assert judge(URL, GET_BUNDLE, (200, body)).kind is Kind.REFUSED


def test_lime_order_low_order_wins_over_another_curve():
    """The low-order check comes before the curve check, as the binding must see it first."""
    body = bytearray(_bundle(spk=bytes(32)))
    verdict = judge(URL, bytes((1, proto.MessageType.GET_PEER_BUNDLE, int(Curve.C448))),
                    (200, bytes(body)))
    assert verdict.kind is Kind.LOW_ORDER


def test_every_kind_is_either_raised_left_to_the_operation_or_ok():
    """Each kind has one treatment: a problem to raise, the operation's failure, or success."""
    assert not LIME_MISJUDGES & OPERATION_FAILS
    assert Kind.OK not in LIME_MISJUDGES | OPERATION_FAILS
