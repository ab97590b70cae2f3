"""Edge-case Ed25519ctx signatures (empty context, as lime signs), and libdecaf as an oracle.

Each case is a (public key, message, signature) that some verifier accepts and another may
refuse: small-order and mixed-order keys, torsion in R, non-canonical encodings, S ≥ L.
They are built with libsodium's group operations (which accept any point on the curve) and
Python ints for the test's own bookkeeping. ``decaf_verify`` calls the system's libdecaf
(the library liblime 5.1.64 signs and verifies with) the way lime does: NULL context.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from dataclasses import dataclass

import nacl.bindings as sodium

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
DOM2 = b"SigEd25519 no Ed25519 collisions\x00\x00"
IDENTITY = (1).to_bytes(32, "little")
ORDER2 = (P - 1).to_bytes(32, "little")  # (0, -1)
ORDER4 = bytes(32)  # y = 0
ORDER8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
MESSAGE = b"an SPk: 32 bytes of public key.."


@dataclass(frozen=True)
class Case:
    """One signature, and whether the reference and decaf accept it."""

    name: str
    public: bytes
    message: bytes
    signature: bytes
    reference: bool
    decaf: bool


def scalar(n: int) -> bytes:
    """n mod L as 32 little-endian bytes."""
    return (n % L).to_bytes(32, "little")


def base(n: int) -> bytes:
    """[n]B."""
    n %= L
    return IDENTITY if n == 0 else sodium.crypto_scalarmult_ed25519_base_noclamp(scalar(n))


def add(p: bytes, q: bytes) -> bytes:
    """p + q for any two points on the curve."""
    return sodium.crypto_core_ed25519_add(p, q)


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    """k = SHA-512(dom2 ‖ R ‖ A ‖ M) mod L."""
    return int.from_bytes(hashlib.sha512(DOM2 + r + a + message).digest(), "little") % L


def secret_scalar(seed: bytes) -> int:
    """The clamped Ed25519 scalar of a seed."""
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def sign_as(a: int, public: bytes, message: bytes, r: int, extra_r: bytes | None = None) -> bytes:
    """S = r + k·a with k over ``public``; R = [r]B (+ extra_r, a torsion point)."""
    big_r = base(r) if extra_r is None else add(base(r), extra_r)
    return big_r + scalar(r + challenge(big_r, public, message) * a)


def with_challenge(public: bytes, want_zero_mod8: bool) -> tuple[bytes, bytes]:
    """(R, S) = ([s]B, s) for a small s whose challenge over ``public`` is ≡ 0 mod 8 or not."""
    for s in range(1, 10_000):
        big_r = base(s)
        if (challenge(big_r, public, MESSAGE) % 8 == 0) == want_zero_mod8:
            return big_r, scalar(s)
    raise AssertionError("no scalar found")  # pragma: no cover


def cases(seed: bytes = bytes(range(32))) -> list[Case]:
    """The table of edge cases (the reference follows libsodium's rules; decaf is cofactored)."""
    a = secret_scalar(seed)
    pub = base(a)
    honest = sign_as(a, pub, MESSAGE, 1234567)
    s = int.from_bytes(honest[32:], "little")
    out = [
        Case("honest", pub, MESSAGE, honest, True, True),
        Case("altered message", pub, MESSAGE + b"!", honest, False, False),
        Case("S + L (non-canonical S)", pub, MESSAGE, honest[:32] + (s + L).to_bytes(32, "little"),
             False, False),
        Case("R = identity", pub, MESSAGE,
             IDENTITY + scalar(challenge(IDENTITY, pub, MESSAGE) * a), False, False),
        Case("R + order-8 point (valid cofactored only)", pub, MESSAGE,
             sign_as(a, pub, MESSAGE, 999, extra_r=ORDER8), False, True),
    ]
    for name, point, decaf in (("identity", IDENTITY, False), ("order 2", ORDER2, False),
                               ("order 4", ORDER4, True), ("order 8", ORDER8, True)):
        r, s_bytes = with_challenge(point, True)  # [k]A = identity: valid cofactorless
        out.append(Case(f"A = {name} point, valid cofactorless", point, MESSAGE, r + s_bytes,
                        False, decaf))
    r, s_bytes = with_challenge(ORDER8, False)
    out.append(Case("A = order 8 point, valid cofactored only", ORDER8, MESSAGE, r + s_bytes,
                    False, True))
    mixed = add(pub, ORDER8)
    for r_scalar in range(1, 10_000):
        if challenge(base(r_scalar), mixed, MESSAGE) % 8 == 0:
            break
    out.append(Case("A + order-8 point (mixed order), valid cofactorless", mixed, MESSAGE,
                    sign_as(a, mixed, MESSAGE, r_scalar), False, True))
    for r_scalar in range(1, 10_000):
        if challenge(base(r_scalar), mixed, MESSAGE) % 8 != 0:
            break
    out.append(Case("A + order-8 point (mixed order), valid cofactored only", mixed, MESSAGE,
                    sign_as(a, mixed, MESSAGE, r_scalar), False, True))
    non_canonical = P.to_bytes(32, "little")  # y = p encodes y = 0: an order-4 point
    r, s_bytes = with_challenge(ORDER4, True)
    out.append(Case("A non-canonical (y = p)", non_canonical, MESSAGE, r + s_bytes, False, False))
    negative_zero = IDENTITY[:31] + b"\x80"  # x = 0 with the sign bit set
    out.append(Case("A = identity with the sign bit set", negative_zero, MESSAGE,
                    base(5) + scalar(5), False, False))
    return out


def _decaf() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("decaf") or "libdecaf.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.decaf_ed25519_verify.restype = ctypes.c_int
    lib.decaf_ed25519_verify.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint8,
        ctypes.c_char_p, ctypes.c_uint8]
    lib.decaf_ed25519_sign.restype = None
    lib.decaf_ed25519_sign.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
        ctypes.c_uint8, ctypes.c_char_p, ctypes.c_uint8]
    return lib


DECAF = _decaf()


def decaf_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """libdecaf's Ed25519 verification with a NULL context, as lime calls it."""
    assert DECAF is not None
    return bool(DECAF.decaf_ed25519_verify(signature, public, message, len(message), 0, None,
                                           0) == -1)  # DECAF_SUCCESS


def decaf_sign(seed: bytes, public: bytes, message: bytes) -> bytes:
    """libdecaf's Ed25519 signature with a NULL context, as lime makes them."""
    assert DECAF is not None
    out = ctypes.create_string_buffer(64)
    DECAF.decaf_ed25519_sign(out, seed, public, message, len(message), 0, None, 0)
    return out.raw
