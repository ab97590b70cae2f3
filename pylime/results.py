"""What encrypt and decrypt return; shared by Manager and ReferenceManager.

Plain Python, nothing compiled. Immutable named tuples (cheap to build on the hot path);
reprs show sizes, never plaintexts.
"""

from __future__ import annotations

from typing import NamedTuple

from pylime.types import PeerStatus

__all__ = ["DecryptResult", "EncryptResult", "RecipientResult"]


class RecipientResult(NamedTuple):
    """One recipient device of an encryption: its status and its Double Ratchet message.

    ``status`` is what lime knew of the device before this call (UNKNOWN on first contact),
    or FAIL with an empty ``dr_message`` when lime could not encrypt to it.
    """

    device_id: str
    status: PeerStatus
    dr_message: bytes

    def __repr__(self) -> str:
        return (f"RecipientResult(device_id={self.device_id!r}, status={self.status.name}, "
                f"dr_message=<{len(self.dr_message)} bytes>)")


class EncryptResult(NamedTuple):
    """The output of one encryption.

    ``cipher_message`` is shared by all recipients; it is ``b""`` when the policy put the
    plaintext in each recipient's DR message. ``recipients`` keeps the order given.
    """

    cipher_message: bytes
    recipients: tuple[RecipientResult, ...]

    def __repr__(self) -> str:
        return (f"EncryptResult(cipher_message=<{len(self.cipher_message)} bytes>, "
                f"recipients={list(self.recipients)!r})")


class DecryptResult(NamedTuple):
    """The sender's status (read before this decryption) and the plaintext."""

    status: PeerStatus
    plaintext: bytes

    def __repr__(self) -> str:
        return f"DecryptResult(status={self.status.name}, plaintext=<{len(self.plaintext)} bytes>)"
