"""Errors of :mod:`pylime.sip`: one branch of pylime's tree, rooted at :class:`SipError`.

::

    LimeError
    └── SipError                                   something on the SIP side went wrong
        ├── SipParseError (ValueError)             bytes that are not a SIP message we accept
        │   └── MessageTooLargeError               ...because they exceed the agent's size limits
        ├── SipTimeoutError (TimeoutError)         a request got no final answer in time (Timer F)
        ├── SipTransportError (ConnectionError)    the connection to the proxy failed or closed
        ├── SipRequestFailed                       a request got a final non-2xx answer (``status``)
        │   └── RegistrationError                  ...a REGISTER, or no usable GRUU in its 200
        ├── UnknownRoomError (LookupError)         a chat room this agent has not joined
        └── AgentClosedError                       the agent was closed

Messages name SIP addresses and status codes (not secrets), never message bodies or passwords.
"""

from __future__ import annotations

from pylime.errors import LimeError

__all__ = [
    "AgentClosedError",
    "MessageTooLargeError",
    "RegistrationError",
    "SipError",
    "SipParseError",
    "SipRequestFailed",
    "SipTimeoutError",
    "SipTransportError",
    "UnknownRoomError",
]


class SipError(LimeError):
    """Root of the errors raised by :mod:`pylime.sip`; never raised directly."""


class SipParseError(SipError, ValueError):
    """The bytes are not a SIP message we accept (RFC 3261 §7, with the agent's limits)."""


class MessageTooLargeError(SipParseError):
    """A message or body exceeds the agent's limits (answered 413 where an answer is possible)."""


class SipTimeoutError(SipError, TimeoutError):
    """A request got no final answer before Timer F (64·T1) expired."""


class SipTransportError(SipError, ConnectionError):
    """The connection to the outbound proxy could not be made, or was lost."""


class SipRequestFailed(SipError):
    """A request got a final answer other than 2xx; ``status`` and ``reason`` say which."""

    def __init__(self, message: str, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class RegistrationError(SipRequestFailed):
    """REGISTER failed (``status``), or its 200 carried no GRUU for our instance (``status`` 200)."""


class UnknownRoomError(SipError, LookupError):
    """The agent has not joined (or has left) this chat room."""


class AgentClosedError(SipError):
    """The agent was closed; start a new one."""
