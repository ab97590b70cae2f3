"""Errors of :mod:`pylime.linphone`: one branch of pylime's tree, rooted at :class:`LinphoneError`.

::

    LimeError
    └── LinphoneError                               something Linphone-specific went wrong
        ├── InvalidDeviceIdError (ValueError)       not a GRUU / not a SIP URI we accept
        ├── EnvelopeError (ValueError)              a multipart/encrypted body we cannot use
        │   ├── NotEncryptedError                   not multipart/encrypted with application/lime
        │   ├── MissingBoundaryError                no boundary parameter
        │   ├── MalformedMultipartError             bad framing: preamble, LF endings, no close delimiter
        │   ├── ContentEncodingError                unknown Content-Encoding or a body that will not inflate
        │   ├── MissingSenderError                  neither a cleartext CPIM nor a sipfrag sender
        │   ├── InvalidBase64Error                  a key or cipher part that is not strict base64
        │   ├── DuplicateKeyPartError               two application/lime parts for one device
        │   ├── DeviceNotInEnvelopeError (LookupError)  no application/lime part for this device
        │   ├── MissingCipherMessageError           no application/octet-stream part
        │   ├── AmbiguousCipherMessageError         more than one application/octet-stream part
        │   ├── CpimError                           a message/cpim that does not parse
        │   └── InnerSenderMismatchError            the decrypted CPIM From is not the sender
        ├── NoRecipientsError (ValueError)          nothing to encrypt to
        ├── UnsafeSenderError                       a message from a device marked unsafe
        ├── UnsafeConversationError                 sending into a conversation with an unsafe device
        ├── InvalidSdpAttributeError (ValueError)   a=Ik / a=lime-Iks that does not parse
        └── InvalidFingerprintError (ValueError)    a fingerprint or QR payload that does not parse

Messages carry device ids (they are addresses, not secrets) but never keys or plaintexts.
"""

from __future__ import annotations

from pylime.errors import LimeError

__all__ = [
    "AmbiguousCipherMessageError",
    "ContentEncodingError",
    "CpimError",
    "DeviceNotInEnvelopeError",
    "DuplicateKeyPartError",
    "EnvelopeError",
    "InnerSenderMismatchError",
    "InvalidBase64Error",
    "InvalidDeviceIdError",
    "InvalidFingerprintError",
    "InvalidSdpAttributeError",
    "LinphoneError",
    "MalformedMultipartError",
    "MissingBoundaryError",
    "MissingCipherMessageError",
    "MissingSenderError",
    "NoRecipientsError",
    "NotEncryptedError",
    "UnsafeConversationError",
    "UnsafeSenderError",
]


class LinphoneError(LimeError):
    """Root of the errors raised by :mod:`pylime.linphone`; never raised directly."""


class InvalidDeviceIdError(LinphoneError, ValueError):
    """The text is not a device id (GRUU) or SIP address of the accepted form."""


class EnvelopeError(LinphoneError, ValueError):
    """The message body is not a lime envelope we can use; never raised directly."""


class NotEncryptedError(EnvelopeError):
    """The Content-Type is not ``multipart/encrypted`` with ``protocol="application/lime"``."""


class MissingBoundaryError(EnvelopeError):
    """The multipart Content-Type has no ``boundary`` parameter."""


class MalformedMultipartError(EnvelopeError):
    """The multipart framing is broken (preamble, bare LF, missing delimiter, part without headers,
    or a boundary parameter that is not last and unquoted)."""


class ContentEncodingError(EnvelopeError):
    """The Content-Encoding is not one Linphone uses, or the body does not inflate."""


class MissingSenderError(EnvelopeError):
    """Neither a cleartext ``message/cpim`` nor a ``message/sipfrag`` part names the sender."""


class InvalidBase64Error(EnvelopeError):
    """A key or cipher part is not strict, unwrapped base64."""


class DuplicateKeyPartError(EnvelopeError):
    """Two ``application/lime`` parts carry the same Content-Id."""


class DeviceNotInEnvelopeError(EnvelopeError, LookupError):
    """The envelope has no ``application/lime`` part for this device (Linphone answers 488)."""


class MissingCipherMessageError(EnvelopeError):
    """The envelope has no ``application/octet-stream`` cipher message part."""


class AmbiguousCipherMessageError(EnvelopeError):
    """The envelope has several cipher message parts (Linphone 5.1 takes the last, master the first)."""


class CpimError(EnvelopeError):
    """A ``message/cpim`` text does not parse."""


class InnerSenderMismatchError(EnvelopeError):
    """The decrypted CPIM ``From`` is not the sender device named in the envelope."""


class NoRecipientsError(LinphoneError, ValueError):
    """No recipient device is left once the sender itself and duplicates are removed."""


class UnsafeSenderError(LinphoneError):
    """The sender device is marked unsafe; Linphone discards such messages (488) by default."""


class UnsafeConversationError(LinphoneError):
    """A recipient device is marked unsafe; Linphone refuses to send into an Unsafe room by default."""


class InvalidSdpAttributeError(LinphoneError, ValueError):
    """An ``a=Ik`` or ``a=lime-Iks`` value does not parse."""


class InvalidFingerprintError(LinphoneError, ValueError):
    """A fingerprint or identity-key QR payload does not parse or does not match."""
