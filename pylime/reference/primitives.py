"""lime 5.1.64's cryptographic primitives, for the pure-Python reference.

Everything comes from pyca/cryptography except Ed25519ctx: lime signs on curve25519 with
decaf's Ed25519 and a NULL context pointer, which decaf treats as "Ed25519ctx with an empty
context" (RFC 8032 ``dom2`` prefix with phflag 0 and a zero-length context). cryptography only
offers pure Ed25519, whose signatures lime rejects, so Ed25519ctx is written here
(lime-wire.md §1.2).

Side channels, honestly: the Ed25519ctx code multiplies secret scalars with a fixed-length
Montgomery ladder whose swaps are arithmetic masks, so there is no branch and no table
lookup indexed by secret bits. It still runs on CPython integers, whose arithmetic takes
time that depends on the size of the values; it is **not** constant time and must not be
relied upon where an attacker can time many signatures. Secrets that leave this module are
``bytearray`` objects the caller can wipe with :func:`wipe`; the intermediate Python ints
cannot be wiped.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed448, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pylime.keycheck import ed_to_x_u
from pylime.types import Curve

__all__ = [
    "SIZES",
    "CurveSizes",
    "InvalidTag",
    "aead_decrypt",
    "aead_encrypt",
    "dh",
    "ed25519ctx_public",
    "ed25519ctx_sign",
    "ed25519ctx_verify",
    "ed_keypair",
    "ed_public",
    "ed_sign",
    "ed_to_x_private",
    "ed_to_x_public",
    "ed_verify",
    "hkdf_sha512",
    "hmac_sha512",
    "random_id",
    "wipe",
    "x_keypair",
    "x_public",
]

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class CurveSizes:
    """Key and signature sizes of one lime curve (lime-wire.md §1.1)."""

    x_pub: int
    ed_pub: int
    sig: int

    @property
    def x_priv(self) -> int:
        """An X private key is as long as its public key."""
        return self.x_pub

    @property
    def ed_priv(self) -> int:
        """An Ed private key (seed) is as long as its public key."""
        return self.ed_pub


SIZES: dict[Curve, CurveSizes] = {
    Curve.C25519: CurveSizes(x_pub=32, ed_pub=32, sig=64),
    Curve.C448: CurveSizes(x_pub=56, ed_pub=57, sig=114),
}


def wipe(buf: bytearray | None) -> None:
    """Overwrite a secret buffer with zeros (best effort: copies made by Python survive)."""
    if buf is not None:
        buf[:] = bytes(len(buf))


# --------------------------------------------------------------------------- HMAC, HKDF, AEAD


def hmac_sha512(key: Buffer, data: Buffer, length: int = 64) -> bytearray:
    """HMAC-SHA-512, truncated to ``length`` bytes as lime does when it asks for less than 64."""
    if not 0 < length <= 64:
        raise ValueError("HMAC-SHA-512 output length must be 1..64")
    return bytearray(hmac.new(bytes(key), bytes(data), hashlib.sha512).digest()[:length])


def hkdf_sha512(salt: Buffer, ikm: Buffer, info: bytes, length: int) -> bytearray:
    """RFC 5869 HKDF with SHA-512; an empty salt is an empty HMAC key (same as 64 zeros)."""
    if not 0 < length <= 255 * 64:
        raise ValueError("bad HKDF output length")
    prk = hmac_sha512(salt, ikm)
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(bytes(prk), block + info + bytes([counter]), hashlib.sha512).digest()
        out += block
        counter += 1
    wipe(prk)
    result = bytearray(out[:length])
    wipe(out)
    return result


def aead_encrypt(key: Buffer, iv: Buffer, plaintext: Buffer, ad: Buffer) -> bytes:
    """AES-256-GCM with lime's 16-byte IV; returns ciphertext ‖ 16-byte tag."""
    return AESGCM(bytes(key)).encrypt(bytes(iv), bytes(plaintext), bytes(ad))


def aead_decrypt(key: Buffer, iv: Buffer, ciphertext: Buffer, ad: Buffer) -> bytes:
    """Inverse of :func:`aead_encrypt`; raises ``cryptography.exceptions.InvalidTag``."""
    if len(ciphertext) < 16:
        raise InvalidTag()
    return AESGCM(bytes(key)).decrypt(bytes(iv), bytes(ciphertext), bytes(ad))


