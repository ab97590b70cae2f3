"""A thin ctypes driver for Debian's liblinphone 5.1.65 (liblinphone10), for interop tests only.

Only the C functions the interop tests call are declared here, from liblinphone's public C API
(names and signatures as documented; written for these tests). Each :class:`Core` lives in one
process and one thread and is only ever touched from there: liblinphone is not thread-safe.
Every core listens on 127.0.0.1 only (``[sip] bind_address``, ``[rtp] bind_address``, no IPv6),
and everything that waits is bounded by a deadline.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LINPHONE_MISSING",
    "CallState",
    "Core",
    "ReceivedMessage",
    "ReceivedPart",
    "lib",
]

LIBRARY = "liblinphone.so.10"
VERSION = "5.1.65"
GRAMMARS = Path("/usr/share/belr/grammars/identity_grammar")

_c = ctypes.c_void_p
_s = ctypes.c_char_p
_i = ctypes.c_int
_sz = ctypes.c_size_t


def _probe() -> tuple[Any, str]:
    try:
        handle = ctypes.CDLL(LIBRARY)
    except OSError as exc:
        return None, f"liblinphone 5.1.65 is not installed ({exc}): apt-get install liblinphone10"
    if not GRAMMARS.is_file():
        # Creating a core without the belr grammars aborts the whole process.
        return None, "linphone-common is not installed (belr grammars missing): apt-get install linphone-common"
    handle.linphone_core_get_version.restype = ctypes.c_char_p
    version = handle.linphone_core_get_version().decode()
    if version != VERSION:
        # The tests pin this version's behaviour (its crashes, its wire forms).
        return None, f"these tests pin liblinphone {VERSION} (Debian bookworm), found {version}"
    return handle, ""


lib, LINPHONE_MISSING = _probe()
_bctbx: Any = None

# (name, restype, argtypes): every liblinphone function these tests call.
_FUNCTIONS: list[tuple[str, Any, list[Any]]] = [
    ("linphone_factory_get", _c, []),
    ("linphone_factory_set_data_dir", None, [_c, _s]),
    ("linphone_factory_set_config_dir", None, [_c, _s]),
    ("linphone_factory_set_download_dir", None, [_c, _s]),
    ("linphone_factory_create_core_3", _c, [_c, _s, _s, _c]),
    ("linphone_factory_create_core_cbs", _c, [_c]),
    ("linphone_logging_service_get", _c, []),
    ("linphone_logging_service_set_log_level", None, [_c, _i]),
    ("linphone_logging_service_set_log_file", None, [_c, _s, _s, _sz]),
    ("linphone_core_start", _i, [_c]),
    ("linphone_core_stop", None, [_c]),
    ("linphone_core_unref", None, [_c]),
    ("linphone_core_iterate", None, [_c]),
    ("linphone_core_add_callbacks", None, [_c, _c]),
    ("linphone_core_cbs_unref", None, [_c]),
    ("linphone_core_add_content_type_support", None, [_c, _s]),
    ("linphone_core_get_transports_used", _c, [_c]),
    ("linphone_transports_get_udp_port", _i, [_c]),
    ("linphone_transports_get_tcp_port", _i, [_c]),
    ("linphone_transports_unref", None, [_c]),
    ("linphone_core_set_use_files", None, [_c, _i]),
    ("linphone_core_set_root_ca", None, [_c, _s]),
    ("linphone_core_set_zrtp_secrets_file", None, [_c, _s]),
    ("linphone_core_set_media_encryption", _i, [_c, _i]),
    ("linphone_core_lime_x3dh_enabled", _i, [_c]),
    ("linphone_core_get_default_proxy_config", _c, [_c]),
    ("linphone_proxy_config_get_state", _i, [_c]),
    ("linphone_proxy_config_get_contact", _c, [_c]),
    ("linphone_address_as_string_uri_only", _c, [_c]),
    ("linphone_address_as_string", _c, [_c]),
    ("linphone_core_cbs_set_message_received", None, [_c, _c]),
    ("linphone_core_cbs_set_imee_user_registration", None, [_c, _c]),
    ("linphone_core_cbs_set_call_state_changed", None, [_c, _c]),
    ("linphone_chat_message_get_contents", _c, [_c]),
    ("linphone_chat_message_get_content_type", _s, [_c]),
    ("linphone_chat_message_get_from_address", _c, [_c]),
    ("linphone_content_get_type", _s, [_c]),
    ("linphone_content_get_subtype", _s, [_c]),
    ("linphone_content_get_parts", _c, [_c]),
    ("linphone_content_is_multipart", _i, [_c]),
    ("linphone_content_get_custom_header", _s, [_c, _s]),
    ("linphone_content_get_buffer", ctypes.POINTER(ctypes.c_uint8), [_c]),
    ("linphone_content_get_size", _sz, [_c]),
    ("linphone_core_invite", _c, [_c, _s]),
    ("linphone_core_get_current_call", _c, [_c]),
    ("linphone_core_terminate_all_calls", _i, [_c]),
    ("linphone_call_ref", _c, [_c]),
    ("linphone_call_unref", None, [_c]),
    ("linphone_call_accept", _i, [_c]),
    ("linphone_call_get_state", _i, [_c]),
    ("linphone_call_get_authentication_token", _s, [_c]),
    ("linphone_call_set_authentication_token_verified", None, [_c, _i]),
    ("linphone_call_get_authentication_token_verified", _i, [_c]),
    ("linphone_call_get_remote_params", _c, [_c]),
    ("linphone_call_get_current_params", _c, [_c]),
    ("linphone_call_get_remote_contact", _s, [_c]),
    ("linphone_call_params_get_custom_sdp_attribute", _s, [_c, _s]),
    ("linphone_call_params_get_media_encryption", _i, [_c]),
    # chat rooms: client side
    ("linphone_chat_message_get_utf8_text", _s, [_c]),
    ("linphone_core_cbs_set_chat_room_state_changed", None, [_c, _c]),
    ("linphone_core_create_default_chat_room_params", _c, [_c]),
    ("linphone_chat_room_params_set_backend", None, [_c, _i]),
    ("linphone_chat_room_params_enable_encryption", None, [_c, _i]),
    ("linphone_chat_room_params_set_encryption_backend", None, [_c, _i]),
    ("linphone_chat_room_params_enable_group", None, [_c, _i]),
    ("linphone_chat_room_params_set_subject", None, [_c, _s]),
    ("linphone_chat_room_params_unref", None, [_c]),
    ("linphone_core_create_chat_room_6", _c, [_c, _c, _c, _c]),
    ("linphone_chat_room_get_state", _i, [_c]),
    ("linphone_chat_room_get_peer_address", _c, [_c]),
    ("linphone_chat_room_get_security_level", _i, [_c]),
    ("linphone_chat_room_create_message_from_utf8", _c, [_c, _s]),
    ("linphone_chat_message_send", None, [_c]),
    ("linphone_chat_room_mark_as_read", None, [_c]),
    ("linphone_chat_message_get_state", _i, [_c]),
    ("linphone_chat_message_ref", _c, [_c]),
    ("linphone_chat_message_unref", None, [_c]),
    ("linphone_chat_room_ref", _c, [_c]),
    ("linphone_chat_room_unref", None, [_c]),
    ("linphone_address_new", _c, [_s]),
    ("linphone_address_unref", None, [_c]),
    # chat rooms: conference server side
    ("linphone_factory_create_chat_room_cbs", _c, [_c]),
    ("linphone_chat_room_cbs_set_conference_address_generation", None, [_c, _c]),
    ("linphone_chat_room_cbs_set_participant_registration_subscription_requested", None, [_c, _c]),
    ("linphone_chat_room_add_callbacks", None, [_c, _c]),
    ("linphone_chat_room_cbs_unref", None, [_c]),
    ("linphone_chat_room_get_conference_address", _c, [_c]),
    ("linphone_chat_room_set_conference_address", None, [_c, _c]),
    ("linphone_factory_create_participant_device_identity", _c, [_c, _c, _s]),
    ("linphone_participant_device_identity_set_capability_descriptor", None, [_c, _s]),
    ("linphone_participant_device_identity_unref", None, [_c]),
    ("linphone_chat_room_set_participant_devices", None, [_c, _c, _c]),
]

if lib is not None:
    for _name, _res, _args in _FUNCTIONS:
        _fn = getattr(lib, _name)
        _fn.restype = _res
        _fn.argtypes = _args
    _bctbx = ctypes.CDLL("libbctoolbox.so.1")
    _bctbx.bctbx_list_next.restype = _c
    _bctbx.bctbx_list_next.argtypes = [_c]
    _bctbx.bctbx_list_get_data.restype = _c
    _bctbx.bctbx_list_get_data.argtypes = [_c]
    _bctbx.bctbx_free.restype = None
    _bctbx.bctbx_free.argtypes = [_c]
    _bctbx.bctbx_list_append.restype = _c
    _bctbx.bctbx_list_append.argtypes = [_c, _c]
    _bctbx.bctbx_list_free.restype = _c
    _bctbx.bctbx_list_free.argtypes = [_c]

# C callback types (LinphoneCoreCbs): core, then the event's objects.
MESSAGE_RECEIVED = ctypes.CFUNCTYPE(None, _c, _c, _c)
IMEE_USER_REGISTRATION = ctypes.CFUNCTYPE(None, _c, ctypes.c_uint8, _s, _s)
CALL_STATE_CHANGED = ctypes.CFUNCTYPE(None, _c, _c, _i, _s)
CHAT_ROOM_STATE_CHANGED = ctypes.CFUNCTYPE(None, _c, _c, _i)
# LinphoneChatRoomCbs
CONFERENCE_ADDRESS_GENERATION = ctypes.CFUNCTYPE(None, _c)
PARTICIPANT_REGISTRATION_SUBSCRIPTION_REQUESTED = ctypes.CFUNCTYPE(None, _c, _c)

CHAT_ROOM_BACKEND_FLEXISIP = 1 << 1
CHAT_ROOM_ENCRYPTION_LIME = 1 << 0
CHAT_ROOM_INSTANTIATED = 1
CHAT_ROOM_CREATED = 3
CHAT_ROOM_CREATION_FAILED = 4

LOG_MESSAGE = 1 << 2
LOG_WARNING = 1 << 3
LOG_ERROR = 1 << 4
REGISTRATION_OK = 2
MEDIA_ENCRYPTION_ZRTP = 2


class CallState:
    """LinphoneCallState values the tests wait for."""

    INCOMING_RECEIVED = 1
    OUTGOING_INIT = 3
    CONNECTED = 7
    STREAMS_RUNNING = 8
    ERROR = 13
    END = 14
    RELEASED = 19


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _str(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _take_string(ptr: int | None) -> str | None:
    """A ``char *`` the caller owns: copy it, then free it with bctbx_free."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        _bctbx.bctbx_free(ptr)


