"""The protocol module's builders and parsers agree with the byte layouts of lime-wire.md §4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ks_wire import Device, error, get_bundles, hdr, u16, u32, unknown_entry

from pylime.keyserver import protocol as p
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:0000-a"


def _opks(d: Device, ids: list[int]) -> tuple[p.OPk, ...]:
    return tuple(p.OPk(d.opk(i), i) for i in ids)


def test_key_sizes_match_the_spec() -> None:
    """Key sizes are 32/32/64 on curve25519 and 56/57/114 on curve448."""
    assert p.KEY_SIZES[Curve.C25519] == p.KeySizes(x=32, ed=32, sig=64)
    assert p.KEY_SIZES[Curve.C448] == p.KeySizes(x=56, ed=57, sig=114)


def test_register_user_sizes_match_captures() -> None:
    """registerUser with 5 OPks is 317 bytes on curve25519 and 536 on curve448."""
    assert len(Device(ALICE, Curve.C25519).register()) == 317
    assert len(Device(ALICE, Curve.C448).register()) == 536


def test_register_user_round_trip(curve: Curve) -> None:
    """RegisterUser serialises to the hand-built bytes and parses back to itself."""
    d = Device(ALICE, curve)
    msg = p.RegisterUser(curve, d.ik, d.spk(), d.sig(), 7, _opks(d, [1, 2, 3, 4, 5]))
    assert msg.to_bytes() == d.register()
    assert p.parse_request(d.register()) == msg


def test_every_request_round_trips(curve: Curve) -> None:
    """Each request type serialises to the spec's bytes and parses back."""
    d = Device(ALICE, curve)
    cases: list[tuple[p.Request, bytes]] = [
        (p.DeleteUser(curve), hdr(0x02, curve)),
        (p.PostSPk(curve, d.spk(2), d.sig(2), 0xDEADBEEF), d.post_spk(2, 0xDEADBEEF)),
        (p.PostOPks(curve, _opks(d, [9, 10])), d.post_opks([9, 10])),
        (p.PostOPks(curve, ()), hdr(0x04, curve) + u16(0)),
        (p.GetPeerBundle(curve, (ALICE, "b")), get_bundles(curve, ALICE, "b")),
        (p.GetSelfOPks(curve), hdr(0x07, curve)),
        (p.DeprecatedRegisterUser(curve, d.ik), hdr(0x01, curve) + d.ik),
    ]
    for msg, wire in cases:
        assert msg.to_bytes() == wire
        assert p.parse_request(wire) == msg


def test_peer_bundle_round_trip(curve: Curve) -> None:
    """PeerBundle puts the SPk id before the signature and round-trips all three flags."""
    d = Device(ALICE, curve)
    bundles = (
        p.Bundle(ALICE, d.ik, d.spk(), 7, d.sig(), p.OPk(d.opk(3), 3)),
        p.Bundle("nobody"),
        p.Bundle(ALICE, d.ik, d.spk(), 7, d.sig()),
    )
    wire = hdr(0x06, curve) + u16(3) + d.bundle(3) + unknown_entry("nobody") + d.bundle(None)
    assert [b.flag for b in bundles] == [1, 2, 0]
    assert p.PeerBundle(curve, bundles).to_bytes() == wire
    assert p.parse_response(wire) == p.PeerBundle(curve, bundles)
    assert p.parse_response(wire + b"junk") == p.PeerBundle(curve, bundles)  # as lime: ignored


def test_bundle_sizes_match_the_spec() -> None:
    """A bundle is 132/168 bytes on curve25519 and 231/291 on curve448, plus id and flag."""
    for curve, sizes in ((Curve.C25519, (132, 168)), (Curve.C448, (231, 291))):
        d = Device("x", curve)
        assert len(d.bundle(None)) - 4 == sizes[0]
        assert len(d.bundle(1)) - 4 == sizes[1]