def random_id() -> int:
    """A random SPk/OPk id: 32 bits with the most significant bit forced to 0 (§1.7)."""
    return secrets.randbits(31)


# --------------------------------------------------------------------------- X25519 / X448


def x_public(curve: Curve, priv: Buffer) -> bytes:
    """The X-format public key of a raw X private key."""
    if curve == Curve.C25519:
        return x25519.X25519PrivateKey.from_private_bytes(bytes(priv)).public_key().public_bytes_raw()
    return x448.X448PrivateKey.from_private_bytes(bytes(priv)).public_key().public_bytes_raw()


def x_keypair(curve: Curve) -> tuple[bytes, bytearray]:
    """A fresh X key pair: raw random private bytes (§1.7) and the derived public key."""
    priv = bytearray(secrets.token_bytes(SIZES[curve].x_priv))
    return x_public(curve, priv), priv


def dh(curve: Curve, priv: Buffer, pub: Buffer) -> bytearray:
    """X25519/X448; raises ValueError on an all-zero result (low-order peer point), as lime does."""
    try:
        if curve == Curve.C25519:
            k = x25519.X25519PrivateKey.from_private_bytes(bytes(priv))
            shared = k.exchange(x25519.X25519PublicKey.from_public_bytes(bytes(pub)))
        else:
            k448 = x448.X448PrivateKey.from_private_bytes(bytes(priv))
            shared = k448.exchange(x448.X448PublicKey.from_public_bytes(bytes(pub)))
    except ValueError as exc:
        raise ValueError("DH failed: invalid public key") from exc
    return bytearray(shared)


# --------------------------------------------------------------------------- Ed25519ctx

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_D2 = (2 * _D) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_BY = (4 * pow(5, _P - 2, _P)) % _P
_BX_SQ = ((_BY * _BY - 1) * pow(_D * _BY * _BY + 1, _P - 2, _P)) % _P


