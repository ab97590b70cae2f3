"""Conversation security level, as Linphone computes a chat room's.

liblinphone src/conference/client-conference.cpp ``getSecurityLevelExcept`` and the lime
engine's ``limeStatus2ChatRoomSecLevel`` (linphone.md §4.5): every participant device plus the
user's own *other* devices, minus the local one; any unsafe → Unsafe, otherwise any unknown or
untrusted → Encrypted, all trusted (or nobody left) → Safe. Devices that are local lime users
count as trusted. A room that is not encrypted is ClearText; an encrypted one with no device
known yet is Encrypted.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Protocol

from pylime.types import PeerStatus

__all__ = ["PeerStatusSource", "SecurityLevel", "conversation_security_level", "level_of_status"]


class SecurityLevel(enum.IntEnum):
    """Linphone's ``LinphoneChatRoomSecurityLevel``; the values are Linphone's C enum, not an order."""

    UNSAFE = 0
    CLEAR_TEXT = 1
    ENCRYPTED = 2
    SAFE = 3


class PeerStatusSource(Protocol):
    """What the level needs from a manager: the stored status of a peer device."""

    def peer_status(self, peer_device_id: str) -> PeerStatus:
        """The stored status of a peer device; UNKNOWN if never met."""
        ...


def level_of_status(status: PeerStatus) -> SecurityLevel:
    """Map one lime peer status to a security level (``limeStatus2ChatRoomSecLevel``)."""
    if status is PeerStatus.UNSAFE:
        return SecurityLevel.UNSAFE
    if status is PeerStatus.TRUSTED:
        return SecurityLevel.SAFE
    return SecurityLevel.ENCRYPTED


def _is_local_user(manager: PeerStatusSource, device_id: str) -> bool:
    # Manager and ReferenceManager have is_user; a bare status source counts nobody as local.
    is_user = getattr(manager, "is_user", None)
    return bool(is_user(device_id)) if is_user is not None else False


def conversation_security_level(
    manager: PeerStatusSource,
    local_device_id: str,
    participant_devices: Iterable[str],
    own_devices: Iterable[str] = (),
    *,
    encrypted: bool = True,
) -> SecurityLevel:
    """The lowest level over every device of a conversation, own other devices included.

    Args:
        manager: a Manager or ReferenceManager holding the local user.
        local_device_id: this device; it is left out.
        participant_devices: every device of every other participant.
        own_devices: the user's own devices (this one may be among them).
        encrypted: False for a cleartext conversation (the answer is then CLEAR_TEXT).
    """
    if not encrypted:
        return SecurityLevel.CLEAR_TEXT
    devices = list(dict.fromkeys([*participant_devices, *own_devices]))
    if not devices:
        return SecurityLevel.ENCRYPTED
    worst = SecurityLevel.SAFE
    for device in devices:
        if device == local_device_id or _is_local_user(manager, device):
            continue
        level = level_of_status(manager.peer_status(device))
        if level is SecurityLevel.UNSAFE:
            return SecurityLevel.UNSAFE
        if level is SecurityLevel.ENCRYPTED:
            worst = SecurityLevel.ENCRYPTED
    return worst
