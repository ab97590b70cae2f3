"""Debian's belle-sip 5.1.64 multipart splitter through ctypes: the parser a 5.1.65 receiver runs.

Used as an oracle: what it splits out of our bodies is what liblinphone 5.1.65 sees. The
channel's boundary rule (the text after the literal ``;boundary=``, linphone-5.1.65.md §2.4
quirk 3) is restated here because it lives in belle-sip's SIP channel, not in a callable API.
Needs the ``libbellesip1`` package; :data:`MISSING` says why not when it is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

MISSING = ""
try:
    _lib = ctypes.CDLL(ctypes.util.find_library("bellesip") or "libbellesip.so.1")
except OSError as exc:  # pragma: no cover - depends on the machine
    MISSING = f"belle-sip is not installed (apt-get install libbellesip1): {exc}"
    _lib = None


class _List(ctypes.Structure):
    """bctoolbox's list node (next, prev, data)."""


_List._fields_ = [("next", ctypes.POINTER(_List)), ("prev", ctypes.POINTER(_List)),
                  ("data", ctypes.c_void_p)]

if _lib is not None:
    _lib.belle_sip_multipart_body_handler_new_from_buffer.restype = ctypes.c_void_p
    _lib.belle_sip_multipart_body_handler_new_from_buffer.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    _lib.belle_sip_multipart_body_handler_get_parts.restype = ctypes.POINTER(_List)
    _lib.belle_sip_multipart_body_handler_get_parts.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_body_handler_get_headers.restype = ctypes.POINTER(_List)
    _lib.belle_sip_body_handler_get_headers.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_body_handler_get_size.restype = ctypes.c_size_t
    _lib.belle_sip_body_handler_get_size.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_memory_body_handler_get_buffer.restype = ctypes.c_void_p
    _lib.belle_sip_memory_body_handler_get_buffer.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_header_get_name.restype = ctypes.c_char_p
    _lib.belle_sip_header_get_name.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_header_extension_get_value.restype = ctypes.c_char_p
    _lib.belle_sip_header_extension_get_value.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_object_to_string.restype = ctypes.c_char_p
    _lib.belle_sip_object_to_string.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_header_content_type_parse.restype = ctypes.c_void_p
    _lib.belle_sip_header_content_type_parse.argtypes = [ctypes.c_char_p]
    _lib.belle_sip_header_content_type_get_type.restype = ctypes.c_char_p
    _lib.belle_sip_header_content_type_get_type.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_header_content_type_get_subtype.restype = ctypes.c_char_p
    _lib.belle_sip_header_content_type_get_subtype.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_parameters_get_parameter.restype = ctypes.c_char_p
    _lib.belle_sip_parameters_get_parameter.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    _lib.belle_sip_object_unref.argtypes = [ctypes.c_void_p]
    _lib.belle_sip_memory_body_handler_new_copy_from_buffer.restype = ctypes.c_void_p
    _lib.belle_sip_memory_body_handler_new_copy_from_buffer.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
    _lib.belle_sip_memory_body_handler_apply_encoding.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    _lib.belle_sip_memory_body_handler_unapply_encoding.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    _lib.belle_sip_object_pool_push.restype = ctypes.c_void_p
    # Objects belle-sip creates for itself are released with this pool, not leaked with a warning.
    _POOL = _lib.belle_sip_object_pool_push()


@dataclass(frozen=True)
class ParsedContentType:
    """What belle-sip's Content-Type parser stored."""

    type: str
    subtype: str
    protocol: str | None
    boundary: str | None


def parse_content_type(value: str) -> ParsedContentType | None:
    """belle_sip_header_content_type_parse; None where belle-sip rejects it (a 500 on the wire)."""
    assert _lib is not None, MISSING
    header = _lib.belle_sip_header_content_type_parse(f"Content-Type: {value}".encode())
    if not header:
        return None
    try:
        def param(name: str) -> str | None:
            raw = _lib.belle_sip_parameters_get_parameter(header, name.encode())
            return raw.decode() if raw is not None else None

        return ParsedContentType(
            _lib.belle_sip_header_content_type_get_type(header).decode(),
            _lib.belle_sip_header_content_type_get_subtype(header).decode(),
            param("protocol"), param("boundary"))
    finally:
        _lib.belle_sip_object_unref(header)


def channel_boundary(content_type_value: str) -> str | None:
    """The boundary as 5.1.64's SIP channel takes it: everything after ``;boundary=``."""
    index = content_type_value.find(";boundary=")
    return None if index < 0 else content_type_value[index + len(";boundary="):]


@dataclass(frozen=True)
class BelleSipPart:
    """One part as belle-sip split it: header names and values, exactly as looked up, and the body."""

    headers: dict[str, str]
    body: bytes


def split(body: bytes, boundary: str) -> list[BelleSipPart]:
    """belle_sip_multipart_body_handler_new_from_buffer + get_parts."""
    assert _lib is not None, MISSING
    buffer = ctypes.create_string_buffer(body, len(body))
    handler = _lib.belle_sip_multipart_body_handler_new_from_buffer(buffer, len(body), boundary.encode())
    parts: list[BelleSipPart] = []
    try:
        node = _lib.belle_sip_multipart_body_handler_get_parts(handler)
        while node:
            part = node.contents.data
            headers: dict[str, str] = {}
            hnode = _lib.belle_sip_body_handler_get_headers(part)
            while hnode:
                header = hnode.contents.data
                name = _lib.belle_sip_header_get_name(header).decode()
                text = _lib.belle_sip_object_to_string(header).decode()
                headers[name] = text.split(":", 1)[1].strip()
                hnode = hnode.contents.next
            size = _lib.belle_sip_body_handler_get_size(part)
            data = _lib.belle_sip_memory_body_handler_get_buffer(part)
            parts.append(BelleSipPart(headers, ctypes.string_at(data, size) if data else b""))
            node = node.contents.next
    finally:
        _lib.belle_sip_object_unref(handler)
    return parts


def _encode(data: bytes, apply: bool) -> bytes | None:
    assert _lib is not None, MISSING
    source = ctypes.create_string_buffer(data, len(data))
    handler = _lib.belle_sip_memory_body_handler_new_copy_from_buffer(source, len(data), None, None)
    try:
        step = (_lib.belle_sip_memory_body_handler_apply_encoding if apply
                else _lib.belle_sip_memory_body_handler_unapply_encoding)
        if step(handler, b"deflate") != 0:
            return None
        size = _lib.belle_sip_body_handler_get_size(handler)
        return ctypes.string_at(_lib.belle_sip_memory_body_handler_get_buffer(handler), size)
    finally:
        _lib.belle_sip_object_unref(handler)


def deflate(data: bytes) -> bytes | None:
    """What belle-sip sends for a body with Content-Encoding: deflate; None if it sends it plain."""
    return _encode(data, True)


def inflate(data: bytes) -> bytes | None:
    """What belle-sip makes of a received deflate body; None if it cannot inflate it."""
    return _encode(data, False)