def _recover_x(y: int, sign: int) -> int | None:
    """x from y and the sign bit on edwards25519 (public data only), or None if not on the curve."""
    if y >= _P:
        return None
    x2 = ((y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = (x * _SQRT_M1) % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


_BX = _recover_x(_BY, 0)
assert _BX is not None and (_BX * _BX - _BX_SQ) % _P == 0
_B = (_BX, _BY, 1, (_BX * _BY) % _P)
_IDENTITY = (0, 1, 1, 0)

_Point = tuple[int, int, int, int]


def _add(p: _Point, q: _Point) -> _Point:
    """Unified addition in extended coordinates (a = -1): also doubles, no branches."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = z1 * 2 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _cswap(p: _Point, q: _Point, mask: int) -> tuple[_Point, _Point]:
    """Swap p and q when mask is -1, keep them when it is 0, with arithmetic only."""
    out_p = []
    out_q = []
    for a, b in zip(p, q):
        t = (a ^ b) & mask
        out_p.append(a ^ t)
        out_q.append(b ^ t)
    return (out_p[0], out_p[1], out_p[2], out_p[3]), (out_q[0], out_q[1], out_q[2], out_q[3])


def _scalarmult(k: int, point: _Point, bits: int = 256) -> _Point:
    """k·point by a Montgomery ladder of fixed length with masked swaps (no secret branches)."""
    r0, r1 = _IDENTITY, point
    for i in range(bits - 1, -1, -1):
        mask = -((k >> i) & 1)
        r0, r1 = _cswap(r0, r1, mask)
        r1 = _add(r0, r1)
        r0 = _add(r0, r0)
        r0, r1 = _cswap(r0, r1, mask)
    return r0


def _encode(point: _Point) -> bytes:
    x, y, z, _ = point
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(data: bytes) -> _Point | None:
    if len(data) != 32:
        return None
    v = int.from_bytes(data, "little")
    y, sign = v & ((1 << 255) - 1), v >> 255
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


def _points_equal(p: _Point, q: _Point) -> bool:
    x1, y1, z1, _ = p
    x2, y2, z2, _ = q
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


def _dom2(context: bytes) -> bytes:
    if len(context) > 255:
        raise ValueError("Ed25519ctx context longer than 255 bytes")
    return b"SigEd25519 no Ed25519 collisions" + bytes([0, len(context)]) + context


def _expand(seed: Buffer) -> tuple[int, bytearray]:
    """Clamped secret scalar and the 32-byte nonce prefix of an Ed25519 seed (RFC 8032 5.1.5)."""
    if len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    h = bytearray(hashlib.sha512(bytes(seed)).digest())
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    scalar = int.from_bytes(a, "little")
    wipe(a)
    prefix = bytearray(h[32:])
    wipe(h)
    return scalar, prefix


def ed25519ctx_public(seed: Buffer) -> bytes:
    """The Ed25519 public key of a 32-byte seed (same key derivation as plain Ed25519)."""
    scalar, prefix = _expand(seed)
    wipe(prefix)
    return _encode(_scalarmult(scalar, _B))


def ed25519ctx_sign(seed: Buffer, message: Buffer, context: bytes = b"") -> bytes:
    """RFC 8032 Ed25519ctx signature; lime uses it with the empty context."""
    scalar, prefix = _expand(seed)
    public = _encode(_scalarmult(scalar, _B))
    dom = _dom2(context)
    msg = bytes(message)
    r = int.from_bytes(hashlib.sha512(dom + bytes(prefix) + msg).digest(), "little") % _L
    wipe(prefix)
    big_r = _encode(_scalarmult(r, _B))
    k = int.from_bytes(hashlib.sha512(dom + big_r + public + msg).digest(), "little") % _L
    s = (r + k * scalar) % _L
    return big_r + s.to_bytes(32, "little")


def ed25519ctx_verify(public: Buffer, message: Buffer, signature: Buffer, context: bytes = b"") -> bool:
    """Check an Ed25519ctx signature (cofactorless equation [S]B = R + [k]A, RFC 8032 5.1.7)."""
    public, signature = bytes(public), bytes(signature)
    if len(signature) != 64 or len(public) != 32:
        return False
    a_point = _decode(public)
    r_point = _decode(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a_point is None or r_point is None or s >= _L:
        return False
    dom = _dom2(context)
    k = int.from_bytes(
        hashlib.sha512(dom + signature[:32] + public + bytes(message)).digest(), "little"
    ) % _L
    return _points_equal(_scalarmult(s, _B), _add(r_point, _scalarmult(k, a_point)))


# --------------------------------------------------------------------------- Ed per curve

_P448 = 2**448 - 2**224 - 1


def ed_public(curve: Curve, seed: Buffer) -> bytes:
    """The Ed public key (RFC 8032 encoding) of an Ed seed."""
    if curve == Curve.C25519:
        return ed25519ctx_public(seed)
    return ed448.Ed448PrivateKey.from_private_bytes(bytes(seed)).public_key().public_bytes_raw()


def ed_keypair(curve: Curve) -> tuple[bytes, bytearray]:
    """A fresh identity key: random seed and its Ed public key."""
    seed = bytearray(secrets.token_bytes(SIZES[curve].ed_priv))
    return ed_public(curve, seed), seed


def ed_sign(curve: Curve, seed: Buffer, message: Buffer) -> bytes:
    """lime's signature: Ed25519ctx (empty context) or Ed448 (empty context)."""
    if curve == Curve.C25519:
        return ed25519ctx_sign(seed, message)
    return ed448.Ed448PrivateKey.from_private_bytes(bytes(seed)).sign(bytes(message))


def ed_verify(curve: Curve, public: Buffer, message: Buffer, signature: Buffer) -> bool:
    """Verify a lime signature; False for a bad signature or an undecodable key."""
    if curve == Curve.C25519:
        return ed25519ctx_verify(public, message, signature)
    try:
        ed448.Ed448PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True


def ed_to_x_private(curve: Curve, seed: Buffer) -> bytearray:
    """Ed seed → X private key: SHA-512(seed)[:32] or SHAKE256(seed, 56) (§1.3)."""
    if curve == Curve.C25519:
        h = bytearray(hashlib.sha512(bytes(seed)).digest())
        out = bytearray(h[:32])
    else:
        h = bytearray(hashlib.shake_256(bytes(seed)).digest(56))
        out = bytearray(h)
    wipe(h)
    return out


def ed_to_x_public(curve: Curve, public: Buffer) -> bytes:
    """Ed public key → X public key with the birational / 4-isogeny maps of §1.3."""
    public = bytes(public)
    size = 32 if curve == Curve.C25519 else 57
    if len(public) != size:
        raise ValueError(f"bad Ed{'25519' if size == 32 else '448'} public key size")
    return ed_to_x_u(curve, public).to_bytes(32 if curve == Curve.C25519 else 56, "little")
