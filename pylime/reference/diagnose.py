"""Why was a message refused? The reference's analysis, run on a copy of the receiving database.

liblime only says that decryption failed. :func:`diagnose` replays the decryption with the
reference on an in-memory snapshot of the receiver's database (liblime's or the
reference's: the schema is the same), so the database itself is never modified, and
returns the precise :class:`~pylime.errors.DecryptionError` subclass.
"""

from __future__ import annotations

import os
from typing import Union

from pylime import errors
from pylime.reference.manager import ReferenceManager
from pylime.reference.storage import Db

__all__ = ["diagnose"]

StrPath = Union[str, "os.PathLike[str]"]


class _Offline:
    """Decryption never needs the key server."""

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        raise errors.TransportError("diagnose works offline")


def diagnose(database: StrPath, device_id: str, recipient_user_id: str,
             sender_device_id: str, dr_message: bytes,
             cipher_message: bytes = b"") -> errors.DecryptionError | None:
    """Explain why ``device_id`` cannot decrypt a message, without touching its database.

    Takes the same message arguments as ``Manager.decrypt``.

    Returns:
        The DecryptionError subclass instance that says why (MalformedMessageError,
        UnknownOPkError, IdentityKeyChangedError, ReplayError, TooManySkippedError,
        BadTagError), or None when the message would decrypt from this database state.

    Raises:
        UserNotFoundError: no active local user ``device_id`` in the database.
        FileNotFoundError: no database at that path.
    """
    path = os.fspath(database)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    manager = ReferenceManager(path, _Offline(), _db=Db.snapshot(path))
    try:
        manager.decrypt(device_id, recipient_user_id, sender_device_id, dr_message,
                        cipher_message)
    except errors.DecryptionError as exc:
        return exc
    finally:
        manager.close()
    return None
