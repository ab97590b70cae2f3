"""AsyncManager: the same operations as coroutines over an asyncio transport."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest

from pylime import AsyncManager, PeerStatus, TransportError
from tests.conftest import SERVER_URL, requires_lime

pytestmark = requires_lime

ALICE = "sip:alice@example.org;gr=urn:uuid:a1"
BOB = "sip:bob@example.org;gr=urn:uuid:b1"


class AsyncKeyServer:
    """An asyncio transport in front of an in-process KeyServer, with a switch to fail."""

    def __init__(self, server):
        self.server = server
        self.down = False
        self.hold: asyncio.Event | None = None
        self.calls = 0

    async def post(self, url, sender, body):
        self.calls += 1
        await asyncio.sleep(0)
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise ConnectionResetError("reset by peer")
        return self.server.post(url, sender, body)


@pytest.mark.parametrize("offload", ["thread", "inline"])
def test_a_conversation_between_two_async_managers(tmp_path, server, curve, offload):
    """Create users, exchange messages both ways and see statuses, all awaited."""
    async def scenario():
        transport = AsyncKeyServer(server)
        async with AsyncManager(tmp_path / "a.sqlite3", transport, offload=offload) as alice, \
                AsyncManager(tmp_path / "b.sqlite3", transport, offload=offload) as bob:
            assert alice.offload == offload
            await alice.create_user(ALICE, SERVER_URL, curve)
            await bob.create_user(BOB, SERVER_URL, curve)
            out = await alice.encrypt(ALICE, "sip:bob@example.org", [BOB], b"hello async")
            assert out.recipients[0].status is PeerStatus.UNKNOWN
            result = await bob.decrypt(BOB, "sip:bob@example.org", ALICE,
                                       out.recipients[0].dr_message, out.cipher_message)
            assert result == (PeerStatus.UNKNOWN, b"hello async")
            reply = await bob.encrypt(BOB, "sip:alice@example.org", [ALICE], b"hi back")
            assert (await alice.decrypt(ALICE, "sip:alice@example.org", BOB,
                                        reply.recipients[0].dr_message)).plaintext == b"hi back"
            assert await bob.peer_status(ALICE) is PeerStatus.UNTRUSTED
            assert len(await alice.identity_key(ALICE)) in (32, 57)
            await bob.update()
            assert server.opk_count(BOB) == 99 + 25
            await alice.delete_user(ALICE)
            assert not await alice.is_user(ALICE)
        assert alice.closed and bob.closed

    asyncio.run(scenario())


def test_an_unreachable_server_raises_then_the_manager_recovers(tmp_path, server, curve):
    """A failing async transport gives TransportError; once it is back, the call succeeds."""
    async def scenario():
        transport = AsyncKeyServer(server)
        async with AsyncManager(tmp_path / "a.sqlite3", transport) as alice:
            transport.down = True
            with pytest.raises(TransportError) as caught:
                await alice.create_user(ALICE, SERVER_URL, curve)
            assert isinstance(caught.value.__cause__, ConnectionResetError)
            transport.down = False
            await alice.create_user(ALICE, SERVER_URL, curve)
            assert server.opk_count(ALICE) == 100

    asyncio.run(scenario())


@pytest.mark.parametrize("offload", ["thread", "inline"])
def test_cancelling_a_call_answers_lime_and_leaves_the_manager_usable(tmp_path, server, curve,
                                                                      offload):
    """A call cancelled while awaiting the key server leaves no request pending."""
    async def scenario():
        transport = AsyncKeyServer(server)
        async with AsyncManager(tmp_path / "a.sqlite3", transport, offload=offload) as alice:
            transport.hold = asyncio.Event()
            task = asyncio.create_task(alice.create_user(ALICE, SERVER_URL, curve))
            while transport.calls == 0:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            state = alice._manager._state
            assert not state.queue and not state.pending
            transport.hold = None
            await alice.create_user(ALICE, SERVER_URL, curve)
            assert await alice.is_user(ALICE)

    asyncio.run(scenario())


def test_concurrent_calls_are_serialised(tmp_path, server, curve):
    """Many encrypts gathered at once all complete and all decrypt."""
    async def scenario():
        transport = AsyncKeyServer(server)
        async with AsyncManager(tmp_path / "a.sqlite3", transport) as alice, \
                AsyncManager(tmp_path / "b.sqlite3", transport) as bob:
            await asyncio.gather(alice.create_user(ALICE, SERVER_URL, curve),
                                 bob.create_user(BOB, SERVER_URL, curve))
            outs = await asyncio.gather(*[
                alice.encrypt(ALICE, "sip:bob@example.org", [BOB], f"m{i}".encode())
                for i in range(20)])
            texts = [(await bob.decrypt(BOB, "sip:bob@example.org", ALICE,
                                        o.recipients[0].dr_message)).plaintext for o in outs]
            assert sorted(texts) == sorted(f"m{i}".encode() for i in range(20))

    asyncio.run(scenario())


def test_a_synchronous_transport_is_refused(tmp_path, server):
    """AsyncManager needs an async post(); a sync one is a TypeError up front."""
    with pytest.raises(TypeError):
        AsyncManager(tmp_path / "a.sqlite3", server)


def test_offload_is_inline_for_fast_durability_and_a_thread_otherwise(tmp_path, server):
    """"auto" runs C calls on the loop only where no commit waits for an fsync."""
    async def scenario():
        transport = AsyncKeyServer(server)
        for mode, where in (("fast", "inline"), ("wal", "thread"), ("full", "thread")):
            async with AsyncManager(tmp_path / f"{mode}.sqlite3", transport,
                                    durability=mode) as manager:
                assert manager.offload == where
        with pytest.raises(ValueError, match="offload"):
            AsyncManager(tmp_path / "x.sqlite3", transport, offload="process")
        assert not (tmp_path / "x.sqlite3").exists()

    asyncio.run(scenario())


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_offload_is_inline_for_a_database_kept_in_memory(tmp_path, server):
    """On tmpfs a commit never waits for a disk: "auto" runs C calls on the loop in every mode."""
    import tempfile

    async def scenario():
        transport = AsyncKeyServer(server)
        with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
            for mode in ("full", "wal", "fast"):
                async with AsyncManager(os.path.join(shm, f"{mode}.sqlite3"), transport,
                                        durability=mode) as manager:
                    assert manager.offload == "inline"
            async with AsyncManager(os.path.join(shm, "t.sqlite3"), transport,
                                    offload="thread") as manager:
                assert manager.offload == "thread"  # an explicit choice stands

    asyncio.run(scenario())


def _workers():
    return [t for t in threading.enumerate() if t.name == "pylime-async"]


def test_the_worker_thread_ends_with_close_and_with_a_dropped_manager(tmp_path, server, curve):
    """A thread-offloaded manager's worker ends on close(), and when dropped without it."""
    before = len(_workers())

    async def scenario():
        transport = AsyncKeyServer(server)
        closed = AsyncManager(tmp_path / "a.sqlite3", transport, offload="thread")
        await closed.create_user(ALICE, SERVER_URL, curve, opk_batch=2)
        await closed.close()
        dropped = AsyncManager(tmp_path / "b.sqlite3", transport, offload="thread")
        assert await dropped.is_user(ALICE) is False
        assert len(_workers()) >= before + 1
        del dropped

    asyncio.run(scenario())
    gc.collect()
    for thread in _workers()[before:]:
        thread.join(timeout=10)
    assert len(_workers()) == before


