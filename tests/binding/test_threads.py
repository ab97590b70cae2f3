"""One Manager, many threads: calls are serialised, nothing is lost or corrupted."""

from __future__ import annotations

import threading

import pytest

from pylime import PeerStatus

THREADS = 12
ROUNDS = 15


def _run_on_barrier(target, count):
    barrier = threading.Barrier(count)
    failures = []

    def worker(index):
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not failures, failures


def test_many_threads_encrypt_and_decrypt_through_shared_managers(world):
    """Threads encrypt on one Manager and decrypt on another at once; every message arrives."""
    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"open"))
    received = []
    lock = threading.Lock()

    def talk(index):
        for n in range(ROUNDS):
            text = f"thread {index} message {n}".encode()
            out = alice.encrypt(bob.user, [bob], text)
            result = bob.receive(bob.user, alice, out)
            with lock:
                received.append(result.plaintext)

    _run_on_barrier(talk, THREADS)
    expected = {f"thread {i} message {n}".encode() for i in range(THREADS) for n in range(ROUNDS)}
    assert sorted(received) == sorted(expected)


def test_many_threads_create_users_and_open_sessions_on_one_manager(world, server):
    """Concurrent create_user and first encrypts (key-server round trips) on one Manager."""
    hub = world.device("hub")
    shared = hub.manager

    def join(index):
        device = f"sip:user{index}@example.org;gr=urn:uuid:{index}"
        shared.create_user(device, "https://keys.example.org", world.curve, opk_batch=5)
        out = shared.encrypt(device, hub.user, [hub.device_id], b"hello hub")
        assert out.recipients[0].status in (PeerStatus.UNKNOWN, PeerStatus.UNTRUSTED)
        assert shared.decrypt(hub.device_id, hub.user, device,
                              out.recipients[0].dr_message).plaintext == b"hello hub"

    _run_on_barrier(join, THREADS)
    assert server.opk_count(hub.device_id) == 100 - THREADS
    for index in range(THREADS):
        assert shared.is_user(f"sip:user{index}@example.org;gr=urn:uuid:{index}")


@pytest.mark.parametrize("threads", [THREADS])
def test_close_while_threads_work_is_clean(world, threads):
    """close() from one thread while others call in: they get ManagerClosedError, no crash."""
    from pylime import ManagerClosedError

    alice, bob = world.device("alice"), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"open"))

    def work(index):
        if index == 0:
            alice.manager.close()
            return
        for _ in range(ROUNDS):
            try:
                alice.encrypt(bob.user, [bob], b"racing close")
            except ManagerClosedError:
                return

    _run_on_barrier(work, threads)
    assert alice.manager.closed
