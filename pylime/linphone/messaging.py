"""Encrypt and decrypt a Linphone chat message with any lime manager (Manager or ReferenceManager).

Sending follows liblinphone's pipeline (linphone.md §1.1, §2.4): wrap the text in a full CPIM
message, lime-encrypt it with policy cipherMessage to every recipient device (the sender's
own other devices included) with the conversation address without ``gr`` as recipient user id,
leave out the devices lime could not encrypt to, and frame the result as the
``multipart/encrypted`` envelope. Receiving follows ``processIncomingMessage`` (§1.6): inflate,
sender from the cleartext CPIM (else sipfrag), refuse unsafe senders, pick this device's key
part by exact Content-Id, decrypt, inflate the plaintext if flagged, and require the inner
CPIM ``From`` to be that sender.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pylime.errors import EncryptionError
from pylime.linphone.address import parse_device_id, recipient_user_id, uri_only
from pylime.linphone.cpim import CpimMessage, build_text_cpim, parse_cpim
from pylime.linphone.envelope import (
    EncryptedBody,
    Envelope,
    KeyPart,
    build_envelope,
    header_value,
    inflate,
    parse_envelope,
)
from pylime.linphone.errors import (
    InnerSenderMismatchError,
    InvalidDeviceIdError,
    NoRecipientsError,
    NotEncryptedError,
    UnsafeConversationError,
    UnsafeSenderError,
)
from pylime.types import PeerStatus, Policy

__all__ = [
    "IncomingMessage",
    "LimeManager",
    "OutgoingMessage",
    "decrypt_message",
    "encrypt_message",
]


class _Recipient(Protocol):
    @property
    def device_id(self) -> str: ...

    @property
    def status(self) -> PeerStatus: ...

    @property
    def dr_message(self) -> bytes: ...


class _EncryptResult(Protocol):
    @property
    def cipher_message(self) -> bytes: ...

    @property
    def recipients(self) -> Sequence[_Recipient]: ...


class LimeManager(Protocol):
    """The part of the Manager / ReferenceManager API these helpers use."""

    def encrypt(
        self,
        device_id: str,
        recipient_user_id: str,
        recipients: Sequence[str],
        plaintext: bytes,
        policy: Policy = ...,
    ) -> _EncryptResult:
        """Encrypt to each recipient device."""
        ...

    def decrypt(
        self,
        device_id: str,
        recipient_user_id: str,
        sender_device_id: str,
        dr_message: bytes,
        cipher_message: bytes = ...,
    ) -> tuple[PeerStatus, bytes]:
        """Decrypt one message; raises DecryptionError."""
        ...

    def peer_status(self, peer_device_id: str) -> PeerStatus:
        """The stored status of a peer device."""
        ...


@dataclass(frozen=True)
class OutgoingMessage:
    """An encrypted chat message ready for a SIP MESSAGE to the conversation address."""

    body: EncryptedBody
    message_id: str
    statuses: tuple[tuple[str, PeerStatus], ...]
    """Each device encrypted to, with the status lime knew before (UNKNOWN on first contact)."""
    skipped: tuple[str, ...] = ()
    """Devices lime could not encrypt to (no key bundle): no key part, as Linphone does."""

    @property
    def headers(self) -> dict[str, str]:
        """The SIP body headers: Content-Type and, when compressed, Content-Encoding."""
        return self.body.headers


@dataclass(frozen=True)
class IncomingMessage:
    """A decrypted, sender-authenticated chat message."""

    sender: str
    message_id: str | None
    status: PeerStatus
    """The sender's status before this message, as lime reports it (UNKNOWN on first contact)."""
    cpim: CpimMessage = field(repr=False)

    @property
    def content_type(self) -> str | None:
        """The inner content type (``text/plain`` for a text message)."""
        return self.cpim.content_type

    @property
    def text(self) -> str:
        """The inner content as text."""
        return self.cpim.text


def _inner_cpim(sender: str, conversation: str, cpim_or_text: str | bytes | CpimMessage,
                message_id: str | None) -> CpimMessage:
    if isinstance(cpim_or_text, str):
        return build_text_cpim(sender, conversation, cpim_or_text, message_id=message_id)
    cpim = cpim_or_text if isinstance(cpim_or_text, CpimMessage) else parse_cpim(bytes(cpim_or_text))
    if cpim.sender != sender:
        raise InnerSenderMismatchError(f"the CPIM From is not the sender {sender}")
    return cpim


