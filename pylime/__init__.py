"""pylime: Linphone's lime end-to-end encryption (X3DH + Double Ratchet) for Python."""

from __future__ import annotations

import logging

from pylime.errors import (
    DatabaseInUseError,
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
from pylime.results import DecryptResult, EncryptResult, RecipientResult
from pylime.types import Curve, PeerStatus, Policy

# A library logs, the application decides where logs go.
logging.getLogger("pylime").addHandler(logging.NullHandler())

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pylime.async_manager import AsyncManager
    from pylime.manager import Manager
    from pylime.reference.diagnose import diagnose


def __getattr__(name: str) -> object:
    # Manager needs the compiled module; importing it lazily keeps the key server, the
    # reference and the CLI usable where pylime._lime was never built.
    if name == "Manager":
        from pylime.manager import Manager

        return Manager
    if name == "AsyncManager":
        from pylime.async_manager import AsyncManager

        return AsyncManager
    if name == "diagnose":  # the reference's analysis of a refused message (pure Python)
        from pylime.reference.diagnose import diagnose

        return diagnose
    raise AttributeError(f"module 'pylime' has no attribute {name!r}")


__all__ = [
    "AsyncManager",
    "Curve",
    "DatabaseInUseError",
    "DecryptResult",
    "DecryptionError",
    "EncryptResult",
    "EncryptionError",
    "IdentityKeyMismatchError",
    "InternalError",
    "InvalidCurveError",
    "KeyServerError",
    "KeyServerHTTPError",
    "KeyServerProtocolError",
    "LimeError",
    "Manager",
    "ManagerClosedError",
    "PeerStatus",
    "Policy",
    "RecipientResult",
    "TransportError",
    "UserExistsError",
    "UserNotFoundError",
    "diagnose",
]
