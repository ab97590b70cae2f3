"""Chat rooms as a Linphone conference server runs them: who is in a room, on which devices.

Linphone's encrypted chat rooms live on a conference server (Flexisip's, or a liblinphone core
in conference-server mode): the room has its own address (``sip:chatroom-…@domain;gr=…``), it
INVITEs each participant device, and each device SUBSCRIBEs to the room's ``conference`` event
to learn the other devices from ``application/conference-info+xml`` NOTIFYs (RFC 4575, full
state first, then partial updates). Every message to the room is encrypted to all those
devices (and our own other ones); the room forwards it (linphone.md §6.4–6.6). This module is
the pure state: parsing the NOTIFY documents and applying them to a :class:`Room`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from pylime.linphone.address import normalize_device_id, uri_only
from pylime.linphone.errors import InvalidDeviceIdError
from pylime.sip.errors import SipParseError

__all__ = ["ConferenceInfo", "Room", "UserInfo", "parse_conference_info", "parse_resource_list"]

_NS = "{urn:ietf:params:xml:ns:conference-info}"
_RL = "{urn:ietf:params:xml:ns:resource-lists}"
MAX_XML = 256 * 1024


def _xml(data: bytes, what: str) -> ET.Element:
    if len(data) > MAX_XML or b"<!DOCTYPE" in data.upper():
        raise SipParseError(f"a {what} document that is too large or declares a DOCTYPE")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise SipParseError(f"a {what} document that is not well-formed XML") from exc


@dataclass(frozen=True)
class UserInfo:
    """One ``<user>`` of a conference-info document: its AOR, state and device endpoints."""

    entity: str
    state: str
    endpoints: tuple[tuple[str, str], ...]
    """(device GRUU, state) pairs; state is ``full``, ``partial`` or ``deleted``."""


@dataclass(frozen=True)
class ConferenceInfo:
    """A parsed ``application/conference-info+xml`` NOTIFY body."""

    entity: str
    state: str
    version: int
    subject: str | None
    users: tuple[UserInfo, ...]


def parse_conference_info(data: bytes) -> ConferenceInfo:
    """Parse a conference-info document (RFC 4575), keeping what a chat device needs.

    Raises:
        SipParseError: not a conference-info document.
    """
    root = _xml(data, "conference-info")
    if root.tag != f"{_NS}conference-info":
        raise SipParseError("not a conference-info document")
    version = root.get("version") or "0"
    users = []
    for user in root.iter(f"{_NS}user"):
        endpoints = tuple((e.get("entity") or "", e.get("state") or "full")
                          for e in user.findall(f"{_NS}endpoint") if e.get("entity"))
        users.append(UserInfo(user.get("entity") or "", user.get("state") or "full", endpoints))
    return ConferenceInfo(
        entity=root.get("entity") or "",
        state=root.get("state") or "full",
        version=int(version) if version.isdigit() else 0,
        subject=root.findtext(f"{_NS}conference-description/{_NS}subject"),
        users=tuple(users),
    )


def parse_resource_list(data: bytes) -> list[str]:
    """The entry URIs of an ``application/resource-lists+xml`` body (a room INVITE's participants)."""
    root = _xml(data, "resource-lists")
    return [e.get("uri") or "" for e in root.iter(f"{_RL}entry") if e.get("uri")]


def _device(gruu: str) -> str | None:
    try:
        return normalize_device_id(gruu)
    except InvalidDeviceIdError:
        return None  # an endpoint without a GRUU cannot be a lime recipient


@dataclass
class Room:
    """A chat room this agent is in: its address, subject and every participant's devices."""

    address: str
    subject: str = ""
    one_to_one: bool = False
    devices: dict[str, list[str]] = field(default_factory=dict)
    """Participant AOR → device ids (GRUUs), as the room's last NOTIFY said."""
    version: int = 0
    known: bool = False
    """Whether a full-state NOTIFY arrived (until then, the device list is incomplete)."""

    def all_devices(self) -> list[str]:
        """Every participant device, in a stable order."""
        return [d for aor in sorted(self.devices) for d in self.devices[aor]]

    def recipients(self, me: str) -> list[str]:
        """The devices a message from device ``me`` is encrypted to: everyone else's, our others."""
        return [d for d in self.all_devices() if d != me]

    def has_device(self, device_id: str) -> bool:
        """Whether ``device_id`` is a participant device of this room."""
        return any(device_id in devices for devices in self.devices.values())

    def apply(self, info: ConferenceInfo) -> bool:
        """Apply a NOTIFY document; returns False for a stale or out-of-order partial one."""
        if info.state == "full":
            self.devices = {}
        elif not self.known or info.version <= self.version:
            return False
        if info.subject is not None:
            self.subject = info.subject
        for user in info.users:
            aor = uri_only(user.entity)
            if user.state == "deleted":
                self.devices.pop(aor, None)
                continue
            current = [] if user.state == "full" else list(self.devices.get(aor, []))
            for entity, state in user.endpoints:
                device = _device(entity)
                if device is None:
                    continue
                if state == "deleted":
                    if device in current:
                        current.remove(device)
                elif device not in current:
                    current.append(device)
            self.devices[aor] = current
        self.version = info.version
        self.known = True
        return True

    def to_json(self) -> dict[str, object]:
        """What the agent's store keeps of the room."""
        return {"address": self.address, "subject": self.subject, "one_to_one": self.one_to_one,
                "devices": self.devices, "version": self.version, "known": self.known}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Room:
        """The inverse of :meth:`to_json`."""
        devices = data.get("devices") or {}
        assert isinstance(devices, dict)
        version = data.get("version") or 0
        assert isinstance(version, int)
        return cls(address=str(data["address"]), subject=str(data.get("subject") or ""),
                   one_to_one=bool(data.get("one_to_one")),
                   devices={str(k): [str(x) for x in v] for k, v in devices.items()},
                   version=version, known=bool(data.get("known")))