def encrypt_message(
    manager: LimeManager,
    sender: str,
    room_or_peer: str,
    devices: Sequence[str],
    cpim_or_text: str | bytes | CpimMessage,
    *,
    message_id: str | None = None,
    allow_unsafe: bool = False,
    deflate: bool = True,
    boundary: str | None = None,
) -> OutgoingMessage:
    """Encrypt a chat message the way Linphone does and frame it as its envelope.

    Args:
        manager: a Manager or ReferenceManager holding ``sender`` as a local user.
        sender: our device id (GRUU).
        room_or_peer: the conversation address (chat room GRUU, or a peer address); lime's
            recipient user id is this address without ``gr``.
        devices: every recipient device, including our own other devices; the sender itself
            and duplicates are dropped.
        cpim_or_text: a text (wrapped in a new CPIM message), or a CPIM message (bytes or
            :class:`CpimMessage`) whose From must be ``sender``.
        message_id: the IMDN id for a text; a fresh one when None.
        allow_unsafe: send even if a recipient is unsafe (Linphone's
            ``allow_message_in_unsafe_chatroom``).
        deflate: compress the body at Linphone's threshold.
        boundary: a fixed multipart boundary (tests only).

    Raises:
        InvalidDeviceIdError: the sender or a device is not a GRUU.
        NoRecipientsError: nobody left to encrypt to.
        UnsafeConversationError: a recipient is unsafe and ``allow_unsafe`` is False.
        InnerSenderMismatchError: a given CPIM message is not from ``sender``.
        EncryptionError, KeyServerError: from lime.
    """
    parse_device_id(sender)
    conversation = uri_only(room_or_peer)
    ruid = recipient_user_id(conversation)
    recipients: list[str] = []
    for device in devices:
        parse_device_id(device)
        if device != sender and device not in recipients:
            recipients.append(device)
    if not recipients:
        raise NoRecipientsError("no recipient device other than the sender")
    if not allow_unsafe:
        unsafe = [d for d in recipients if manager.peer_status(d) is PeerStatus.UNSAFE]
        if unsafe:
            raise UnsafeConversationError(
                f"{len(unsafe)} recipient device(s) are unsafe, e.g. {unsafe[0]}"
            )
    cpim = _inner_cpim(sender, conversation, cpim_or_text, message_id)
    imdn_id = cpim.message_id or ""
    result = manager.encrypt(sender, ruid, recipients, cpim.to_bytes(), Policy.CIPHER_MESSAGE)
    keys = tuple(KeyPart(r.device_id, r.dr_message) for r in result.recipients
                 if r.status is not PeerStatus.FAIL)
    if not keys:
        raise EncryptionError("lime could not encrypt to any recipient device")
    body = build_envelope(
        Envelope(sender, imdn_id or None, keys, result.cipher_message),
        boundary=boundary,
        deflate=deflate,
    )
    return OutgoingMessage(
        body=body,
        message_id=imdn_id,
        statuses=tuple((r.device_id, r.status) for r in result.recipients
                       if r.status is not PeerStatus.FAIL),
        skipped=tuple(r.device_id for r in result.recipients if r.status is PeerStatus.FAIL),
    )


def decrypt_message(
    manager: LimeManager,
    device_id: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    room: str | None = None,
    allow_unsafe: bool = False,
) -> IncomingMessage:
    """Decrypt a received Linphone chat message for local device ``device_id``.

    Args:
        manager: a Manager or ReferenceManager holding ``device_id``.
        device_id: our device id, matched against each key part's Content-Id exactly.
        body: the SIP MESSAGE body as received.
        headers: the SIP headers (names case-insensitive): ``Content-Type``, optional
            ``Content-Encoding`` and, unless ``room`` is given, ``From`` — the conversation
            address, as the conference server sends it.
        room: the conversation address, when it is not the ``From`` header — for a direct
            message (no conference server) pass the ``room_or_peer`` the sender used.
        allow_unsafe: accept messages from devices marked unsafe.

    Raises:
        EnvelopeError: any subclass, for a malformed envelope; in particular
            DeviceNotInEnvelopeError when no key part is ours and InnerSenderMismatchError
            when the decrypted CPIM is not from the sender in clear.
        UnsafeSenderError: the sender device is unsafe and ``allow_unsafe`` is False.
        DecryptionError: lime could not decrypt (answer 488, as Linphone does).
    """
    content_type = header_value(headers, "Content-Type")
    if content_type is None:
        raise NotEncryptedError("no Content-Type header")
    conversation = room if room is not None else header_value(headers, "From")
    if conversation is None:
        raise InvalidDeviceIdError("no conversation address: pass room= or a From header")
    ruid = recipient_user_id(conversation)
    envelope = parse_envelope(content_type, body, header_value(headers, "Content-Encoding"))
    sender = envelope.sender
    if not allow_unsafe and manager.peer_status(sender) is PeerStatus.UNSAFE:
        raise UnsafeSenderError(f"discarding a message from unsafe device {sender}")
    dr_message = envelope.dr_message_for(device_id)
    status, plaintext = manager.decrypt(device_id, ruid, sender, dr_message, envelope.cipher_message)
    if envelope.cipher_deflated:
        plaintext = inflate(plaintext)
    cpim = parse_cpim(plaintext)
    if cpim.sender != sender:
        raise InnerSenderMismatchError(f"the decrypted CPIM From is not the sender {sender}")
    return IncomingMessage(sender=sender, message_id=cpim.message_id or envelope.message_id,
                           status=PeerStatus(status), cpim=cpim)