def _walk(lst: int | None) -> list[int]:
    """The data pointers of a bctbx_list_t, bounded."""
    out: list[int] = []
    node = lst
    while node and len(out) < 10_000:
        out.append(_bctbx.bctbx_list_get_data(node))
        node = _bctbx.bctbx_list_next(node)
    return out


@dataclass
class ReceivedPart:
    """One content of a delivered chat message, as liblinphone exposes it."""

    content_type: str
    content_id: str | None
    description: str | None
    body: bytes = field(repr=False)


@dataclass
class ReceivedMessage:
    """A chat message liblinphone delivered, with its contents."""

    content_type: str | None
    sender: str | None
    contents: list[ReceivedPart]
    text: str | None = None
    room: str | None = None


def read_content(content: int) -> ReceivedPart:
    """Type, Content-Id, Content-Description and body of one LinphoneContent."""
    size = lib.linphone_content_get_size(content)
    buf = lib.linphone_content_get_buffer(content)
    body = ctypes.string_at(buf, size) if buf and size else b""
    return ReceivedPart(
        content_type=f"{_str(lib.linphone_content_get_type(content))}/"
        f"{_str(lib.linphone_content_get_subtype(content))}",
        content_id=_str(lib.linphone_content_get_custom_header(content, b"Content-Id")),
        description=_str(lib.linphone_content_get_custom_header(content, b"Content-Description")),
        body=body,
    )


