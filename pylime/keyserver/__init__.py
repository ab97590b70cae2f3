"""lime's X3DH key-server protocol as a service: the sans-IO core and its storage backends.

::

    from pylime.keyserver import KeyServer
    with KeyServer("keys.sqlite3") as server:         # or KeyServer() for ":memory:"
        status, answer = server.post(url, device_id, request_body)

The HTTPS service around it is in :mod:`pylime.keyserver.app` (``pylime keyserver serve``).
"""

from __future__ import annotations

from pylime.keyserver.core import DEFAULT_MAX_OPKS_PER_DEVICE, KeyServer, open_storage
from pylime.keyserver.protocol import CONTENT_TYPE, KEY_SIZES, ErrorCode, MessageType
from pylime.keyserver.storage import SQLiteStorage, Storage, StorageError

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_OPKS_PER_DEVICE",
    "KEY_SIZES",
    "ErrorCode",
    "KeyServer",
    "MessageType",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "open_storage",
]
