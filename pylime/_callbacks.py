"""What lime calls back: the key-server trampoline and the operations' status records.

``_pylime_post``, an ``extern "Python"`` trampoline, never does I/O and never lets an
exception cross into C: it copies the request into the manager's queue, and
:mod:`pylime.manager` then sends each queued request through the transport and feeds the
answer back (the sans-IO split). An operation's status needs no Python at all: lime reports
it to the C status sink of build_ffi.py, which fills the operation's ``pylime_status_t``.
Python objects reach C as ``ffi.new_handle`` handles or ``ffi.new`` records; whoever creates
one keeps a reference to it until lime can no longer call back with it, because a handle or
record that is garbage collected is a dangling pointer in C.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from pylime._lime import ffi, lib

log = logging.getLogger("pylime")
lime_log = logging.getLogger("pylime.lime")

# bctoolbox's levels (a bit mask) -> Python's.
_BCTBX_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 4: logging.INFO, 8: logging.WARNING,
                 16: logging.ERROR, 32: logging.CRITICAL}

#: lime_data of requests that could not be queued (out of memory, say); answered as failed.
ORPHANS: list[Any] = []


class Request:
    """One key-server request lime handed over; it must be answered exactly once."""

    __slots__ = ("_lime_data", "body", "sender", "url")

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

    ``handle`` is what lime gets as the status callback's user data: this operation's C
    status record, which the C sink fills, possibly after the C call returned. ``keepalive``
    holds every C buffer lime writes into until then.
    """

    __slots__ = ("__weakref__", "handle", "keepalive")

    def __init__(self) -> None:
        self.keepalive: Any = None
        self.handle: Any = ffi.new("pylime_status_t *")

    @property
    def done(self) -> bool:
        """True once lime reported the operation's end."""
        return bool(self.handle.done)

    @property
    def ok(self) -> bool:
        """True if lime reported success."""
        return bool(self.handle.ok)

    @property
    def message(self) -> str:
        """lime's explanation of a failure (empty on success)."""
        return ffi.string(self.handle.message).decode("utf-8", "replace")


#: lime's status callback for every operation: the C sink (build_ffi.py).
STATUS_SINK = ffi.addressof(lib, "pylime_status_sink")


@ffi.def_extern()
def _pylime_post(userdata: Any, lime_data: Any, url: Any, sender: Any, message: Any,
                 size: int) -> None:
    """lime wants a key-server request sent: copy it (the pointers die on return) and queue it."""
    try:
        queue = ffi.from_handle(userdata)
        queue.append(Request(lime_data, ffi.string(url).decode("utf-8", "replace"),
                             ffi.string(sender).decode("utf-8", "replace"),
                             ffi.unpack(ffi.cast("char *", message), size)))
    except BaseException:
        # Answering here could re-enter lime while it holds its mutex: park the request
        # instead; the manager answers orphans as failed after the operation.
        log.exception("pylime: could not queue a key-server request")
        ORPHANS.append(lime_data)


@ffi.def_extern()
def _pylime_log(domain: Any, level: int, message: Any) -> None:
    """A log record from lime (through the C shim): forward it to logger ``pylime.lime``.

    lime appends a C++ backtrace to some records: the first line is logged at lime's level,
    the backtrace at DEBUG. lime logs device ids and public keys, never private keys or
    plaintexts.
    """
    try:
        text = ffi.string(message).decode("utf-8", "replace")
        first, _, rest = text.partition("\n")
        python_level = _BCTBX_LEVELS.get(level, logging.WARNING)
        source = ffi.string(domain).decode("ascii", "replace") or "bctbx"
        lime_log.log(python_level, "%s: %s", source, first.strip())
        if rest.strip() and lime_log.isEnabledFor(logging.DEBUG):
            lime_log.debug("%s: %s", source, rest.rstrip())
    except BaseException:  # noqa: BLE001, S110 - nothing may cross into C; re-logging could recurse
        pass


def route_lime_logs(level: int = logging.WARNING) -> None:
    """Send lime's log records at ``level`` and above to the ``pylime.lime`` logger.

    lime prints to stdout by default; pylime routes its records into Python's logging as
    soon as the binding is imported. Records below ``level`` are dropped in C.
    """
    mask = 0
    for bit, python_level in _BCTBX_LEVELS.items():
        if python_level >= level:
            mask |= bit
    lib.pylime_route_logs(mask)


route_lime_logs()
