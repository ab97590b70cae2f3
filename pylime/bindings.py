"""Hazmat: one thin function per ``lime_ffi_*`` call (the C name without its prefix).

Each function sizes its buffers from lime's own maximum-size call, converts arguments to C
and returns raw results; :func:`check` turns a C return code into an exception. No policy,
no locking, no callbacks beyond passing them through: :mod:`pylime.manager` does that.
Nothing here is typed beyond ``Any``: cffi objects have no static types (mypy is relaxed for
this module in pyproject.toml for that reason).
"""

from __future__ import annotations

import functools
from typing import Any, NoReturn

from pylime import errors
from pylime.backend import require_binding

require_binding()  # a clear BackendUnavailableError (an ImportError) where _lime is absent
from pylime._callbacks import STATUS_SINK
from pylime._lime import ffi, lib
from pylime.keycheck import low_order_encodings
from pylime.types import CLASSIC_CURVES

__all__ = [
    "ENCRYPTED",
    "ENCRYPT_FAILED",
    "IK_MAX_SIZE",
    "LOW_ORDER",
    "check",
    "create_user",
    "decrypt",
    "decrypt_into",
    "delete_peer_device",
    "delete_user",
    "encrypt",
    "encrypt_out_buffers_maximum_size",
    "encrypt_prepared",
    "ffi",
    "get_peer_device_status",
    "get_self_identity_key",
    "get_x3dh_server_url",
    "in_memory_fs",
    "is_user",
    "lib",
    "manager_destroy",
    "manager_init",
    "process_x3dh_server_response",
    "set_peer_device_status",
    "set_x3dh_server_url",
    "stale_sessions",
    "update",
    "wipe",
]

#: Largest identity key lime hands out: an Ed448 public key.
IK_MAX_SIZE = 57

_SUCCESS = lib.LIME_FFI_SUCCESS
_MESSAGES = {
    lib.LIME_FFI_INVALID_CURVE_ARGUMENT: (errors.InvalidCurveError, "invalid curve argument"),
    lib.LIME_FFI_INTERNAL_ERROR: (errors.InternalError, "lime internal error"),
    lib.LIME_FFI_OUTPUT_BUFFER_TOO_SMALL: (
        errors.InternalError,
        "output buffer too small (a pylime bug: buffers are sized from lime's maximum)",
    ),
    lib.LIME_FFI_USER_NOT_FOUND: (errors.UserNotFoundError, "no such local user"),
}


def raise_for(rc: int, what: str) -> NoReturn:
    """Raise the exception that C return code ``rc`` means for operation ``what``."""
    cls, text = _MESSAGES.get(rc, (errors.InternalError, f"unexpected lime return code {rc}"))
    raise cls(f"{what}: {text}")


def check(rc: int, what: str) -> None:
    """Raise the matching :mod:`pylime.errors` exception unless ``rc`` is LIME_FFI_SUCCESS."""
    if rc != _SUCCESS:
        raise_for(rc, what)


def manager_init(db: bytes, post_userdata: Any) -> Any:
    """Open a lime manager on database string ``db``; return the ``lime_manager_t``."""
    out = ffi.new("lime_manager_t *")
    check(lib.lime_ffi_manager_init(out, db, lib._pylime_post, post_userdata), "manager_init")
    return out[0]


def manager_destroy(manager: Any) -> None:
    """Destroy a manager (lime closes its database)."""
    check(lib.lime_ffi_manager_destroy(manager), "manager_destroy")


def process_x3dh_server_response(lime_data: Any, code: int, body: bytes) -> int:
    """Hand a key-server answer back to lime; this frees ``lime_data``."""
    return lib.lime_ffi_processX3DHServerResponse(lime_data, code, body, len(body))


def create_user(manager: Any, device_id: bytes, url: bytes, curve: int, opk_batch: int,
                status: Any) -> int:
    """Start creating a user; lime reports its end to ``status`` (a ``pylime_status_t *``)."""
    return lib.lime_ffi_create_user(manager, device_id, url, curve, opk_batch, STATUS_SINK,
                                    status)


def delete_user(manager: Any, device_id: bytes, status: Any) -> int:
    """Start deleting a user (locally first, then on the key server)."""
    return lib.lime_ffi_delete_user(manager, device_id, STATUS_SINK, status)


def is_user(manager: Any, device_id: bytes) -> int:
    """LIME_FFI_SUCCESS when the user exists, LIME_FFI_USER_NOT_FOUND otherwise."""
    return lib.lime_ffi_is_user(manager, device_id)


@functools.lru_cache(maxsize=4096)
def encrypt_out_buffers_maximum_size(plain_size: int, curve: int) -> tuple[int, int]:
    """lime's own upper bounds for one DR message and the cipher message (cached: pure)."""
    dr = ffi.new("size_t *")
    cipher = ffi.new("size_t *")
    check(lib.lime_ffi_encryptOutBuffersMaximumSize(plain_size, curve, dr, cipher),
          "encryptOutBuffersMaximumSize")
    return dr[0], cipher[0]


def encrypt(manager: Any, device_id: bytes, recipient_user_id: bytes, recipients: Any,
            count: int, plaintext: bytes, cipher: Any, cipher_size: Any, status: Any,
            policy: int) -> int:
    """Start an encryption; every buffer must outlive the status, which may come later."""
    return lib.lime_ffi_encrypt(manager, device_id, recipient_user_id, recipients, count,
                                plaintext, len(plaintext), cipher, cipher_size, STATUS_SINK,
                                status, policy)