_log_file: Path | None = None


def set_log_file(directory: Path, level: int = LOG_MESSAGE) -> Path:
    """Send liblinphone's log (process-wide) to ``directory/linphone.log``, once per process."""
    global _log_file
    if _log_file is None:
        service = lib.linphone_logging_service_get()
        lib.linphone_logging_service_set_log_level(service, level)
        lib.linphone_logging_service_set_log_file(service, str(directory).encode(), b"linphone.log", 0)
        _log_file = directory / "linphone.log"
    return _log_file


def rc_text(sections: dict[str, dict[str, object]]) -> str:
    """An rc (ini) file from sections."""
    out: list[str] = []
    for name, items in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k}={v}" for k, v in items.items())
        out.append("")
    return "\n".join(out)


class Core:
    """One LinphoneCore on 127.0.0.1 in its own directory, iterated by the caller's thread.

    Args:
        directory: where the rc file, the databases and the log file go.
        extra: rc sections merged over the loopback defaults.
        log_level: liblinphone's log level mask floor (logs go to ``linphone.log``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        extra: dict[str, dict[str, object]] | None = None,
        *,
        log_level: int = LOG_MESSAGE,
        root_ca: str | None = None,
        zrtp: bool = False,
    ) -> None:
        if lib is None:
            raise RuntimeError(LINPHONE_MISSING)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, object]] = {
            "sip": {
                "sip_port": -1,
                "sip_tcp_port": -1,
                "sip_tls_port": 0,
                "bind_address": "127.0.0.1",
                "use_ipv6": 0,
                "default_proxy": 0,
                "ping_with_options": 0,
            },
            "rtp": {
                "bind_address": "127.0.0.1",
                "audio_rtp_port": "40000-49999",
                "video_rtp_port": "50000-59999",
            },
            "video": {"capture": 0, "display": 0, "automatically_initiate": 0, "automatically_accept": 0},
            "net": {"firewall_policy": 0, "stun_server": ""},
            "misc": {"enable_basic_to_client_group_chat_room_migration": 0},
            "storage": {"uri": self.dir / "linphone.db"},
            "sound": {"echocancellation": 0},
        }
        for name, items in (extra or {}).items():
            sections.setdefault(name, {}).update(items)
        self.rc = self.dir / "linphonerc"
        self.rc.write_text(rc_text(sections))
        self.messages: list[ReceivedMessage] = []
        self.lime_users: list[tuple[bool, str | None, str | None]] = []
        self.call_states: list[tuple[int, str | None]] = []
        self.room_states: list[tuple[int, int]] = []
        self.created_rooms: list[int] = []  # owned by the core; valid while it lives
        self.on_room_state: Callable[[int, int], None] | None = None
        self._keep: list[Any] = []
        self.errors: list[str] = []

        factory = lib.linphone_factory_get()
        set_log_file(self.dir, log_level)
        for setter in (
            lib.linphone_factory_set_data_dir,
            lib.linphone_factory_set_config_dir,
            lib.linphone_factory_set_download_dir,
        ):
            setter(factory, (str(self.dir) + "/").encode())
        self.core = lib.linphone_factory_create_core_3(factory, str(self.rc).encode(), None, None)
        if not self.core:
            raise RuntimeError("linphone_factory_create_core_3 returned NULL")
        cbs = lib.linphone_factory_create_core_cbs(factory)
        on_message = MESSAGE_RECEIVED(self._on_message)
        on_lime = IMEE_USER_REGISTRATION(self._on_lime_user)
        on_call = CALL_STATE_CHANGED(self._on_call_state)
        on_room = CHAT_ROOM_STATE_CHANGED(self._on_room_state)
        self._keep += [on_message, on_lime, on_call, on_room]  # C holds these: keep them alive
        lib.linphone_core_cbs_set_message_received(cbs, ctypes.cast(on_message, _c))
        lib.linphone_core_cbs_set_imee_user_registration(cbs, ctypes.cast(on_lime, _c))
        lib.linphone_core_cbs_set_call_state_changed(cbs, ctypes.cast(on_call, _c))
        lib.linphone_core_cbs_set_chat_room_state_changed(cbs, ctypes.cast(on_room, _c))
        lib.linphone_core_add_callbacks(self.core, cbs)
        lib.linphone_core_cbs_unref(cbs)
        lib.linphone_core_set_use_files(self.core, 1)  # no sound card
        for kind in (b"application/lime", b"message/cpim", b"multipart/encrypted", b"message/sipfrag"):
            lib.linphone_core_add_content_type_support(self.core, kind)
        if root_ca is not None:
            lib.linphone_core_set_root_ca(self.core, root_ca.encode())
        if zrtp:
            lib.linphone_core_set_zrtp_secrets_file(self.core, str(self.dir / "zrtp-cache.sqlite3").encode())
            lib.linphone_core_set_media_encryption(self.core, MEDIA_ENCRYPTION_ZRTP)
        if lib.linphone_core_start(self.core) != 0:
            raise RuntimeError("linphone_core_start failed")
        self._closed = False

    # ------------------------------------------------------------------ callbacks (C thread = ours)

    def _on_message(self, core: int, room: int, msg: int) -> None:
        try:
            contents = [read_content(c) for c in _walk(lib.linphone_chat_message_get_contents(msg))]
            sender = _take_string(lib.linphone_address_as_string_uri_only(
                lib.linphone_chat_message_get_from_address(msg)))
            peer = lib.linphone_chat_room_get_peer_address(room) if room else None
            self.messages.append(ReceivedMessage(
                _str(lib.linphone_chat_message_get_content_type(msg)), sender, contents,
                _str(lib.linphone_chat_message_get_utf8_text(msg)),
                _take_string(lib.linphone_address_as_string_uri_only(peer)) if peer else None))
        except Exception as exc:  # noqa: BLE001 (never let an exception cross into C)
            self.messages.append(ReceivedMessage(f"<error {exc!r}>", None, []))

    def _on_lime_user(self, core: int, status: int, user_id: bytes | None, info: bytes | None) -> None:
        self.lime_users.append((bool(status), _str(user_id), _str(info)))

    def _on_room_state(self, core: int, room: int, state: int) -> None:
        self.room_states.append((room, state))
        if state == CHAT_ROOM_CREATED:
            self.created_rooms.append(room)
        if self.on_room_state is not None:
            try:
                self.on_room_state(room, state)
            except Exception as exc:  # noqa: BLE001 (never let an exception cross into C)
                self.errors.append(repr(exc))

    def _on_call_state(self, core: int, call: int, state: int, message: bytes | None) -> None:
        self.call_states.append((state, _str(message)))

    # ------------------------------------------------------------------ driving

    def iterate(self) -> None:
        """One round of liblinphone's main loop."""
        lib.linphone_core_iterate(self.core)

    def ports(self) -> tuple[int, int]:
        """The UDP and TCP SIP ports the core listens on (127.0.0.1)."""
        tr = lib.linphone_core_get_transports_used(self.core)
        try:
            return lib.linphone_transports_get_udp_port(tr), lib.linphone_transports_get_tcp_port(tr)
        finally:
            lib.linphone_transports_unref(tr)

    def registration_state(self) -> int:
        """The default account's LinphoneRegistrationState (0 = none)."""
        cfg = lib.linphone_core_get_default_proxy_config(self.core)
        return lib.linphone_proxy_config_get_state(cfg) if cfg else 0

    def contact(self) -> str | None:
        """The default account's contact address, URI only (the GRUU once registered)."""
        cfg = lib.linphone_core_get_default_proxy_config(self.core)
        if not cfg:
            return None
        addr = lib.linphone_proxy_config_get_contact(cfg)
        return _take_string(lib.linphone_address_as_string_uri_only(addr)) if addr else None

    def lime_enabled(self) -> bool:
        """Whether the lime engine exists in this core."""
        return bool(lib.linphone_core_lime_x3dh_enabled(self.core))

    def close(self) -> None:
        """Stop and free the core (idempotent)."""
        if self._closed:
            return
        self._closed = True
        lib.linphone_core_stop(self.core)
        lib.linphone_core_unref(self.core)


