"""Shared values for the pylime.linphone tests: the spec's device ids and a stand-in lime.

The stand-in (:class:`FakeLime`) follows lime 5.1.64's peer-status rules (lime-wire.md §7.3)
and "encrypts" by tagging, so envelope and verification logic can be tested in milliseconds;
everything that claims to work with lime is also run on the real backends through the shared
``world`` fixture (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pylime import DecryptionError, EncryptionError, IdentityKeyMismatchError, PeerStatus, Policy

# Device ids of linphone.md §1.4, written out in full as in linphone-5.1.65.md §2.3.
ALICE_PHONE = "sip:alice@sip.example.org;gr=urn:uuid:aaaa1111-0000-4000-8000-000000000001"
BOB_PHONE = "sip:bob@sip.example.org;gr=urn:uuid:bbbb2222-0000-4000-8000-000000000002"
BOB_DESKTOP = "sip:bob@sip.example.org;gr=urn:uuid:bbbb3333-0000-4000-8000-000000000003"
ALICE_LAPTOP = "sip:alice@sip.example.org;gr=urn:uuid:aaaa4444-0000-4000-8000-000000000004"
ROOM = "sip:chatroom-Qm9F3kP1sT7wXz2a@sip.example.org;gr=urn:uuid:5b1c0000-0000-4000-8000-00000000007e"
ROOM_USER_ID = "sip:chatroom-Qm9F3kP1sT7wXz2a@sip.example.org"
BOUNDARY = "----------k3J9x7Qm2Lw8Pz4Rt6Yv1Nb5Hs0Dc3Fg9Jk2Ma7Ue4Oi8Wq1Er6Ty5Ui-zX"


@dataclass(frozen=True)
class FakeRecipient:
    """What a manager returns per recipient."""

    device_id: str
    status: PeerStatus
    dr_message: bytes


@dataclass(frozen=True)
class FakeResult:
    """What a manager's encrypt returns."""

    cipher_message: bytes
    recipients: tuple[FakeRecipient, ...]


class FakeLime:
    """A stand-in with lime's status rules; DR message = tag of (ruid, sender, recipient)."""

    def __init__(self, device_id: str, unreachable: Sequence[str] = ()) -> None:
        self.device_id = device_id
        self.unreachable = set(unreachable)
        self.peers: dict[str, tuple[bytes, PeerStatus]] = {}

    @staticmethod
    def _tag(ruid: str, sender: str, recipient: str) -> bytes:
        return b"\x01\x00\x01" + f"{ruid}|{sender}|{recipient}".encode()

    def encrypt(self, device_id: str, recipient_user_id: str, recipients: Sequence[str],
                plaintext: bytes, policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE) -> FakeResult:
        out = []
        for r in recipients:
            if r in self.unreachable:
                out.append(FakeRecipient(r, PeerStatus.FAIL, b""))
            else:
                out.append(FakeRecipient(r, self.peer_status(r),
                                         self._tag(recipient_user_id, device_id, r)))
        if all(r.status is PeerStatus.FAIL for r in out):
            raise EncryptionError("no recipient")
        return FakeResult(b"\x00" + plaintext, tuple(out))

    def decrypt(self, device_id: str, recipient_user_id: str, sender_device_id: str,
                dr_message: bytes, cipher_message: bytes = b"") -> tuple[PeerStatus, bytes]:
        if dr_message != self._tag(recipient_user_id, sender_device_id, device_id):
            raise DecryptionError("wrong key part")
        if not cipher_message.startswith(b"\x00"):
            raise DecryptionError("bad cipher message")
        status = self.peer_status(sender_device_id)
        if status is PeerStatus.UNKNOWN:
            self.peers[sender_device_id] = (b"\x00", PeerStatus.UNTRUSTED)
        return status, cipher_message[1:]

    def is_user(self, device_id: str) -> bool:
        return device_id == self.device_id

    def peer_status(self, peer_device_id: str) -> PeerStatus:
        entry = self.peers.get(peer_device_id)
        return PeerStatus.UNKNOWN if entry is None else entry[1]

    def stored_key(self, peer_device_id: str) -> bytes | None:
        entry = self.peers.get(peer_device_id)
        return None if entry is None else entry[0]

    def set_peer_status(self, peer_device_id: str, status: PeerStatus,
                        identity_key: bytes | None = None) -> None:
        entry = self.peers.get(peer_device_id)
        if status is PeerStatus.TRUSTED:
            assert identity_key
            if entry is not None and entry[0] not in (b"\x00", identity_key):
                raise IdentityKeyMismatchError("another key is stored")
            self.peers[peer_device_id] = (identity_key, PeerStatus.TRUSTED)
        elif status is PeerStatus.UNTRUSTED:
            if entry is not None and entry[1] is not PeerStatus.UNSAFE:
                self.peers[peer_device_id] = (entry[0], PeerStatus.UNTRUSTED)
        elif status is PeerStatus.UNSAFE:
            self.peers[peer_device_id] = (entry[0] if entry else b"\x00", PeerStatus.UNSAFE)

    def delete_peer(self, peer_device_id: str) -> None:
        self.peers.pop(peer_device_id, None)
