"""Malformed requests get a clean X3DH error answer (keyserver.md §1.7), and change nothing."""

from __future__ import annotations

import pytest
from ks_wire import Device, error, get_bundles, hdr, u16

from pylime.keyserver import KeyServer
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:0000-a"
BOB = "sip:bob@example.org;gr=urn:uuid:0000-b"


def _is_error(answer: bytes, curve: int, code: int) -> bool:
    return answer[:4] == error(curve, code) and answer[4:].decode("utf-8") != ""


def test_wrong_content_type_is_bad_content_type(server: KeyServer, curve: Curve) -> None:
    """A content type other than x3dh/octet-stream is answered with code 0x00 (upstream HEAD crashes)."""
    body = Device(ALICE, curve).register()
    for content_type in ("application/octet-stream", "", None, "text/plain"):
        assert _is_error(server.handle(ALICE, body, content_type=content_type), curve, 0x00)
    assert server.opk_count(ALICE) == 0


def test_content_type_parameters_and_case_are_tolerated(server: KeyServer, curve: Curve) -> None:
    """The media type is compared without parameters and case-insensitively."""
    body = Device(ALICE, curve).register()
    assert server.handle(ALICE, body, content_type="X3DH/Octet-Stream; q=1") == hdr(0x09, curve)


@pytest.mark.parametrize("sender", [None, "", "a\x00b", "caf\udce9"])
def test_missing_or_invalid_sender_is_missing_sender_id(
    server: KeyServer, curve: Curve, sender: str | None
) -> None:
    """No identity header (or one that cannot be a device id) is answered with code 0x02."""
    for body in (Device(ALICE, curve).register(), hdr(0x02, curve), get_bundles(curve, ALICE)):
        assert _is_error(server.handle(sender, body), curve, 0x02)


@pytest.mark.parametrize("body", [b"", b"\x01", b"\x01\x09"])
def test_body_under_three_bytes_is_bad_size(server: KeyServer, body: bytes) -> None:
    """A body shorter than the header is answered with bad_size (upstream HEAD crashes)."""
    assert _is_error(server.handle(ALICE, body), 0, 0x04)


def test_wrong_version_is_bad_protocol_version(server: KeyServer, curve: Curve) -> None:
    """A version byte other than 0x01 is answered with code 0x03, echoing the curve byte."""
    body = b"\x02" + Device(ALICE, curve).register()[1:]
    assert _is_error(server.handle(ALICE, body), curve, 0x03)


@pytest.mark.parametrize("curve_byte", [0, 6, 0x42, 0xFF])
def test_unserved_curve_is_bad_curve(server: KeyServer, curve_byte: int) -> None:
    """A curve id other than lime's 1-5 is answered with bad_curve (0x01)."""
    assert _is_error(server.handle(ALICE, hdr(0x07, curve_byte)), curve_byte, 0x01)


@pytest.mark.parametrize("msg_type", [0x00, 0x06, 0x08, 0x0A, 0x42, 0xFF])
def test_unknown_or_response_type_is_bad_request(
    server: KeyServer, curve: Curve, msg_type: int
) -> None:
    """A type that is not a request is answered with bad_request (upstream sends code 0x00)."""
    assert _is_error(server.handle(ALICE, hdr(msg_type, curve) + b"\x00" * 40), curve, 0x08)


def test_deprecated_register_is_a_proper_error(server: KeyServer, curve: Curve) -> None:
    """The deprecated registerUser 0x01 is refused with bad_request and registers nothing."""
    ik = Device(ALICE, curve).ik
    assert _is_error(server.handle(ALICE, hdr(0x01, curve) + ik), curve, 0x08)
    assert server.handle(ALICE, hdr(0x07, curve))[:4] == error(curve, 0x06)


def test_bundle_request_for_zero_ids_is_bad_request(server: KeyServer, curve: Curve) -> None:
    """getPeerBundle with count 0 is answered with bad_request (upstream dies after answering)."""
    assert _is_error(server.handle(ALICE, hdr(0x05, curve) + u16(0)), curve, 0x08)
    assert server.handle(ALICE, hdr(0x07, curve))[:4] == error(curve, 0x06)  # still alive


