"""pylime: Linphone's lime end-to-end encryption (X3DH + Double Ratchet) for Python.

Two backends with one API: :class:`Manager` binds the system's liblime 5.1.x where it was
built at install time; :class:`pylime.reference.ReferenceManager` is pure Python and runs
everywhere. :func:`open_manager` picks one (``backend="auto"|"lime"|"reference"``).
"""

from __future__ import annotations

import logging

from pylime.backend import Backend, available_backends, lime_library, open_manager
from pylime.errors import (
    BackendUnavailableError,
    CurveNotInBindingError,
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
from pylime.types import CLASSIC_CURVES, POST_QUANTUM_CURVES, Curve, PeerStatus, Policy

__version__ = "0.2.0"

# A library logs, the application decides where logs go.
logging.getLogger("pylime").addHandler(logging.NullHandler())

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pylime.async_manager import AsyncManager
    from pylime.manager import Manager
    from pylime.reference.diagnose import diagnose


def __getattr__(name: str) -> object:
    # The binding's classes need the compiled module: importing them lazily keeps the
    # reference, the key server and the CLI usable where pylime._lime was never built, and
    # there they are stand-ins whose construction raises BackendUnavailableError.
    if name in ("Manager", "AsyncManager"):
        from pylime import backend

        if not backend.binding_available():
            return backend.unavailable_class(name)
        if name == "Manager":
            from pylime.manager import Manager

            return Manager
        from pylime.async_manager import AsyncManager

        return AsyncManager
    if name == "diagnose":  # the reference's analysis of a refused message (pure Python)
        from pylime.reference.diagnose import diagnose

        return diagnose
    raise AttributeError(f"module 'pylime' has no attribute {name!r}")


__all__ = [
    "CLASSIC_CURVES",
    "POST_QUANTUM_CURVES",
    "AsyncManager",
    "Backend",
    "BackendUnavailableError",
    "Curve",
    "CurveNotInBindingError",
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
    "__version__",
    "available_backends",
    "diagnose",
    "lime_library",
    "open_manager",
]
