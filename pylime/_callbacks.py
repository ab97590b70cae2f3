"""The two ``extern "Python"`` trampolines lime calls, and the objects they fill in.

A trampoline never does I/O and never lets an exception cross into C: ``_pylime_post``
copies the request into the manager's queue, ``_pylime_status`` records an operation's
result. :mod:`pylime.manager` then sends each queued request through the transport and
feeds the answer back (the sans-IO split). Python objects reach C as ``ffi.new_handle``
handles; whoever creates a handle keeps a reference to it until lime can no longer call
back with it, because a handle that is garbage collected is a dangling pointer in C.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from pylime._lime import ffi, lib

log = logging.getLogger("pylime")

_SUCCESS = lib.lime_ffi_CallbackReturn_success

#: lime_data of requests that could not be queued (out of memory, say); answered as failed.
ORPHANS: list[Any] = []


class Request:
    """One key-server request lime handed over; it must be answered exactly once."""

    __slots__ = ("_lime_data", "url", "sender", "body")

    def __init__(self, lime_data: Any, url: str, sender: str, body: bytes) -> None:
        self._lime_data = lime_data
        self.url = url
        self.sender = sender
        self.body = body

    @property
    def answered(self) -> bool:
        return self._lime_data is None

    def answer(self, code: int, body: bytes) -> None:
        """Give lime the key server's answer; a second answer raises instead of crashing."""
        lime_data = self._lime_data
        if lime_data is None:
            raise RuntimeError("this key-server request was already answered")
        self._lime_data = None  # before the call: lime frees lime_data inside it
        lib.lime_ffi_processX3DHServerResponse(lime_data, code, body, len(body))

    def __repr__(self) -> str:
        state = "answered" if self.answered else "pending"
        return f"<Request {state} {len(self.body)} bytes for {self.sender!r} to {self.url!r}>"


class RequestQueue(collections.deque):  # type: ignore[type-arg]
    """Requests lime posted and the manager has not answered yet (one per manager)."""


class Operation:
    """An asynchronous lime call (create_user, delete_user, encrypt, update) in flight.

    ``keepalive`` holds every C buffer lime writes into when it calls back, which can be
    after the C call returned.
    """

    __slots__ = ("done", "ok", "message", "keepalive", "handle", "__weakref__")

    def __init__(self) -> None:
        self.done = False
        self.ok = False
        self.message = ""
        self.keepalive: Any = None
        self.handle: Any = ffi.new_handle(self)

    def complete(self, ok: bool, message: str) -> None:
        # lime calls back twice only when the cipher buffer is too small (a fail, then the
        # real status); our buffers are sized from lime's maximum, so the first one counts.
        if not self.done:
            self.done = True
            self.ok = ok
            self.message = message


@ffi.def_extern()
def _pylime_post(userdata: Any, lime_data: Any, url: Any, sender: Any, message: Any,
                 size: int) -> None:
    """lime wants a key-server request sent: copy it (the pointers die on return) and queue it."""
    try:
        queue = ffi.from_handle(userdata)
        queue.append(Request(lime_data, ffi.string(url).decode("utf-8", "replace"),
                             ffi.string(sender).decode("utf-8", "replace"),
                             ffi.unpack(ffi.cast("char *", message), size)))
    except BaseException:  # noqa: BLE001 - nothing may cross into C
        # Answering here could re-enter lime while it holds its mutex: park the request
        # instead; the manager answers orphans as failed after the operation.
        log.exception("pylime: could not queue a key-server request")
        ORPHANS.append(lime_data)


@ffi.def_extern()
def _pylime_status(userdata: Any, status: int, message: Any) -> None:
    """An operation finished: record its status for the driver."""
    try:
        text = ffi.string(message).decode("utf-8", "replace") if message != ffi.NULL else ""
        ffi.from_handle(userdata).complete(status == _SUCCESS, text)
    except BaseException:  # noqa: BLE001 - nothing may cross into C
        log.exception("pylime: could not record an operation status")