def run_until(
    cores: list[Core],
    done: Callable[[], bool],
    timeout: float,
    *,
    step: float = 0.01,
    what: str = "condition",
) -> None:
    """Iterate ``cores`` until ``done()`` or ``timeout`` seconds; raise TimeoutError then."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 10):
        for core in cores:
            core.iterate()
        if done():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(step)
    raise TimeoutError(f"liblinphone: {what} not reached within {timeout} s")


def run_for(cores: list[Core], seconds: float, step: float = 0.01) -> None:
    """Iterate ``cores`` for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for core in cores:
            core.iterate()
        time.sleep(step)


def address(uri: str) -> int:
    """A new LinphoneAddress (the caller unrefs it)."""
    addr = lib.linphone_address_new(uri.encode())
    if not addr:
        raise ValueError(f"liblinphone cannot parse {uri!r}")
    return int(addr)


def address_string(addr: int | None) -> str | None:
    """A LinphoneAddress as a URI-only string."""
    return _take_string(lib.linphone_address_as_string_uri_only(addr)) if addr else None


def c_list(items: list[int]) -> int | None:
    """A bctbx_list_t of pointers (free it with bctbx_list_free; the items are not owned)."""
    lst = None
    for item in items:
        lst = _bctbx.bctbx_list_append(lst, item)
    return lst


def free_list(lst: int | None) -> None:
    """Free a bctbx_list_t (not its items)."""
    if lst:
        _bctbx.bctbx_list_free(lst)
