"""lime's enumerations as IntEnums with literal values.

Imports nothing compiled, so the reference, the key server and the CLI work where
``pylime._lime`` was never built. ``tests/test_types.py`` checks every value against the
compiled header.
"""

from __future__ import annotations

import enum

__all__ = ["CLASSIC_CURVES", "POST_QUANTUM_CURVES", "Curve", "PeerStatus", "Policy"]


class Curve(enum.IntEnum):
    """The base algorithm of a lime user; the value is lime's CurveId byte on the wire.

    C25519 and C448 are lime 5.1's elliptic curves, served by both backends. The three
    hybrids came with lime 5.4 (X25519/X448 plus a KEM, ``src/lime_keys.hpp``); liblime 5.1.64
    has no such ids, so only the pure-Python reference speaks them.
    """

    C25519 = 1
    C448 = 2
    C25519K512 = 3  #: X25519 + Kyber-512 (round 3)
    C25519MLK512 = 4  #: X25519 + ML-KEM-512
    C448MLK1024 = 5  #: X448 + ML-KEM-1024

    @property
    def is_post_quantum(self) -> bool:
        """True for the lime 5.4 hybrids (an elliptic curve plus a KEM)."""
        return self in POST_QUANTUM_CURVES

    @property
    def ec(self) -> Curve:
        """The elliptic curve under this algorithm (itself for C25519 and C448)."""
        return Curve.C448 if self in (Curve.C448, Curve.C448MLK1024) else Curve.C25519


#: lime 5.1's curves: every backend speaks them.
CLASSIC_CURVES: tuple[Curve, ...] = (Curve.C25519, Curve.C448)
#: lime 5.4's post-quantum hybrids: the reference only.
POST_QUANTUM_CURVES: tuple[Curve, ...] = (Curve.C25519K512, Curve.C25519MLK512, Curve.C448MLK1024)


class PeerStatus(enum.IntEnum):
    """What lime knows of a peer device's identity key.

    UNTRUSTED, TRUSTED and UNSAFE are stored; FAIL and UNKNOWN are only ever reported.
    """

    UNTRUSTED = 0
    TRUSTED = 1
    UNSAFE = 2
    FAIL = 3
    UNKNOWN = 4


class Policy(enum.IntEnum):
    """Where lime puts the plaintext: in each Double Ratchet message or in one shared cipher message."""

    DR_MESSAGE = 0
    CIPHER_MESSAGE = 1
    OPTIMIZE_UPLOAD_SIZE = 2
    OPTIMIZE_GLOBAL_BANDWIDTH = 3
