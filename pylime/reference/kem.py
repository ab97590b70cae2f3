"""The key encapsulation mechanisms of lime 5.4's post-quantum algorithms.

lime 5.4 pairs X25519/X448 with a KEM (``src/lime_keys.hpp``): Kyber-512 (CRYSTALS-Kyber,
round 3, as liboqs's ``Kyber512``) for c25519k512, ML-KEM-512 (FIPS 203) for c25519mlk512
and ML-KEM-1024 for c448mlk1024. It calls them through bctoolbox's post-quantum engine
(liboqs underneath); only public keys and ciphertexts cross the wire.

Where the work is done, and why:

- ML-KEM-1024: pyca/cryptography (OpenSSL, constant time) whenever the private key is the
  64-byte FIPS 203 seed ``d ‖ z`` that this reference generates and stores.
- ML-KEM-512: cryptography 50 offers ML-KEM-768 and -1024 only, so ML-KEM-512 is kyber-py's
  (pure Python). ML-KEM-1024 private keys in the expanded form lime stores (liboqs's 3168-byte
  decapsulation key, as in recorded lime 5.4 vectors) also go through kyber-py, since
  cryptography loads seeds only.
- Kyber-512 (round 3): kyber-py's ``Kyber512``, the maintained Python implementation
  checked against the round-3 KATs; no library of the field in C offers round-3 Kyber any
  more (it was superseded by ML-KEM). Its private key is the 1632-byte round-3 secret key.

Side channels, honestly: kyber-py is NOT constant time (Python big-int and list arithmetic
on secret coefficients). Kyber-512 and ML-KEM-512 decapsulation, and key generation for
both, leak timing to an attacker who can measure this process closely. This module is for
the reference and interop testing; do not rely on it where such an attacker exists.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import mlkem
from kyber_py.kyber import Kyber512
from kyber_py.ml_kem import ML_KEM_512, ML_KEM_1024

from pylime.types import Curve

__all__ = [
    "CRYPTOGRAPHY_MLKEM1024",
    "KEM_OF",
    "SEED_SIZE",
    "SIZES",
    "Kem",
    "KemSizes",
    "decaps",
    "encaps",
    "generate",
    "index",
    "private_size_ok",
    "public_from_private",
]

Buffer = bytes | bytearray | memoryview

SEED_SIZE = 64


class Kem(enum.Enum):
    """lime's KEM algorithms, named by the string lime puts in its HKDF info (``Id()``)."""

    KYBER512 = "KYBER512"
    MLKEM512 = "MLKEM512"
    MLKEM1024 = "MLKEM1024"


@dataclass(frozen=True)
class KemSizes:
    """Public key, expanded private key, ciphertext and shared secret sizes (liboqs)."""

    pk: int
    sk: int
    ct: int
    ss: int = 32


SIZES: dict[Kem, KemSizes] = {
    Kem.KYBER512: KemSizes(pk=800, sk=1632, ct=768),
    Kem.MLKEM512: KemSizes(pk=800, sk=1632, ct=768),
    Kem.MLKEM1024: KemSizes(pk=1568, sk=3168, ct=1568),
}

#: The KEM of each post-quantum lime algorithm.
KEM_OF: dict[Curve, Kem] = {}


def _register() -> None:
    # Curve gains the post-quantum members in pylime.types; filled here so this module
    # stays the one place that knows which KEM goes with which algorithm.
    KEM_OF.update({
        Curve.C25519K512: Kem.KYBER512,
        Curve.C25519MLK512: Kem.MLKEM512,
        Curve.C448MLK1024: Kem.MLKEM1024,
    })


_register()


def _openssl_has_mlkem1024() -> bool:
    try:
        mlkem.MLKEM1024PrivateKey.from_seed_bytes(bytes(SEED_SIZE))
    except UnsupportedAlgorithm:  # a cryptography built on a library without ML-KEM
        return False
    return True


#: False where cryptography's backend lacks ML-KEM-1024: kyber-py then does it all.
CRYPTOGRAPHY_MLKEM1024 = _openssl_has_mlkem1024()


def private_size_ok(kem: Kem, size: int) -> bool:
    """True for a private key size this module accepts: the expanded key, or a ML-KEM seed."""
    return size == SIZES[kem].sk or (kem is not Kem.KYBER512 and size == SEED_SIZE)


