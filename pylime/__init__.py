"""pylime: Linphone's lime end-to-end encryption (X3DH + Double Ratchet) for Python."""

from __future__ import annotations

from pylime.errors import (
    DecryptionError,
    EncryptionError,
    IdentityKeyMismatchError,
    InternalError,
    InvalidCurveError,
    KeyServerError,
    KeyServerHTTPError,
    KeyServerProtocolError,
    LimeError,
    ManagerClosedError,
    TransportError,
    UserExistsError,
    UserNotFoundError,
)
from pylime.types import Curve, PeerStatus, Policy

__all__ = [
    "Curve",
    "DecryptionError",
    "EncryptionError",
    "IdentityKeyMismatchError",
    "InternalError",
    "InvalidCurveError",
    "KeyServerError",
    "KeyServerHTTPError",
    "KeyServerProtocolError",
    "LimeError",
    "ManagerClosedError",
    "PeerStatus",
    "Policy",
    "TransportError",
    "UserExistsError",
    "UserNotFoundError",
]