def test_a_failing_call_in_the_worker_raises_in_the_awaiting_coroutine(tmp_path, server):
    """An exception raised in the worker thread reaches the caller, typed, and the worker goes on."""
    from pylime import UserNotFoundError

    async def scenario():
        async with AsyncManager(tmp_path / "a.sqlite3", AsyncKeyServer(server),
                                offload="thread") as manager:
            for _ in range(2):
                with pytest.raises(UserNotFoundError):
                    await manager.identity_key(ALICE)
            assert await manager.is_user(ALICE) is False

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["full", "wal", "fast"])
def test_an_async_manager_takes_a_durability_mode(tmp_path, server, curve, mode):
    """AsyncManager applies the storage modes Manager offers, and messages flow in each."""
    import sqlite3

    async def scenario():
        transport = AsyncKeyServer(server)
        async with AsyncManager(tmp_path / "a.sqlite3", transport, durability=mode) as alice, \
                AsyncManager(tmp_path / "b.sqlite3", transport, durability=mode) as bob:
            assert alice.durability == mode
            await alice.create_user(ALICE, SERVER_URL, curve)
            await bob.create_user(BOB, SERVER_URL, curve)
            out = await alice.encrypt(ALICE, "sip:bob@example.org", [BOB], b"hi")
            assert (await bob.decrypt(BOB, "sip:bob@example.org", ALICE,
                                      out.recipients[0].dr_message)).plaintext == b"hi"

    asyncio.run(scenario())
    with sqlite3.connect(tmp_path / "a.sqlite3") as db:
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert journal == ("delete" if mode == "full" else "wal")


def test_a_message_on_an_open_session_takes_one_trip_to_the_worker(tmp_path, server, curve):
    """encrypt starts and concludes in one worker trip when lime needs no key server;
    the first message (an X3DH) takes one more trip per key-server answer."""
    async def scenario():
        transport = AsyncKeyServer(server)
        async with AsyncManager(tmp_path / "a.sqlite3", transport) as alice, \
                AsyncManager(tmp_path / "b.sqlite3", transport) as bob:
            await alice.create_user(ALICE, SERVER_URL, curve)
            await bob.create_user(BOB, SERVER_URL, curve)
            trips = []
            real = alice._thread

            async def counted(fn, *args):
                trips.append(fn)
                return await real(fn, *args)

            alice._thread = counted
            first = await alice.encrypt(ALICE, "sip:bob@example.org", [BOB], b"one")
            assert len(trips) == 3 and transport.calls == 3  # begin, answer, conclude
            trips.clear()
            second = await alice.encrypt(ALICE, "sip:bob@example.org", [BOB], b"two")
            assert len(trips) == 1 and transport.calls == 3
            for out, text in ((first, b"one"), (second, b"two")):
                assert (await bob.decrypt(BOB, "sip:bob@example.org", ALICE,
                                          out.recipients[0].dr_message)).plaintext == text
            assert not alice._manager._state.pending and not alice._manager._state.queue

    asyncio.run(scenario())
