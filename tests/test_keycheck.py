"""pylime.keycheck: exactly the public keys whose exchange gives the all-zero secret."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pylime import Curve
from pylime.keycheck import (
    _LOW_ORDER,
    _P448,
    _P25519,
    dr_message_has_low_order_key,
    is_low_order,
    is_low_order_identity,
)
from pylime.reference.primitives import ed_to_x_public

X = {Curve.C25519: (x25519.X25519PrivateKey, x25519.X25519PublicKey, 32, _P25519),
     Curve.C448: (x448.X448PrivateKey, x448.X448PublicKey, 56, _P448)}


def _exchange_is_zero(curve: Curve, public: bytes) -> bool:
    private_cls, public_cls, _, _ = X[curve]
    try:
        private_cls.generate().exchange(public_cls.from_public_bytes(public))
    except ValueError:  # cryptography refuses the all-zero shared secret
        return True
    return False


def _encodings(curve: Curve) -> list[bytes]:
    """Every listed u, plus its encodings at or above p and (curve25519) with bit 255 set."""
    _, _, size, p = X[curve]
    bits = 255 if curve == Curve.C25519 else 448  # X25519 ignores bit 255
    out = []
    for u in _LOW_ORDER[curve]:
        for value in (u, u + p):
            if value < 1 << bits:
                out.append(value.to_bytes(size, "little"))
                if curve == Curve.C25519:
                    out.append((value | 1 << 255).to_bytes(size, "little"))
    return out


def test_every_listed_point_gives_the_zero_secret(curve):
    """Each blocklisted encoding really makes an exchange output all zeros, and is flagged."""
    for encoding in _encodings(curve):
        assert _exchange_is_zero(curve, encoding)
        assert is_low_order(curve, encoding)


def test_genuine_and_random_keys_pass(curve):
    """Real public keys and random strings are not flagged, and their exchange is nonzero."""
    private_cls, _, size, _ = X[curve]
    for _ in range(200):
        genuine = private_cls.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        noise = os.urandom(size)
        for key in (genuine, noise):
            assert not is_low_order(curve, key)
            assert not _exchange_is_zero(curve, key)


@pytest.mark.parametrize("seed", range(20))
def test_identity_conversion_matches_the_reference(curve, seed):
    """is_low_order_identity converts Ed keys exactly as the reference (and lime) do."""
    if curve == Curve.C25519:
        ik = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
    else:
        ik = ed448.Ed448PrivateKey.generate().public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
    assert is_low_order_identity(curve, ik) == is_low_order(curve, ed_to_x_public(curve, ik))
    assert not is_low_order_identity(curve, ik)


def test_the_neutral_identity_key_is_flagged(curve):
    """The Ed encoding of the neutral point (y = 1) converts to u = 0 and is refused."""
    size = 32 if curve == Curve.C25519 else 57
    assert is_low_order_identity(curve, (1).to_bytes(size, "little"))


def test_a_header_with_a_zero_ratchet_key_is_flagged(curve):
    """A DR header whose DHs is the zero point is flagged; a random one is not."""
    x = 32 if curve == Curve.C25519 else 56
    header = bytes([1, 2, curve]) + b"\x00\x01\x00\x00"
    assert dr_message_has_low_order_key(header + bytes(x) + os.urandom(40))
    assert not dr_message_has_low_order_key(header + os.urandom(x) + os.urandom(40))
    assert not dr_message_has_low_order_key(b"\x01\x02")


def test_the_encoding_set_is_exactly_the_reduction_rule(curve):
    """The byte-string lookup flags exactly what reducing u mod p flags, at every boundary."""
    from pylime.keycheck import _LOW_ORDER_ENCODINGS, _reduces_to_low_order

    _, _, size, p = X[curve]
    bits = 255 if curve == Curve.C25519 else 448
    values = {(1 << bits) - 1, p - 2, p + 2, (1 << (8 * size)) - 1}
    for u in _LOW_ORDER[curve]:
        for value in (u, u + p, u + 2 * p):
            values.update({value - 1, value, value + 1, value | 1 << bits})
    samples = [v.to_bytes(size, "little") for v in values if 0 <= v < 1 << (8 * size)]
    samples += [os.urandom(size) for _ in range(200)]
    for data in samples:
        assert is_low_order(curve, data) == _reduces_to_low_order(curve, data)
    assert all(_reduces_to_low_order(curve, e) for e in _LOW_ORDER_ENCODINGS[curve])
    assert len(_LOW_ORDER_ENCODINGS[curve]) == (14 if curve == Curve.C25519 else 5)
