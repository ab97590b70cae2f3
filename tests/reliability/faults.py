"""A key-server transport that fails on demand, and how to look at a database around a fault."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from typing import Any

from pylime.keyserver import KeyServer

#: How long a slow or silent transport waits before it gives up (its own timeout).
BOUND = 0.05
#: X3DH message types (lime-wire.md §4.2) a fault can be aimed at.
REGISTER, DELETE, POST_SPK, POST_OPKS, GET_BUNDLE, GET_SELF_OPKS = 9, 2, 3, 4, 5, 7


class FaultyTransport:
    """Forwards to a KeyServer; ``fail(mode, types)`` makes requests of those types fail.

    Modes, before the server sees the request: ``timeout`` (sleeps past its own timeout,
    then raises TimeoutError), ``never`` (the server never answers: waits for an answer
    that does not come, then raises TimeoutError), ``reset-before`` (ConnectionResetError).
    After the server processed it: ``reset-after`` (the connection drops mid-answer),
    ``truncated`` (half the answer), ``oversized`` (the answer plus 1 MiB of junk),
    ``http500-after`` (the server did the work but the proxy answers 500).
    """

    def __init__(self, server: KeyServer) -> None:
        self.server = server
        self.mode: str | None = None
        self.types: frozenset[int] = frozenset()
        self.injected = 0
        self.longest = 0.0
        self._never = threading.Event()

    def fail(self, mode: str | None, *types: int) -> None:
        self.mode = mode
        self.types = frozenset(types) if types else frozenset(range(256))

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        started = time.monotonic()
        try:
            return self._post(url, sender, body)
        finally:
            self.longest = max(self.longest, time.monotonic() - started)

    def _post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        mode = self.mode if len(body) > 1 and body[1] in self.types else None
        if mode is None:
            return self.server.post(url, sender, body)
        self.injected += 1
        if mode == "timeout":
            time.sleep(BOUND)
            raise TimeoutError("the key server did not answer in time")
        if mode == "never" and not self._never.wait(BOUND):
            raise TimeoutError("the key server never answered")
        if mode == "reset-before":
            raise ConnectionResetError("connection reset by peer")
        code, answer = self.server.post(url, sender, body)
        if mode == "reset-after":
            raise ConnectionResetError("connection reset by peer while reading the answer")
        if mode == "truncated":
            return code, answer[: len(answer) // 2]
        if mode == "oversized":
            return code, answer + b"\xa5" * (1 << 20)
        if mode == "http500-after":
            return 500, b"<html>502 Bad Gateway</html>"
        raise AssertionError(f"unknown fault mode {mode}")


def db_rows(path: Any) -> list[str]:
    """Every row of every table, as SQL, without the AUTOINCREMENT counters.

    A failed operation may burn an id (sqlite_sequence moves on) and lime creates its
    schema lazily: neither is data, so neither counts as a change.
    """
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [line for line in db.iterdump()
                if line.startswith("INSERT INTO") and "sqlite_sequence" not in line]


def no_pending(manager: Any) -> bool:
    """Nothing left for lime to wait on (the binding); the reference has no queue at all."""
    state = getattr(manager, "_state", None)
    if state is None:
        return True
    from pylime._callbacks import ORPHANS

    return not state.queue and not state.pending and not ORPHANS
