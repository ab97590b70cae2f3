"""Public keys liblime must never see: low-order points on curve25519 and curve448.

An X25519/X448 exchange with a low-order point gives the all-zero secret. decaf reports
that as a failure, and bctoolbox 5.1.64's ``bctbx_ECDHComputeSecret`` then frees its output
buffer and writes the zeros into it: a use-after-free that corrupts the heap. Any sender can
put such a point in a message header, any key server in a bundle, so pylime checks every
public key before lime computes a Diffie-Hellman with it (found by tests/reliability).

The check is exact: with clamped scalars (multiples of the cofactor), the output is zero
exactly for the points whose order divides the cofactor, on the curve or its twist: u = 0,
1, p - 1 on both curves and, on curve25519, the two points of order 8. Encodings at or
above p are reduced first, as X25519/X448 do. Pure Python, nothing compiled, no branch
on secret data (only public keys are checked).
"""

from __future__ import annotations

import functools

from pylime.keyserver import protocol
from pylime.types import CLASSIC_CURVES, Curve

__all__ = [
    "dr_message_has_low_order_key",
    "ed_to_x_u",
    "is_low_order",
    "is_low_order_identity",
    "low_order_bundle_device",
    "low_order_encodings",
]

_P25519 = 2**255 - 19
_P448 = 2**448 - 2**224 - 1
_D448 = -39081
_LOW_ORDER = {
    Curve.C25519: frozenset({
        0, 1, _P25519 - 1,
        # the two points of order 8
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }),
    Curve.C448: frozenset({0, 1, _P448 - 1}),
}
_X_SIZE = {Curve.C25519: 32, Curve.C448: 56}


def _low_order_encodings(curve: Curve) -> frozenset[bytes]:
    """Every X key encoding that reduces to a listed u: u, u + p below 2^bits, bit 255 set."""
    size, p = _X_SIZE[curve], _P25519 if curve == Curve.C25519 else _P448
    bits = 255 if curve == Curve.C25519 else 448  # X25519 ignores bit 255
    out = set()
    for u in _LOW_ORDER[curve]:
        for value in (u, u + p):
            if value < 1 << bits:
                out.add(value.to_bytes(size, "little"))
                if curve == Curve.C25519:
                    out.add((value | 1 << 255).to_bytes(size, "little"))
    return frozenset(out)


# The same test as a set of byte strings (14 on curve25519, 5 on curve448): one hash and
# one lookup for the check lime's every decrypt needs, no integer arithmetic.
_LOW_ORDER_ENCODINGS = {curve: _low_order_encodings(curve) for curve in CLASSIC_CURVES}
_ED_SIZE = {Curve.C25519: 32, Curve.C448: 57}
_CURVES = {int(c): c for c in CLASSIC_CURVES}  # keycheck knows the 5.1 DR header only


def low_order_encodings(curve: Curve) -> tuple[bytes, ...]:
    """Every X key encoding of a classic curve that gives the all-zero secret, sorted.

    The binding's C shim gets this list once (pylime.bindings) to check the DHs of every
    established-session message without a trip through Python.
    """
    return tuple(sorted(_LOW_ORDER_ENCODINGS[Curve(curve)]))


def is_low_order(curve: Curve, x_public: bytes) -> bool:
    """True if an exchange with this X25519/X448 public key gives the all-zero secret.

    A post-quantum curve means its elliptic curve; ``x_public`` is then the EC key alone.
    """
    curve = Curve(curve).ec
    if len(x_public) == _X_SIZE[curve]:
        return bytes(x_public) in _LOW_ORDER_ENCODINGS[curve]
    return _reduces_to_low_order(curve, x_public)


def _reduces_to_low_order(curve: Curve, x_public: bytes) -> bool:
    """The definition: u read as X25519/X448 read it, reduced mod p, in the low-order list."""
    u = int.from_bytes(x_public, "little")
    if curve == Curve.C25519:
        u = (u & ((1 << 255) - 1)) % _P25519
        return u in _LOW_ORDER[Curve.C25519]
    return u % _P448 in _LOW_ORDER[Curve.C448]


