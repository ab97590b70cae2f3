"""The reference's DR codec: layouts, sizes, strict parsing, byte-exact round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylime.errors import MalformedMessageError
from pylime.reference import encoding
from pylime.types import CLASSIC_CURVES, Curve

SIZES = {Curve.C25519: (32, 32), Curve.C448: (56, 57)}


def _init(curve: Curve, opk: bool) -> encoding.X3DHInit:
    x, e = SIZES[curve]
    return encoding.X3DHInit(curve, b"I" * e, b"E" * x, 0x01020304, 0x0A0B0C0D if opk else None)


@pytest.mark.parametrize("curve,opk,size", [
    (Curve.C25519, False, 69), (Curve.C25519, True, 73), (Curve.C448, False, 118),
    (Curve.C448, True, 122),
])
def test_x3dh_init_sizes(curve: Curve, opk: bool, size: int) -> None:
    """X3DH init sizes are 69/73 (C25519) and 118/122 (C448) with ids big-endian."""
    raw = _init(curve, opk).to_bytes()
    assert len(raw) == size == encoding.x3dh_init_size(curve, opk)
    assert raw[0] == (1 if opk else 0)
    assert encoding.parse_x3dh_init(raw, curve) == encoding.X3DHInit(
        curve, *(_init(curve, opk).ik, _init(curve, opk).ek), 0x01020304,
        0x0A0B0C0D if opk else None)


@pytest.mark.parametrize("curve", list(CLASSIC_CURVES))
def test_header_layout(curve: Curve) -> None:
    """Header = 01 ‖ type ‖ curve ‖ [init] ‖ Ns ‖ PN ‖ DHs: 39/63 bytes, +init when bit 0 set."""
    x, _ = SIZES[curve]
    h = encoding.DRHeader(curve, 0x0102, 0x0304, b"D" * x, True)
    raw = h.to_bytes()
    assert raw[:3] == bytes([1, 2, curve]) and raw[3:7] == b"\x01\x02\x03\x04"
    assert len(raw) == 7 + x
    with_init = encoding.DRHeader(curve, 1, 0, b"D" * x, False, _init(curve, True))
    raw2 = with_init.to_bytes()
    assert raw2[1] == 1 and len(raw2) == 7 + x + encoding.x3dh_init_size(curve, True)
    assert encoding.parse_dr_header(raw2, curve) == (with_init, len(raw2))


@pytest.mark.parametrize("bad", [b"", b"\x01\x02", b"\x02\x02\x01" + bytes(36),
                                 b"\x01\x02\x07" + bytes(36), b"\x01\x02\x01" + bytes(35),
                                 b"\x01\x03\x01\x01" + bytes(40)])
def test_bad_headers_are_malformed(bad: bytes) -> None:
    """Short input, wrong version, unknown curve or a truncated X3DH init are malformed."""
    with pytest.raises(MalformedMessageError):
        encoding.parse_dr_header(bad)


def test_curve_must_match_the_local_user() -> None:
    """A curve448 header is refused by a curve25519 user."""
    raw = encoding.DRHeader(Curve.C448, 0, 0, b"D" * 56, True).to_bytes() + bytes(16)
    with pytest.raises(MalformedMessageError):
        encoding.parse_dr_message(raw, Curve.C25519)
    assert encoding.parse_dr_message(raw, Curve.C448).to_bytes() == raw


def test_message_needs_room_for_the_tag_and_cipher_message_too() -> None:
    """A DR message or a cipher message shorter than the 16-byte tag is malformed."""
    h = encoding.DRHeader(Curve.C25519, 0, 0, b"D" * 32, True).to_bytes()
    with pytest.raises(MalformedMessageError):
        encoding.parse_dr_message(h + bytes(15))
    with pytest.raises(MalformedMessageError):
        encoding.parse_cipher_message(bytes(15))
    assert encoding.parse_cipher_message(bytes(16)) == (b"", bytes(16))


@given(st.binary(min_size=0, max_size=300), st.sampled_from(list(CLASSIC_CURVES)))
def test_parse_never_crashes_and_round_trips(data: bytes, curve: Curve) -> None:
    """Any input either is malformed or re-serialises to exactly the same bytes."""
    try:
        msg = encoding.parse_dr_message(data, curve)
    except MalformedMessageError:
        return
    assert msg.to_bytes() == data


def test_key_server_codec_is_re_exported() -> None:
    """The key-server messages come from the shared codec, not a second one."""
    from pylime.keyserver import protocol

    assert encoding.parse_request is protocol.parse_request
    assert encoding.PeerBundle is protocol.PeerBundle
    # sorted the way ruff's RUF022 keeps it: constants first, then the rest alphabetically
    assert encoding.__all__ == sorted(encoding.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(encoding, name) for name in encoding.__all__)


def test_reference_package_exports() -> None:
    """pylime.reference exports ReferenceManager, and its __all__ is sorted and complete."""
    import pylime.reference as ref

    assert ref.__all__ == ["ReferenceManager", "diagnose"]
    assert ref.ReferenceManager.__module__ == "pylime.reference.manager"
