"""AsyncManager: Manager's API as coroutines, over an asyncio transport.

The same sans-IO core as :class:`~pylime.manager.Manager`: lime's C calls run in a worker
thread (they touch SQLite), the key-server requests lime hands over are awaited on the
event loop through the transport's ``async def post``, and the answers go back to lime.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal, Self, TypeVar

from pylime import errors
from pylime._callbacks import ORPHANS
from pylime.bindings import in_memory_fs
from pylime.database import Durability
from pylime.manager import Manager, StrPath, _Call, classify_answer
from pylime.results import DecryptResult, EncryptResult
from pylime.transport import AsyncTransport
from pylime.types import Curve, PeerStatus, Policy

__all__ = ["AsyncManager", "Offload"]

T = TypeVar("T")

#: Where AsyncManager runs lime's C calls: "thread", "inline" or "auto" (see AsyncManager).
Offload = Literal["thread", "inline", "auto"]


class _SyncUnused:
    """The inner Manager's transport: AsyncManager drives every request itself."""

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        raise RuntimeError("AsyncManager sends key-server requests through its async transport")


class _Worker:
    """An AsyncManager's own thread: runs its C calls one after another, in order.

    Each result goes back to the calling loop with one ``call_soon_threadsafe``: no
    concurrent.futures Future or executor bookkeeping, so a trip costs the two thread
    wake-ups and little Python (about half of ``run_in_executor``'s).
    """

    __slots__ = ("__weakref__", "_jobs", "_thread")

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # A daemon thread never holds up the interpreter's exit; _stop_workers lets the
        # call in progress end first, before the managers' finalizers run.
        self._thread = threading.Thread(target=_serve, args=(self._jobs,),
                                        name="pylime-async", daemon=True)
        self._thread.start()
        global _EXIT_HOOKED
        if not _EXIT_HOOKED:  # registered after the Manager's finalizer hook: runs first
            atexit.register(_stop_workers)
            _EXIT_HOOKED = True
        _WORKERS.add(self)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the future completes on the running loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def stop(self, wait: bool = False) -> None:
        """End the thread once the queued calls are done; ``wait`` joins it."""
        self._jobs.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()


_WORKERS: weakref.WeakSet[_Worker] = weakref.WeakSet()
_EXIT_HOOKED = False  # _stop_workers is registered with atexit once, by the first worker


def _stop_workers() -> None:
    for worker in list(_WORKERS):
        worker.stop(wait=True)


def _serve(jobs: queue.SimpleQueue[Any]) -> None:
    """A worker thread's loop: run each job, hand its outcome to the job's event loop."""
    while (job := jobs.get()) is not None:
        loop, future, fn, args = job
        del job
        try:
            outcome, failed = fn(*args), False
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome, failed = exc, True
        try:
            loop.call_soon_threadsafe(_settle, future, outcome, failed)
        except RuntimeError:  # the loop is closed: nobody awaits this any more
            pass
        del loop, future, fn, args, outcome


def _settle(future: asyncio.Future[Any], outcome: Any, failed: bool) -> None:
    if future.cancelled():
        return
    if failed:
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class _Serial:
    """One call at a time, in the order they were made: an asyncio.Lock that also says
    whether any call holds it or waits for it (a free one may run without awaiting it)."""

    __slots__ = ("_lock", "users")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.users = 0  # calls holding or waiting for the lock

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self.users -= 1
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self.users -= 1