def test_responses_parse(curve: Curve) -> None:
    """Acks, selfOPks and errors parse into their dataclasses."""
    assert p.parse_response(hdr(0x09, curve)) == p.Ack(curve, p.MessageType.REGISTER_USER)
    sel = hdr(0x08, curve) + u16(2) + u32(1) + u32(2)
    assert p.parse_response(sel) == p.SelfOPks(curve, (1, 2))
    assert p.SelfOPks(curve, (1, 2)).to_bytes() == sel
    err = error(curve, 0x06) + b"device not registered"
    assert p.parse_response(err) == p.ErrorMessage(curve, 6, "device not registered")
    assert p.ErrorMessage(curve, 6, "device not registered").to_bytes() == err


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x01\x06", b"\x02\x09\x01", b"\x01\x09\x07", b"\x01\x05\x01", b"\x01\xff\x01"],
)
def test_responses_lime_rejects_raise(wire: bytes) -> None:
    """Short, wrong-version, wrong-curve, request-typed and code-less answers are parse errors."""
    with pytest.raises(p.X3DHParseError):
        p.parse_response(wire)


def test_peer_bundle_with_bad_flag_or_truncation_raises(curve: Curve) -> None:
    """A bundle flag other than 0/1/2, or a truncated bundle, fails the whole message."""
    wire = hdr(0x06, curve) + u16(1) + Device(ALICE, curve).bundle(3)
    flag_at = 3 + 2 + 2 + len(ALICE)
    with pytest.raises(p.X3DHParseError):
        p.parse_response(wire[:flag_at] + b"\x03" + wire[flag_at + 1 :])
    with pytest.raises(p.X3DHParseError):
        p.parse_response(wire[:-1])


def test_parse_error_carries_code_and_curve() -> None:
    """X3DHParseError says which error code a server answers and echoes the curve byte."""
    with pytest.raises(p.X3DHParseError) as info:
        p.parse_request(hdr(0x05, 2) + u16(0))
    assert info.value.code == p.ErrorCode.BAD_REQUEST and info.value.curve == 2
    assert isinstance(info.value, ValueError)


def test_reprs_hide_keys(curve: Curve) -> None:
    """Dataclass reprs show ids but no key material."""
    d = Device(ALICE, curve)
    text = repr(p.RegisterUser(curve, d.ik, d.spk(), d.sig(), 7, _opks(d, [1])))
    text += repr(p.Bundle(ALICE, d.ik, d.spk(), 7, d.sig(), p.OPk(d.opk(1), 1)))
    assert d.ik.hex()[:8] not in text and str(d.ik)[:12] not in text and "x11" not in text


@given(st.binary(max_size=300))
def test_device_ids_round_trip_any_bytes(raw: bytes) -> None:
    """Any device id bytes survive decode/encode unchanged."""
    assert p.encode_device_id(p.decode_device_id(raw)) == raw


def test_all_is_sorted_and_complete() -> None:
    """protocol.__all__ is sorted and names only public attributes that exist."""
    assert p.__all__ == sorted(p.__all__, key=lambda n: (not n.isupper(), n))
    for name in p.__all__:
        assert hasattr(p, name)


def test_package_all_is_sorted_and_complete() -> None:
    """pylime.keyserver.__all__ is sorted (constants first) and every name exists."""
    import pylime.keyserver as ks

    assert ks.__all__ == sorted(ks.__all__, key=lambda n: (not n.isupper(), n))
    for name in ks.__all__:
        assert hasattr(ks, name)


def test_builders_refuse_values_the_wire_cannot_carry() -> None:
    """Too long an id, too many entries or a key id over 32 bits: ValueError, not struct.error."""
    with pytest.raises(ValueError):
        p.GetPeerBundle(Curve.C25519, ("x" * (p.MAX_DEVICE_ID_SIZE + 1),)).to_bytes()
    with pytest.raises(ValueError):
        p.SelfOPks(Curve.C25519, (0,) * 0x10000).to_bytes()
    with pytest.raises(ValueError):
        p.PostSPk(Curve.C25519, b"\0" * 32, b"\0" * 64, 1 << 32).to_bytes()
