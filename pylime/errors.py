"""pylime's exceptions: one tree, rooted at :class:`LimeError`.

::

    LimeError
    ├── InvalidCurveError (ValueError)          a curve lime does not support
    │   └── CurveNotInBindingError              a lime 5.4 post-quantum curve: the reference has it
    ├── UserNotFoundError (LookupError)         no such local user
    ├── UserExistsError                         create_user for a user that is already active
    ├── DatabaseInUseError                      the database is open in another manager
    ├── BackendUnavailableError (ImportError)   liblime's binding is not built in this install
    ├── IdentityKeyMismatchError (ValueError)   trusting a peer with a key other than the stored one
    ├── KeyServerError                          the key server refused or answered garbage
    │   ├── KeyServerHTTPError                  ...with an HTTP status other than 200
    │   ├── KeyServerProtocolError              ...with an X3DH error message (has .code)
    │   └── TransportError                      ...or could not be reached at all
    ├── EncryptionError                         lime could not encrypt to any recipient
    ├── DecryptionError                         lime could not decrypt (the reference says why)
    │   ├── MalformedMessageError (ValueError)
    │   ├── UnknownOPkError
    │   ├── IdentityKeyChangedError
    │   ├── ReplayError
    │   ├── TooManySkippedError
    │   └── BadTagError
    ├── ManagerClosedError                      a Manager used after close()
    └── InternalError                           lime reported an internal error

Messages never carry keys or plaintexts. Imports nothing compiled.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "BadTagError",
    "CurveNotInBindingError",
    "DatabaseInUseError",
    "DecryptionError",
    "EncryptionError",
    "IdentityKeyChangedError",
    "IdentityKeyMismatchError",
    "InternalError",
    "InvalidCurveError",
    "KeyServerError",
    "KeyServerHTTPError",
    "KeyServerProtocolError",
    "LimeError",
    "MalformedMessageError",
    "ManagerClosedError",
    "ReplayError",
    "TooManySkippedError",
    "TransportError",
    "UnknownOPkError",
    "UserExistsError",
    "UserNotFoundError",
]


class LimeError(Exception):
    """Root of every pylime exception; never raised directly."""


class InvalidCurveError(LimeError, ValueError):
    """The curve is not one lime supports (curve25519 or curve448)."""


class CurveNotInBindingError(InvalidCurveError):
    """A lime 5.4 post-quantum curve asked of the liblime 5.1.64 binding.

    liblime 5.1.64 has no such algorithm (and lime 5.4 has no C API to bind); the pure-Python
    reference speaks it: use ``pylime.open_manager(..., backend="reference")`` or
    ``backend="auto"`` with ``curve=``.
    """


class UserNotFoundError(LimeError, LookupError):
    """The local device id names no user in this database."""


class UserExistsError(LimeError):
    """create_user was called for a device id that is already an active user."""


class DatabaseInUseError(LimeError):
    """The database is open in another manager, in this process or another.

    lime caches sessions, so two managers on one file would reuse message keys.
    """


class BackendUnavailableError(LimeError, ImportError):
    """liblime's binding (pylime._lime) was not built in this installation.

    pylime builds it only where ``pkg-config lime`` found lime 5.1.x at install time; the
    message names the packages to install and the pure-Python backend that serves meanwhile.
    """


class IdentityKeyMismatchError(LimeError, ValueError):
    """The identity key given for a peer differs from the one lime already stores for it."""


class KeyServerError(LimeError):
    """The key server did not complete the operation lime asked of it.

    ``answer_lost`` is True when the server may have done what was asked although its answer
    did not reach us intact (unreachable, an HTTP error, a garbled answer): a registration
    then stays pending with its keys, and a retry sends the same ones.
    """

    answer_lost: bool = False


class KeyServerHTTPError(KeyServerError):
    """The key server answered with an HTTP status other than 200."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class KeyServerProtocolError(KeyServerError):
    """The key server answered with an X3DH error message; ``code`` is its error byte."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class TransportError(KeyServerError):
    """The transport could not reach the key server (the cause is chained)."""


class EncryptionError(LimeError):
    """lime could not encrypt the message to any recipient."""


class DecryptionError(LimeError):
    """lime could not decrypt the message; the session state is unchanged."""


class MalformedMessageError(DecryptionError, ValueError):
    """The message cannot be parsed (bad header, truncated, wrong curve)."""


class UnknownOPkError(DecryptionError):
    """The X3DH init names a signed or one-time prekey this device does not hold."""


class IdentityKeyChangedError(DecryptionError):
    """The sender's identity key differs from the one stored for that device."""


class ReplayError(DecryptionError):
    """The message key for this message was already used."""


class TooManySkippedError(DecryptionError):
    """Decrypting would skip more message keys than lime allows."""


class BadTagError(DecryptionError):
    """Authentication failed: the message was altered or is not for this session."""


class ManagerClosedError(LimeError):
    """The manager was closed; open a new one."""


class InternalError(LimeError):
    """lime reported an internal error (its log has the detail)."""