class AsyncManager:
    """A lime manager whose methods are coroutines; the transport is awaited.

    Args:
        path: the SQLite database file, created owner-only if missing.
        transport: an object with ``async def post(url, sender, body) -> (status, body)``,
            such as :class:`pylime.transport.https.AsyncHttpsTransport`.
        durability: how the database is committed, as for :class:`~pylime.manager.Manager`
            (``"full"``, ``"wal"`` the default, or ``"fast"``).
        offload: where lime's C calls run. lime never waits for the network (key-server
            requests come back to the event loop), so a C call only computes and commits
            SQLite: about a millisecond, more with an fsync per commit on a disk.
            ``"thread"``: in this manager's worker thread, so the event loop never waits
            for a commit; each trip costs a thread hand-over and a loop iteration.
            ``"inline"``: on the event loop itself, the cheapest. ``"auto"`` (default):
            inline where no commit waits for a disk (``durability="fast"``, or a database
            on a file system kept in memory: tmpfs, ramfs), a thread otherwise.

    Calls on one AsyncManager run one at a time, in the order they were made. With a
    thread, a call takes one trip to it when lime needs no key server (a message to a
    device with a session); each key-server round trip adds one. Cancelling a call answers
    every request lime still waits for as failed, so nothing leaks.
    """

    def __init__(self, path: StrPath, transport: AsyncTransport,
                 durability: Durability = "wal", offload: Offload = "auto") -> None:
        if not asyncio.iscoroutinefunction(getattr(transport, "post", None)):
            raise TypeError("transport must have an async post(url, sender, body) method")
        if offload not in ("thread", "inline", "auto"):
            raise ValueError(f"offload must be 'thread', 'inline' or 'auto', not {offload!r}")
        self._transport = transport
        self._manager = Manager(path, transport=_SyncUnused(), durability=durability)
        self._serial = _Serial()
        inline = offload == "inline" or (offload == "auto" and (
            durability == "fast" or in_memory_fs(os.fsencode(self._manager.path))))
        # One thread of its own: lime's state stays on one thread (and its CPU's caches).
        self._executor = None if inline else _Worker()
        if self._executor is not None:  # a manager dropped without close() ends its thread
            weakref.finalize(self, self._executor.stop)

    # -- plumbing ----------------------------------------------------------------------

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._manager._lock:
            return fn(*args)

    @property
    def offload(self) -> Literal["thread", "inline"]:
        """Where this manager runs lime's C calls (``"auto"`` resolved)."""
        return "inline" if self._executor is None else "thread"

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` with the Manager's lock held, in the worker thread if there is one."""
        if self._executor is None:
            return self._locked(fn, *args)
        return await self._executor.run(self._locked, fn, *args)

    def _begin(self, begin: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, bool, Any]:
        """Start an operation; conclude it in the same trip if lime needs no key server.

        Returns (call, concluded, result). Run in the worker thread with the lock held.
        """
        m = self._manager
        call = begin(*args)
        if m._state.queue or ORPHANS:
            return call, False, None
        return call, True, m._conclude(call, [])

    async def _operation(self, begin: Callable[..., Any], *args: Any) -> Any:
        """Start an operation in C, await its key-server round trips, return its result."""
        async with self._serial:
            call, concluded, result = await self._thread(self._begin, begin, args)
            if concluded:
                return result
            return await self._drive(call)

    async def _drive(self, call: _Call) -> Any:
        """Await the key-server round trips of a started call (serial lock held)."""
        m = self._manager
        queue = m._state.queue
        problems: list[errors.KeyServerError] = []
        try:
            while queue:
                request = queue[0]
                try:
                    answer: object = await self._transport.post(request.url, request.sender,
                                                                 request.body)
                except Exception as exc:  # noqa: BLE001 - typed by classify_answer
                    answer = exc
                queue.popleft()
                code, body = classify_answer(request, answer, problems)
                await self._thread(request.answer, code, body)
        except BaseException:
            # Cancelled (or interrupted) mid-flight: lime must still get an answer for
            # every request; done here, synchronously, since awaiting is over.
            self._locked(m._state.answer_leftovers)
            try:
                self._locked(m._conclude, call, problems)
            except errors.LimeError:
                pass
            raise
        return await self._thread(m._conclude, call, problems)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._serial:
            if self._executor is None:
                return fn(*args)
            return await self._executor.run(fn, *args)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._manager.closed

    @property
    def durability(self) -> Durability:
        """The storage mode this manager applied: "full", "wal" or "fast"."""
        return self._manager.durability

    async def close(self) -> None:
        """Free the C manager (idempotent)."""
        async with self._serial:
            self._manager.close()
            if self._executor is not None:
                self._executor.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<pylime.AsyncManager {state} {self._manager.path!r}>"

    # -- operations that may need the key server ---------------------------------------

    async def create_user(self, device_id: str, server_url: str, curve: Curve,
                          opk_batch: int = 100) -> None:
        """See :meth:`Manager.create_user`."""
        await self._operation(self._manager._begin_create_user, device_id, server_url, curve,
                              opk_batch)

    async def delete_user(self, device_id: str) -> None:
        """See :meth:`Manager.delete_user`."""
        await self._operation(self._manager._begin_delete_user, device_id)

    async def update(self, opk_low_limit: int = 100, opk_batch: int = 25) -> None:
        """See :meth:`Manager.update`."""
        await self._operation(self._manager._begin_update, opk_low_limit, opk_batch)

    async def encrypt(self, device_id: str, recipient_user_id: str, recipients: Sequence[str],
                      plaintext: bytes,
                      policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE) -> EncryptResult:
        """See :meth:`Manager.encrypt`."""
        m = self._manager
        if self._executor is None and not self._serial.users:
            # Inline and no call in flight: start it now, with no trip through the loop.
            with m._lock:
                outcome = m._encrypt(device_id, recipient_user_id, recipients, plaintext,
                                     policy)
            if type(outcome) is not _Call:
                return outcome  # type: ignore[return-value]  # not a _Call
            async with self._serial:  # free: entered without waiting
                return await self._drive(outcome)  # type: ignore[no-any-return]
        async with self._serial:
            outcome = await self._thread(m._encrypt, device_id, recipient_user_id, recipients,
                                         plaintext, policy)
            if type(outcome) is _Call:  # sessions to open first: ask the key server
                outcome = await self._drive(outcome)
        return outcome  # type: ignore[return-value]  # driven to its result

    # -- local operations ----------------------------------------------------------------

    async def decrypt(self, device_id: str, recipient_user_id: str, sender_device_id: str,
                      dr_message: bytes, cipher_message: bytes = b"") -> DecryptResult:
        """See :meth:`Manager.decrypt`."""
        if self._executor is None and not self._serial.users:  # inline, no call in flight
            return self._manager.decrypt(device_id, recipient_user_id, sender_device_id,
                                         dr_message, cipher_message)
        return await self._call(self._manager.decrypt, device_id, recipient_user_id,
                                sender_device_id, dr_message, cipher_message)

    async def is_user(self, device_id: str) -> bool:
        """See :meth:`Manager.is_user`."""
        return await self._call(self._manager.is_user, device_id)

    async def identity_key(self, device_id: str) -> bytes:
        """See :meth:`Manager.identity_key`."""
        return await self._call(self._manager.identity_key, device_id)

    async def server_url(self, device_id: str) -> str:
        """See :meth:`Manager.server_url`."""
        return await self._call(self._manager.server_url, device_id)

    async def set_server_url(self, device_id: str, url: str) -> None:
        """See :meth:`Manager.set_server_url`."""
        await self._call(self._manager.set_server_url, device_id, url)

    async def set_peer_status(self, peer_device_id: str, status: PeerStatus,
                              identity_key: bytes | None = None) -> None:
        """See :meth:`Manager.set_peer_status`."""
        await self._call(functools.partial(self._manager.set_peer_status, peer_device_id,
                                           status, identity_key))

    async def peer_status(self, peer_device_id: str) -> PeerStatus:
        """See :meth:`Manager.peer_status`."""
        return await self._call(self._manager.peer_status, peer_device_id)

    async def delete_peer(self, peer_device_id: str) -> None:
        """See :meth:`Manager.delete_peer`."""
        await self._call(self._manager.delete_peer, peer_device_id)

    async def stale_sessions(self, device_id: str, peer_device_id: str) -> None:
        """See :meth:`Manager.stale_sessions`."""
        await self._call(self._manager.stale_sessions, device_id, peer_device_id)
