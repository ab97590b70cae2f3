"""What Linphone puts on the wire around lime, and peer verification.

- :mod:`~pylime.linphone.address`: device ids (GRUUs) and conversation user ids.
- :mod:`~pylime.linphone.envelope` and :mod:`~pylime.linphone.cpim`: the
  ``multipart/encrypted`` body and its CPIM parts, built exactly as liblinphone 5.1.65 accepts.
- :mod:`~pylime.linphone.messaging`: :func:`encrypt_message` / :func:`decrypt_message` over any
  lime manager (Manager or ReferenceManager).
- :mod:`~pylime.linphone.zrtp`: ``a=Ik`` / ``a=lime-Iks``, the ZRTP auxiliary secret, SAS verdicts.
- :mod:`~pylime.linphone.security` and :mod:`~pylime.linphone.events`: conversation security
  level and typed security events.
- :mod:`~pylime.linphone.fingerprint`: pylime's own fingerprint and QR format of an identity key.

::

    out = encrypt_message(alice, alice1, room, [bob1, bob2, alice2], "Hello")
    # send out.body.body with out.headers in a SIP MESSAGE to the room ...
    msg = decrypt_message(bob, bob1, body, {"Content-Type": ..., "From": room})
    assert msg.text == "Hello" and msg.sender == alice1
"""

from __future__ import annotations

from pylime.linphone.address import (
    DeviceId,
    normalize_device_id,
    parse_device_id,
    recipient_user_id,
)
from pylime.linphone.cpim import CpimMessage, build_text_cpim, parse_cpim
from pylime.linphone.envelope import (
    DEFLATE_THRESHOLD,
    EncryptedBody,
    Envelope,
    KeyPart,
    build_envelope,
    parse_envelope,
)
from pylime.linphone.errors import (
    AmbiguousCipherMessageError,
    ContentEncodingError,
    CpimError,
    DeviceNotInEnvelopeError,
    DuplicateKeyPartError,
    EnvelopeError,
    InnerSenderMismatchError,
    InvalidBase64Error,
    InvalidDeviceIdError,
    InvalidFingerprintError,
    InvalidSdpAttributeError,
    LinphoneError,
    MalformedMultipartError,
    MissingBoundaryError,
    MissingCipherMessageError,
    MissingSenderError,
    NoRecipientsError,
    NotEncryptedError,
    UnsafeConversationError,
    UnsafeSenderError,
)
from pylime.linphone.events import (
    IdentityKeyChanged,
    ManInTheMiddleDetected,
    PeerStatusChanged,
    SecurityEvent,
    SecurityEvents,
    SecurityEventType,
    SecurityLevelDowngraded,
)
from pylime.linphone.fingerprint import (
    fingerprint,
    fingerprints_match,
    format_fingerprint,
    parse_qr_payload,
    qr_payload,
    qr_terminal,
    save_qr,
    trust_scanned,
)
from pylime.linphone.messaging import (
    IncomingMessage,
    OutgoingMessage,
    decrypt_message,
    encrypt_message,
)
from pylime.linphone.security import SecurityLevel, conversation_security_level
from pylime.linphone.zrtp import (
    AuxSecretStatus,
    IdentityKey,
    SdpIdentity,
    apply_sas_verdict,
    aux_secret,
    parse_sdp_identity,
    sdp_identity_lines,
)

__all__ = [
    "DEFLATE_THRESHOLD",
    "AmbiguousCipherMessageError",
    "AuxSecretStatus",
    "ContentEncodingError",
    "CpimError",
    "CpimMessage",
    "DeviceId",
    "DeviceNotInEnvelopeError",
    "DuplicateKeyPartError",
    "EncryptedBody",
    "Envelope",
    "EnvelopeError",
    "IdentityKey",
    "IdentityKeyChanged",
    "IncomingMessage",
    "InnerSenderMismatchError",
    "InvalidBase64Error",
    "InvalidDeviceIdError",
    "InvalidFingerprintError",
    "InvalidSdpAttributeError",
    "KeyPart",
    "LinphoneError",
    "MalformedMultipartError",
    "ManInTheMiddleDetected",
    "MissingBoundaryError",
    "MissingCipherMessageError",
    "MissingSenderError",
    "NoRecipientsError",
    "NotEncryptedError",
    "OutgoingMessage",
    "PeerStatusChanged",
    "SdpIdentity",
    "SecurityEvent",
    "SecurityEventType",
    "SecurityEvents",
    "SecurityLevel",
    "SecurityLevelDowngraded",
    "UnsafeConversationError",
    "UnsafeSenderError",
    "apply_sas_verdict",
    "aux_secret",
    "build_envelope",
    "build_text_cpim",
    "conversation_security_level",
    "decrypt_message",
    "encrypt_message",
    "fingerprint",
    "fingerprints_match",
    "format_fingerprint",
    "normalize_device_id",
    "parse_cpim",
    "parse_device_id",
    "parse_envelope",
    "parse_qr_payload",
    "parse_sdp_identity",
    "qr_payload",
    "qr_terminal",
    "recipient_user_id",
    "save_qr",
    "sdp_identity_lines",
    "trust_scanned",
]