def _check(kem: Kem, what: str, value: Buffer, size: int) -> bytes:
    if len(value) != size:
        raise ValueError(f"a {kem.value} {what} has {size} bytes, not {len(value)}")
    return bytes(value)


def generate(kem: Kem) -> tuple[bytes, bytearray]:
    """A fresh key pair: (public key, private key).

    The private key is the 64-byte seed for ML-KEM (FIPS 203 ``d ‖ z``: cryptography loads
    it) and the 1632-byte round-3 secret key for Kyber-512.
    """
    if kem is Kem.KYBER512:
        pk, sk = Kyber512.keygen()
        return pk, bytearray(sk)
    seed = bytearray(secrets.token_bytes(SEED_SIZE))
    return public_from_private(kem, seed), seed


def public_from_private(kem: Kem, private: Buffer) -> bytes:
    """The public key of a private key (seed or expanded form)."""
    raw = bytes(private)
    if not private_size_ok(kem, len(raw)):
        raise ValueError(f"a {kem.value} private key has {SIZES[kem].sk} bytes"
                         + ("" if kem is Kem.KYBER512 else f" (or a {SEED_SIZE}-byte seed)"))
    if len(raw) == SEED_SIZE:
        if kem is Kem.MLKEM1024 and CRYPTOGRAPHY_MLKEM1024:
            return mlkem.MLKEM1024PrivateKey.from_seed_bytes(raw).public_key().public_bytes_raw()
        return bytes(_ml_kem(kem).key_derive(raw)[0])
    # Expanded keys carry the public key: ML-KEM dk = dk_pke ‖ ek ‖ H(ek) ‖ z, and Kyber
    # round 3 sk = sk_pke ‖ pk ‖ H(pk) ‖ z, with dk_pke of 384·k bytes.
    k = {Kem.KYBER512: 2, Kem.MLKEM512: 2, Kem.MLKEM1024: 4}[kem]
    return raw[384 * k : 384 * k + SIZES[kem].pk]


def encaps(kem: Kem, public: Buffer) -> tuple[bytes, bytes]:
    """Encapsulate a fresh secret to ``public``: (ciphertext, 32-byte shared secret).

    Raises:
        ValueError: a public key of the wrong size, or one ML-KEM refuses (FIPS 203 §7.2).
    """
    pk = _check(kem, "public key", public, SIZES[kem].pk)
    if kem is Kem.MLKEM1024 and CRYPTOGRAPHY_MLKEM1024:
        ss, ct = mlkem.MLKEM1024PublicKey.from_public_bytes(pk).encapsulate()
        return ct, ss
    if kem is not Kem.KYBER512:
        ss, ct = _ml_kem(kem).encaps(pk)
        return ct, ss
    ss, ct = Kyber512.encaps(pk)
    return ct, ss


def decaps(kem: Kem, private: Buffer, ciphertext: Buffer) -> bytearray:
    """The shared secret of ``ciphertext`` (implicit rejection: a bad one gives garbage).

    Raises:
        ValueError: a private key or ciphertext of the wrong size.
    """
    ct = _check(kem, "ciphertext", ciphertext, SIZES[kem].ct)
    raw = bytes(private)
    if not private_size_ok(kem, len(raw)):
        raise ValueError(f"bad {kem.value} private key size {len(raw)}")
    if len(raw) == SEED_SIZE:
        if kem is Kem.MLKEM1024 and CRYPTOGRAPHY_MLKEM1024:
            key = mlkem.MLKEM1024PrivateKey.from_seed_bytes(raw)
            return bytearray(key.decapsulate(ct))
        raw = _ml_kem(kem).key_derive(raw)[1]
    if kem is Kem.KYBER512:
        return bytearray(Kyber512.decaps(raw, ct))
    return bytearray(_ml_kem(kem).decaps(raw, ct))


def _ml_kem(kem: Kem) -> Any:  # kyber-py's ML_KEM class has no public type
    return ML_KEM_512 if kem is Kem.MLKEM512 else ML_KEM_1024


def index(*parts: Buffer) -> bytes:
    """lime's 12-byte public-key index: HMAC-SHA-512 with an empty key, truncated."""
    return hmac.digest(b"", b"".join(bytes(p) for p in parts), "sha512")[:12]
