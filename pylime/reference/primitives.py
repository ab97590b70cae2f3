"""lime 5.1.64's cryptographic primitives, for the pure-Python reference.

Where the work is done:

- curve25519: libsodium through PyNaCl: X25519, and Ed25519ctx built from its group and
  scalar operations (lime signs with decaf's Ed25519 and a NULL context pointer, which decaf
  treats as "Ed25519ctx with an empty context": RFC 8032 ``dom2`` prefix with phflag 0 and a
  zero-length context, lime-wire.md §1.2; no common library offers that variant).
- curve448: pyca/cryptography (OpenSSL): X448 and Ed448 (empty context, as RFC 8032).
- SHA-512, HMAC, HKDF: hashlib/hmac (OpenSSL); AES-256-GCM: pyca/cryptography.

Side channels, honestly. Every operation on secret data runs in C code written to be
constant time: libsodium's fixed- and variable-base scalar multiplications, its scalar
arithmetic modulo L (``crypto_core_ed25519_scalar_*``) and its clamping
(``crypto_sign_ed25519_sk_to_curve25519``); OpenSSL's X448, Ed448, SHA-2 and AES-GCM. No
secret is ever a Python int: Python only slices and concatenates secret bytes (time
depends on lengths only). Python ints appear on public data alone (the S < L check of a
signature, Ed→X conversion of public keys in :mod:`pylime.keycheck`). What this module
cannot do is keep secrets out of memory it does not control: hash outputs, PyNaCl's
results and the arguments handed to C are immutable ``bytes`` that cannot be wiped, and
OpenSSL key objects hold their own copy (cleared by OpenSSL when freed). Secrets that leave
this module are ``bytearray`` objects the caller wipes with :func:`wipe`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import nacl.bindings as sodium
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed448, x448
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pylime.keycheck import ed_to_x_u
from pylime.types import POST_QUANTUM_CURVES, Curve

__all__ = [
    "SIZES",
    "CurveSizes",
    "InvalidTag",
    "XKey",
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
    "x_generate",
    "x_key",
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
# lime 5.4's hybrids use their elliptic curve's keys and signatures (the KEM sizes are in
# pylime.reference.kem); every function here takes a hybrid for its curve.
SIZES.update({c: SIZES[c.ec] for c in POST_QUANTUM_CURVES})
_ON_25519 = frozenset(c for c in Curve if c.ec is Curve.C25519)


def wipe(buf: bytearray | None) -> None:
    """Overwrite a secret buffer with zeros (best effort: copies made by Python survive)."""
    if buf is not None:
        buf[:] = bytes(len(buf))


# --------------------------------------------------------------------------- HMAC, HKDF, AEAD


def hmac_sha512(key: Buffer, data: Buffer, length: int = 64) -> bytearray:
    """HMAC-SHA-512, truncated to ``length`` bytes as lime does when it asks for less than 64."""
    if not 0 < length <= 64:
        raise ValueError("HMAC-SHA-512 output length must be 1..64")
    return bytearray(hmac.digest(key, data, "sha512")[:length])


def hkdf_sha512(salt: Buffer, ikm: Buffer, info: bytes, length: int) -> bytearray:
    """RFC 5869 HKDF with SHA-512; an empty salt is an empty HMAC key (same as 64 zeros)."""
    if not 0 < length <= 255 * 64:
        raise ValueError("bad HKDF output length")
    prk = hmac.digest(salt, ikm, "sha512")
    if length <= 64:  # every length lime asks for: one block
        return bytearray(hmac.digest(prk, info + b"\x01", "sha512")[:length])
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha512")
        out += block
        counter += 1
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


def _x_size(curve: Curve) -> int:
    return 32 if curve in _ON_25519 else 56


def _check_x(curve: Curve, key: Buffer, what: str) -> bytes:
    if len(key) != _x_size(curve):
        raise ValueError(f"an X{'25519' if curve in _ON_25519 else '448'} {what} has "
                         f"{_x_size(curve)} bytes, not {len(key)}")
    return bytes(key)


def x_public(curve: Curve, priv: Buffer) -> bytes:
    """The X-format public key of a raw X private key."""
    raw = _check_x(curve, priv, "private key")
    if curve in _ON_25519:
        return sodium.crypto_scalarmult_base(raw)
    return x448.X448PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()


def x_keypair(curve: Curve) -> tuple[bytes, bytearray]:
    """A fresh X key pair: raw random private bytes (§1.7) and the derived public key."""
    priv = bytearray(secrets.token_bytes(SIZES[curve].x_priv))
    return x_public(curve, priv), priv


def dh(curve: Curve, priv: Buffer, pub: Buffer) -> bytearray:
    """X25519/X448; raises ValueError on an all-zero result (low-order peer point), as lime does."""
    raw, peer = _check_x(curve, priv, "private key"), _check_x(curve, pub, "public key")
    if curve in _ON_25519:
        return _x25519(raw, peer)
    return _x448(x448.X448PrivateKey.from_private_bytes(raw), peer)


def _x25519(raw: bytes, peer: bytes) -> bytearray:
    try:
        # libsodium refuses the low-order points up front and checks for an all-zero result
        return bytearray(sodium.crypto_scalarmult(raw, peer))
    except RuntimeError:
        raise ValueError("DH failed: invalid public key") from None


def _x448(key: x448.X448PrivateKey, peer: bytes) -> bytearray:
    try:
        return bytearray(key.exchange(x448.X448PublicKey.from_public_bytes(peer)))
    except ValueError as exc:
        raise ValueError("DH failed: invalid public key") from exc


class XKey:
    """An X25519/X448 private key made ready for several exchanges.

    OpenSSL derives the public key (one scalar multiplication) whenever cryptography loads
    a raw X448 private key, so an X448 key used more than once is loaded once and its key
    object kept here. libsodium's X25519 takes the raw bytes: nothing to prepare.
    :meth:`wipe` zeroes the raw bytes and drops the key object (OpenSSL clears its copy
    when it frees it).
    """

    __slots__ = ("_key", "curve", "public", "raw")

    def __init__(self, curve: Curve, raw: bytearray, public: bytes | None = None,
                 key: x448.X448PrivateKey | None = None) -> None:
        self.curve = curve
        self.raw = raw
        if curve not in _ON_25519 and key is None:
            key = x448.X448PrivateKey.from_private_bytes(_check_x(curve, raw, "private key"))
            public = key.public_key().public_bytes_raw() if public is None else public
        self._key = key
        self.public = public

    def exchange(self, pub: Buffer) -> bytearray:
        """The shared secret with a peer public key (ValueError for a low-order one)."""
        peer = _check_x(self.curve, pub, "public key")
        if self._key is None:
            return _x25519(bytes(self.raw), peer)
        return _x448(self._key, peer)

    @property
    def key_object(self) -> x448.X448PrivateKey | None:
        """The loaded OpenSSL key (curve448), for a cache that outlives this object."""
        return self._key

    def wipe(self) -> None:
        """Zero the raw private key and drop the loaded key object."""
        wipe(self.raw)
        self._key = None

    def __repr__(self) -> str:
        return f"<XKey {self.curve.name}>"


def x_key(curve: Curve, priv: bytearray) -> XKey:
    """Prepare a raw X private key (kept, not copied: wiping the XKey wipes ``priv``)."""
    return XKey(curve, priv)


def x_generate(curve: Curve) -> tuple[bytes, XKey]:
    """A fresh X key pair, its private half ready for exchanges."""
    priv = bytearray(secrets.token_bytes(SIZES[curve].x_priv))
    if curve in _ON_25519:
        return sodium.crypto_scalarmult_base(bytes(priv)), XKey(curve, priv)
    key = XKey(curve, priv)
    assert key.public is not None
    return key.public, key


# --------------------------------------------------------------------------- Ed25519ctx

_L = 2**252 + 27742317777372353535851937790883648493
_IDENTITY = b"\x01" + bytes(31)
_ZERO32 = bytes(32)


def _dom2(context: bytes) -> bytes:
    if len(context) > 255:
        raise ValueError("Ed25519ctx context longer than 255 bytes")
    return b"SigEd25519 no Ed25519 collisions" + bytes([0, len(context)]) + context


def _reduce(digest: bytes) -> bytes:
    """A 64-byte hash output reduced modulo L (libsodium, constant time)."""
    return sodium.crypto_core_ed25519_scalar_reduce(digest)


def _base_mul(scalar: bytes) -> bytes:
    """[scalar]B for a reduced scalar; libsodium refuses 0, whose product is the identity."""
    try:
        return sodium.crypto_scalarmult_ed25519_base_noclamp(scalar)
    except RuntimeError:  # scalar ≡ 0 (mod L)
        return _IDENTITY


def _seed(seed: Buffer) -> bytes:
    if len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    return bytes(seed)


def ed25519ctx_public(seed: Buffer) -> bytes:
    """The Ed25519 public key of a 32-byte seed (same key derivation as plain Ed25519)."""
    public, _ = sodium.crypto_sign_seed_keypair(_seed(seed))
    return public


def ed25519ctx_sign(seed: Buffer, message: Buffer, context: bytes = b"") -> bytes:
    """RFC 8032 Ed25519ctx signature; lime uses it with the empty context.

    All secret arithmetic is libsodium's: the clamped scalar a (``sk_to_curve25519`` is
    exactly clamp(SHA-512(seed)[:32])), r = SHA-512(dom2 ‖ prefix ‖ M) mod L, R = [r]B and
    S = r + k·a mod L.
    """
    raw = _seed(seed)
    dom, msg = _dom2(context), bytes(message)
    public, secret = sodium.crypto_sign_seed_keypair(raw)
    a = _reduce(sodium.crypto_sign_ed25519_sk_to_curve25519(secret) + _ZERO32)
    prefix = hashlib.sha512(raw).digest()[32:]
    r = _reduce(hashlib.sha512(dom + prefix + msg).digest())
    big_r = _base_mul(r)
    k = _reduce(hashlib.sha512(dom + big_r + public + msg).digest())
    s = sodium.crypto_core_ed25519_scalar_add(r, sodium.crypto_core_ed25519_scalar_mul(k, a))
    return big_r + s


def ed25519ctx_verify(public: Buffer, message: Buffer, signature: Buffer,
                      context: bytes = b"") -> bool:
    """Check an Ed25519ctx signature: [S]B − [k]A must encode to exactly R (cofactorless).

    Refused, whatever the equation says (libsodium's rules, stricter than decaf's; a
    signature from a key made as lime makes them never meets them):

    - S ≥ L (decaf refuses it too);
    - A not the canonical encoding of a point of the prime-order subgroup other than the
      identity: small-order and mixed-order keys, non-canonical encodings (decaf refuses
      non-canonical encodings and points with x = 0, but accepts the other small-order and
      mixed-order keys);
    - R non-canonical or the identity (decaf refuses both), or R with a small-order
      component (decaf accepts it: its check is cofactored).

    tests/reference/test_ed25519ctx.py pins each case against the system's libdecaf.
    """
    public, signature = bytes(public), bytes(signature)
    if len(signature) != 64 or len(public) != 32:
        return False
    big_r, s = signature[:32], signature[32:]
    if int.from_bytes(s, "little") >= _L or big_r == _IDENTITY:  # public values
        return False
    k = _reduce(hashlib.sha512(_dom2(context) + big_r + public + bytes(message)).digest())
    if k == _ZERO32:  # probability 2^-252; libsodium refuses a zero scalar
        if not sodium.crypto_core_ed25519_is_valid_point(public):
            return False
        ka = _IDENTITY
    else:
        try:
            # refuses A non-canonical, of small order or outside the prime-order subgroup
            ka = sodium.crypto_scalarmult_ed25519_noclamp(k, public)
        except RuntimeError:
            return False
    return hmac.compare_digest(sodium.crypto_core_ed25519_sub(_base_mul(s), ka), big_r)


# --------------------------------------------------------------------------- Ed per curve


def ed_public(curve: Curve, seed: Buffer) -> bytes:
    """The Ed public key (RFC 8032 encoding) of an Ed seed."""
    if curve in _ON_25519:
        return ed25519ctx_public(seed)
    return ed448.Ed448PrivateKey.from_private_bytes(bytes(seed)).public_key().public_bytes_raw()


def ed_keypair(curve: Curve) -> tuple[bytes, bytearray]:
    """A fresh identity key: random seed and its Ed public key."""
    seed = bytearray(secrets.token_bytes(SIZES[curve].ed_priv))
    return ed_public(curve, seed), seed


def ed_sign(curve: Curve, seed: Buffer, message: Buffer) -> bytes:
    """lime's signature: Ed25519ctx (empty context) or Ed448 (empty context)."""
    if curve in _ON_25519:
        return ed25519ctx_sign(seed, message)
    return ed448.Ed448PrivateKey.from_private_bytes(bytes(seed)).sign(bytes(message))


def ed_verify(curve: Curve, public: Buffer, message: Buffer, signature: Buffer) -> bool:
    """Verify a lime signature; False for a bad signature or an undecodable key."""
    if curve in _ON_25519:
        return ed25519ctx_verify(public, message, signature)
    try:
        ed448.Ed448PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True


def ed_to_x_private(curve: Curve, seed: Buffer) -> bytearray:
    """Ed seed → X private key: SHA-512(seed)[:32] or SHAKE256(seed, 56) (§1.3)."""
    if curve in _ON_25519:
        return bytearray(hashlib.sha512(bytes(seed)).digest()[:32])
    return bytearray(hashlib.shake_256(bytes(seed)).digest(56))


def ed_to_x_public(curve: Curve, public: Buffer) -> bytes:
    """Ed public key → X public key with the birational / 4-isogeny maps of §1.3."""
    public = bytes(public)
    size = 32 if curve in _ON_25519 else 57
    if len(public) != size:
        raise ValueError(f"bad Ed{'25519' if size == 32 else '448'} public key size")
    return ed_to_x_u(Curve(curve).ec, public).to_bytes(_x_size(curve), "little")
