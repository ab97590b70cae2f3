"""What a SIP agent tells its application: one frozen dataclass per kind of event.

The application reads them with ``async for event in agent.events()``. Messages and
notifications (:class:`MessageReceived`, :class:`ImdnReceived`) come from the agent's durable
inbox and are handed over once, in arrival order, even across restarts; the others describe
what happened on the way (registration, rooms, refused requests) and are not persisted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pylime.linphone.imdn import ImdnStatus
from pylime.types import PeerStatus

__all__ = [
    "Disconnected",
    "Event",
    "ImdnReceived",
    "MessageReceived",
    "Refusal",
    "Registered",
    "RequestRefused",
    "RoomJoined",
    "RoomLeft",
    "RoomUpdated",
]


@dataclass(frozen=True)
class Event:
    """Base of every agent event."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: ``{"event": <kind>, ...fields}`` (enums by value)."""
        out: dict[str, object] = {"event": _kind(type(self).__name__)}
        for name, value in self.__dict__.items():
            if name.startswith("_"):
                continue
            out[name] = value.value if isinstance(value, enum.Enum) else value
        return out


def _kind(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@dataclass(frozen=True)
class Registered(Event):
    """REGISTER got 200: ``device_id`` is the GRUU (the lime device id) for ``expires`` seconds."""

    device_id: str
    expires: int


@dataclass(frozen=True)
class Disconnected(Event):
    """The flow to the proxy was lost; the agent reconnects and registers again."""

    reason: str


@dataclass(frozen=True)
class RoomJoined(Event):
    """We are in a chat room (its INVITE accepted, or a room we created)."""

    room: str
    subject: str
    one_to_one: bool


@dataclass(frozen=True)
class RoomUpdated(Event):
    """The room's participant devices changed (a conference NOTIFY)."""

    room: str
    devices: tuple[str, ...]


@dataclass(frozen=True)
class RoomLeft(Event):
    """The room ended our participation (BYE)."""

    room: str


@dataclass(frozen=True)
class MessageReceived(Event):
    """A decrypted, sender-authenticated chat message."""

    room: str
    sender: str
    message_id: str | None
    content_type: str
    text: str
    seq: int
    """The agent's inbox sequence number: strictly increasing in arrival order."""
    sender_status: PeerStatus = PeerStatus.UNKNOWN
    """The sender device's lime status at reception (UNKNOWN on first contact)."""
    wants_display_notification: bool = field(default=False, repr=False)


@dataclass(frozen=True)
class ImdnReceived(Event):
    """A delivery, display or failure notification about a message we sent."""

    room: str
    sender: str
    message_id: str
    status: ImdnStatus
    reason_code: int | None
    seq: int
    encrypted: bool = True


class Refusal(enum.Enum):
    """Why the agent refused a request (``RequestRefused.reason``)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    UNTRUSTED_SOURCE = "untrusted-source"
    UNKNOWN_ROOM = "unknown-room"
    NOT_A_PARTICIPANT = "not-a-participant"
    SPOOFED_SENDER = "spoofed-sender"
    UNDECRYPTABLE = "undecryptable"
    UNSAFE_SENDER = "unsafe-sender"
    UNENCRYPTED = "unencrypted"
    NOT_ALLOWED = "not-allowed"


@dataclass(frozen=True)
class RequestRefused(Event):
    """A request the agent answered with an error (or dropped, ``status`` 0, when unanswerable)."""

    method: str
    status: int
    reason: Refusal
    detail: str
    source: str
    """The peer address the request came from (``host:port``)."""
    room: str | None = None
    sender: str | None = None