#: ``encrypt_prepared(manager, device_id, recipient_user_id, recipients, recipient_ids, count,
#: dr_room, plaintext, plaintext_size, cipher, cipher_size, cipher_room, status, policy)``:
#: :func:`encrypt` in one C call that also readies the recipients' slots (their ids from
#: the ``char *[]`` recipient_ids, status unknown, ``dr_room`` bytes each), sets
#: ``*cipher_size`` to ``cipher_room`` and clears ``status``. Returns lime's code while the
#: status is pending (0, or negative if refused), else ENCRYPTED or ENCRYPT_FAILED.
encrypt_prepared = lib.pylime_encrypt
ENCRYPTED = lib.PYLIME_ENCRYPTED
ENCRYPT_FAILED = lib.PYLIME_ENCRYPT_FAILED

#: ``decrypt_into(manager, device_id, recipient_user_id, sender, dr, dr_size, cipher,
#: cipher_size, plain, plain_room, plain_size)``: lime_ffi_decrypt into the caller's
#: ``uint8_t *`` of ``plain_room`` bytes (at least dr_size + cipher_size + 1, see
#: :func:`decrypt`); returns lime's peer status, the plaintext's size in ``*plain_size``,
#: or LOW_ORDER without calling lime when an established session's message carries a
#: low-order DHs (X3DH init messages: :func:`pylime.keycheck.dr_message_has_low_order_key`).
decrypt_into = lib.pylime_decrypt
LOW_ORDER = lib.PYLIME_LOW_ORDER

#: ``wipe(buffer, size)``: explicit_bzero, for a buffer that held a plaintext.
wipe = lib.pylime_wipe


def _register_low_order() -> None:
    """Hand the C shim pylime.keycheck's low-order encodings (its one source)."""
    for curve in CLASSIC_CURVES:
        keys = low_order_encodings(curve)
        if lib.pylime_set_low_order(int(curve), b"".join(keys), len(keys)) != 0:
            raise errors.InternalError("the C shim refused the low-order key list")


_register_low_order()


def decrypt(manager: Any, device_id: bytes, recipient_user_id: bytes, sender: bytes,
            dr_message: bytes, cipher_message: bytes) -> tuple[int, bytes]:
    """Decrypt one message; return (lime peer status or LOW_ORDER, plaintext).

    The plaintext buffer is sized so that lime can never drop a message for lack of room:
    a direct message's plaintext is shorter than the DR message, a cipher message's is 16
    bytes shorter than the cipher message.
    """
    room = len(dr_message) + len(cipher_message) + 1
    plain = ffi.new("uint8_t[]", room)
    size = ffi.new("size_t *")
    status = decrypt_into(manager, device_id, recipient_user_id, sender, dr_message,
                          len(dr_message), cipher_message, len(cipher_message), plain, room,
                          size)
    if status in (lib.lime_ffi_PeerDeviceStatus_fail, LOW_ORDER):
        return status, b""
    return status, ffi.buffer(plain, size[0])[:]


def in_memory_fs(path: bytes) -> bool:
    """True if ``path`` is on a file system kept in memory (tmpfs, ramfs): fsync is free."""
    return bool(lib.pylime_in_memory_fs(path) == 1)


def get_self_identity_key(manager: Any, device_id: bytes) -> bytes:
    """The local user's public identity key (Ed25519 or Ed448 encoding)."""
    ik = ffi.new("uint8_t[]", IK_MAX_SIZE)
    size = ffi.new("size_t *", IK_MAX_SIZE)
    check(lib.lime_ffi_get_selfIdentityKey(manager, device_id, ik, size), "get_selfIdentityKey")
    return ffi.buffer(ik, size[0])[:]


def set_peer_device_status(manager: Any, peer: bytes, ik: bytes, status: int) -> int:
    """Set a peer device's status; ``ik`` may be empty."""
    return lib.lime_ffi_set_peerDeviceStatus(manager, peer, ik if ik else ffi.NULL, len(ik),
                                             status)


def get_peer_device_status(manager: Any, peer: bytes) -> int:
    """The stored status of a peer device, or unknown."""
    return lib.lime_ffi_get_peerDeviceStatus(manager, peer)


def delete_peer_device(manager: Any, peer: bytes) -> int:
    """Forget a peer device and every session with it."""
    return lib.lime_ffi_delete_peerDevice(manager, peer)


def stale_sessions(manager: Any, device_id: bytes, peer: bytes) -> int:
    """Mark the active session with ``peer`` stale, so the next encrypt starts a new one."""
    return lib.lime_ffi_stale_sessions(manager, device_id, peer)


def update(manager: Any, status: Any, opk_low_limit: int, opk_batch: int) -> int:
    """Start lime's periodic maintenance (SPk rotation, OPk top-up, cleanup)."""
    return lib.lime_ffi_update(manager, STATUS_SINK, status, opk_low_limit, opk_batch)


def set_x3dh_server_url(manager: Any, device_id: bytes, url: bytes) -> int:
    """Change the key server URL of a local user."""
    return lib.lime_ffi_set_x3dhServerUrl(manager, device_id, url)


def get_x3dh_server_url(manager: Any, device_id: bytes) -> str:
    """The key server URL of a local user (grows the buffer until it fits)."""
    room = 512
    while True:
        buf = ffi.new("char[]", room)
        size = ffi.new("size_t *", room)
        rc = lib.lime_ffi_get_x3dhServerUrl(manager, device_id, buf, size)
        if rc == lib.LIME_FFI_OUTPUT_BUFFER_TOO_SMALL and room < 1 << 20:
            room *= 8
            continue
        check(rc, "get_x3dhServerUrl")
        return ffi.string(buf).decode("utf-8")