def test_bundle_request_with_fewer_ids_than_announced(server: KeyServer, curve: Curve) -> None:
    """A count larger than the ids present is bad_size, and no OPk is consumed (upstream crashes)."""
    server.handle(ALICE, Device(ALICE, curve).register([1]))
    body = get_bundles(curve, ALICE)
    lying = body[:3] + u16(3) + body[5:]
    assert _is_error(server.handle(BOB, lying), curve, 0x04)
    assert _is_error(server.handle(BOB, body[:-1]), curve, 0x04)  # id cut short
    assert _is_error(server.handle(BOB, hdr(0x05, curve) + b"\x00"), curve, 0x04)  # no count
    assert server.opk_count(ALICE) == 1


def test_bundle_request_with_more_ids_than_announced(server: KeyServer, curve: Curve) -> None:
    """Bytes after the announced ids are bad_request: the count disagrees with the body."""
    server.handle(ALICE, Device(ALICE, curve).register([1]))
    body = get_bundles(curve, ALICE, ALICE)
    assert _is_error(server.handle(BOB, body[:3] + u16(1) + body[5:]), curve, 0x08)
    assert server.opk_count(ALICE) == 1


def test_truncated_register_is_bad_size(server: KeyServer, curve: Curve) -> None:
    """A registerUser cut anywhere is bad_size and registers nothing."""
    body = Device(ALICE, curve).register(range(3))
    for cut in range(3, len(body)):
        assert _is_error(server.handle(ALICE, body[:cut]), curve, 0x04), cut
    assert server.opk_count(ALICE) == 0
    assert server.handle(ALICE, hdr(0x07, curve))[:4] == error(curve, 0x06)


def test_register_count_disagreeing_with_body(server: KeyServer, curve: Curve) -> None:
    """An OPk count above the OPks present is bad_size; below it (trailing bytes) bad_request."""
    alice = Device(ALICE, curve)
    body = alice.register(range(3))
    count_at = len(body) - 3 * (alice.x + 4) - 2
    more = body[:count_at] + u16(4) + body[count_at + 2 :]
    fewer = body[:count_at] + u16(2) + body[count_at + 2 :]
    assert _is_error(server.handle(ALICE, more), curve, 0x04)
    assert _is_error(server.handle(ALICE, fewer), curve, 0x08)
    assert server.opk_count(ALICE) == 0


def test_truncated_post_spk_and_post_opks_change_nothing(server: KeyServer, curve: Curve) -> None:
    """Short postSPk / postOPks bodies are bad_size; the stored keys stay as they were."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([1]))
    spk = alice.post_spk(3, 9)
    opks = alice.post_opks([5, 6])
    assert _is_error(server.handle(ALICE, spk[:-1]), curve, 0x04)
    assert _is_error(server.handle(ALICE, spk + b"\x00"), curve, 0x08)
    assert _is_error(server.handle(ALICE, opks[:-1]), curve, 0x04)
    assert _is_error(server.handle(ALICE, hdr(0x04, curve)), curve, 0x04)
    assert server.handle(BOB, get_bundles(curve, ALICE)) == hdr(0x06, curve) + u16(
        1
    ) + alice.bundle(1)


def test_trailing_bytes_on_empty_requests_are_bad_request(server: KeyServer, curve: Curve) -> None:
    """deleteUser and getSelfOPks carry no body; extra bytes are refused and delete nothing."""
    server.handle(ALICE, Device(ALICE, curve).register([1]))
    assert _is_error(server.handle(ALICE, hdr(0x02, curve) + b"x"), curve, 0x08)
    assert _is_error(server.handle(ALICE, hdr(0x07, curve) + b"x"), curve, 0x08)
    assert server.opk_count(ALICE) == 1


def test_odd_device_ids_in_bundle_requests_are_unknown(server: KeyServer, curve: Curve) -> None:
    """Ids with invalid UTF-8 or NUL bytes are answered flag 2 and echoed byte for byte."""
    odd = [b"\xff\xfe", b"a\x00b", b""]
    body = hdr(0x05, curve) + u16(len(odd)) + b"".join(u16(len(i)) + i for i in odd)
    expected = hdr(0x06, curve) + u16(len(odd)) + b"".join(u16(len(i)) + i + b"\x02" for i in odd)
    assert server.handle(BOB, body) == expected


def test_bytearray_and_memoryview_bodies_work(server: KeyServer, curve: Curve) -> None:
    """The body may be any bytes-like object."""
    body = Device(ALICE, curve).register()
    assert server.handle(ALICE, bytearray(body)) == hdr(0x09, curve)
    assert server.handle(ALICE, memoryview(body)) == hdr(0x09, curve)
