"""Security events and a small typed observer API.

Linphone raises ``ConferenceSecurityEvent``\\ s when peer verification changes what a chat room
can be trusted with (linphone.md §4.6; liblinphone
include/linphone/enums/security-event-enums.h). pylime raises the same kinds, one dataclass
each, plus :class:`PeerStatusChanged` for every status change it makes. Subscribe to a kind (or
to :class:`SecurityEvent` for all)::

    events = SecurityEvents()
    sub = events.subscribe(lambda e: warn(e.peer_device_id), ManInTheMiddleDetected)
    ...
    sub.cancel()

Callbacks run synchronously, in subscription order, after the status change was applied; an
exception in a callback propagates to the code that caused the event.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

from pylime.types import PeerStatus

__all__ = [
    "IdentityKeyChanged",
    "ManInTheMiddleDetected",
    "PeerStatusChanged",
    "SecurityEvent",
    "SecurityEventType",
    "SecurityEvents",
    "SecurityLevelDowngraded",
    "Subscription",
]


class SecurityEventType(enum.IntEnum):
    """Linphone's ``LinphoneSecurityEventType`` values."""

    NONE = 0
    SECURITY_LEVEL_DOWNGRADED = 1
    PARTICIPANT_MAX_DEVICE_COUNT_EXCEEDED = 2
    ENCRYPTION_IDENTITY_KEY_CHANGED = 3
    MAN_IN_THE_MIDDLE_DETECTED = 4


@dataclass(frozen=True)
class SecurityEvent:
    """Something happened to the trust in a peer device; subclasses say what."""

    type: ClassVar[SecurityEventType] = SecurityEventType.NONE
    peer_device_id: str


@dataclass(frozen=True)
class PeerStatusChanged(SecurityEvent):
    """pylime changed a peer device's lime status (not a Linphone security event: type NONE)."""

    previous: PeerStatus
    current: PeerStatus


@dataclass(frozen=True)
class SecurityLevelDowngraded(SecurityEvent):
    """A trusted device lost its trust (the SAS was refused)."""

    type: ClassVar[SecurityEventType] = SecurityEventType.SECURITY_LEVEL_DOWNGRADED


@dataclass(frozen=True)
class IdentityKeyChanged(SecurityEvent):
    """A verified SAS vouched for an identity key other than the stored one; the device was replaced.

    Linphone raises it only when the old status was untrusted or trusted (not unsafe).
    """

    type: ClassVar[SecurityEventType] = SecurityEventType.ENCRYPTION_IDENTITY_KEY_CHANGED
    previous_status: PeerStatus


@dataclass(frozen=True)
class ManInTheMiddleDetected(SecurityEvent):
    """The ZRTP auxiliary secrets disagreed (or a refused SAS counts as one); the device is unsafe."""

    type: ClassVar[SecurityEventType] = SecurityEventType.MAN_IN_THE_MIDDLE_DETECTED
    reason: str


E = TypeVar("E", bound=SecurityEvent)


class Subscription:
    """A handle on one subscription; :meth:`cancel` it to stop receiving events."""

    def __init__(self, hub: SecurityEvents, key: int) -> None:
        self._hub = hub
        self._key = key

    def cancel(self) -> None:
        """Stop receiving events; cancelling twice is harmless."""
        self._hub._remove(self._key)


class SecurityEvents:
    """Delivers security events to subscribed callbacks, filtered by event class."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._subs: dict[int, tuple[type[SecurityEvent], Callable[[Any], object]]] = {}

    def __repr__(self) -> str:
        return f"SecurityEvents({len(self._subs)} subscription(s))"

    @overload
    def subscribe(self, callback: Callable[[SecurityEvent], object]) -> Subscription: ...

    @overload
    def subscribe(self, callback: Callable[[E], object], kind: type[E]) -> Subscription: ...

    def subscribe(
        self, callback: Callable[[Any], object], kind: type[SecurityEvent] = SecurityEvent
    ) -> Subscription:
        """Call ``callback`` with every emitted event that is an instance of ``kind``."""
        with self._lock:
            key = self._next
            self._next += 1
            self._subs[key] = (kind, callback)
        return Subscription(self, key)

    def _remove(self, key: int) -> None:
        with self._lock:
            self._subs.pop(key, None)

    def emit(self, event: SecurityEvent) -> None:
        """Deliver ``event`` to the matching subscribers, in subscription order."""
        with self._lock:
            targets = [cb for kind, cb in self._subs.values() if isinstance(event, kind)]
        for callback in targets:
            callback(event)

    @contextmanager
    def recording(self, kind: type[E] = SecurityEvent) -> Iterator[list[E]]:  # type: ignore[assignment]
        """Collect the events of ``kind`` emitted inside the ``with`` block into a list."""
        seen: list[E] = []
        sub = self.subscribe(seen.append, kind)
        try:
            yield seen
        finally:
            sub.cancel()