def ed_to_x_u(curve: Curve, ed_public: bytes | bytearray) -> int:
    """The X (Montgomery) u-coordinate of an EdDSA public key, converted as lime does it.

    u = (1 + y) / (1 - y) on curve25519 and u = y²(1 - d·y²) / (1 - y²) on curve448, with
    y read from the encoding (the sign bit ignored); a zero denominator inverts to zero, as
    in decaf. Shared with the reference's key conversion.
    """
    return _ed_to_x_u(Curve(curve).ec, bytes(ed_public))


@functools.lru_cache(maxsize=1024)  # public keys only: a bundle is checked, then used
def _ed_to_x_u(curve: Curve, ed_public: bytes) -> int:
    if curve == Curve.C25519:
        p = _P25519
        y = (int.from_bytes(ed_public[:32], "little") & ((1 << 255) - 1)) % p
        return (1 + y) * _inverse(1 - y, p) % p
    p = _P448
    y = int.from_bytes(ed_public[:56], "little") % p
    y2 = y * y % p
    return y2 * (1 - _D448 * y2) * _inverse(1 - y2, p) % p


def _inverse(x: int, p: int) -> int:
    """x⁻¹ mod p, and 0 for 0 (decaf's convention); extended Euclid: public values only."""
    x %= p
    return pow(x, -1, p) if x else 0


def is_low_order_identity(curve: Curve, ed_public: bytes) -> bool:
    """True if an identity key (EdDSA encoding) converts to a low-order X key."""
    curve = Curve(curve).ec
    return ed_to_x_u(curve, ed_public) in _LOW_ORDER[curve]


def dr_message_has_low_order_key(dr_message: bytes) -> bool:
    """True if a DR message's header carries a low-order DHs, Ek or Ik.

    The curve is the header's own curve byte; a header too short or of an unknown curve is
    left to lime, which refuses it before any Diffie-Hellman. Only the key bytes are read
    (no copy of the message): this runs before every decrypt.
    """
    if len(dr_message) < 3:
        return False
    curve = _CURVES.get(dr_message[2])
    if curve is None:
        return False
    x = _X_SIZE[curve]
    offset = 3
    if dr_message[1] & 0x01:  # X3DH init: flag, Ik, Ek, SPk id[, OPk id]
        e = _ED_SIZE[curve]
        init_size = 1 + e + x + 4 + (4 if dr_message[3:4] == b"\x01" else 0)
        if len(dr_message) < offset + init_size:
            return False
        ek = dr_message[offset + 1 + e:offset + 1 + e + x]
        if ek in _LOW_ORDER_ENCODINGS[curve] or is_low_order_identity(
                curve, dr_message[offset + 1:offset + 1 + e]):
            return True
        offset += init_size
    dhs = dr_message[offset + 4:offset + 4 + x]  # after Ns and PN
    return len(dhs) == x and dhs in _LOW_ORDER_ENCODINGS[curve]


def low_order_bundle_device(message: protocol.PeerBundle) -> str | None:
    """The device id of the first bundle of a parsed peerBundle with a low-order key, if any.

    On a post-quantum curve the SPk and OPk are EC key ‖ KEM key: the EC key is checked.
    """
    curve = Curve(message.curve)
    x = _X_SIZE[curve.ec]
    for bundle in message.bundles:
        if bundle.ik is None or bundle.spk is None:  # flag 2: no bundle
            continue
        keys_bad = (is_low_order_identity(curve, bundle.ik)
                    or is_low_order(curve, bundle.spk[:x])
                    or (bundle.opk is not None and is_low_order(curve, bundle.opk.public[:x])))
        if keys_bad:
            return bundle.device_id
    return None
