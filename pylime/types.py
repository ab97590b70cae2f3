"""lime's enumerations as IntEnums with literal values.

Imports nothing compiled, so the reference, the key server and the CLI work where
``pylime._lime`` was never built. ``tests/test_types.py`` checks every value against the
compiled header.
"""

from __future__ import annotations

import enum

__all__ = ["Curve", "PeerStatus", "Policy"]


class Curve(enum.IntEnum):
    """The elliptic curve of a lime user; the value is lime's CurveId byte on the wire."""

    C25519 = 1
    C448 = 2


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
