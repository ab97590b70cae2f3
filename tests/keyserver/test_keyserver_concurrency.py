"""Concurrent use of one KeyServer: each OPk is handed out at most once."""

from __future__ import annotations

import threading

from ks_wire import Device, get_bundles, hdr

from pylime.keyserver import KeyServer
from pylime.keyserver.protocol import PeerBundle, parse_response
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:0000-a"


def test_sixteen_threads_share_100_opks_exactly_once(server: KeyServer, curve: Curve) -> None:
    """16 threads fetching one device's bundle get exactly its 100 OPks, each once, then flag 0."""
    assert server.handle(ALICE, Device(ALICE, curve).register(range(100))) == hdr(0x09, curve)
    barrier = threading.Barrier(16)
    handed: list[int] = []
    without = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def fetch(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(10):  # 160 fetches for 100 OPks
                answer = parse_response(
                    server.handle(f"sip:t{n}@x;gr=y", get_bundles(curve, ALICE))
                )
                assert isinstance(answer, PeerBundle)
                (bundle,) = answer.bundles
                with lock:
                    if bundle.opk is None:
                        without[0] += 1
                    else:
                        handed.append(bundle.opk.id)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(handed) == list(range(100))
    assert without[0] == 60
    assert server.opk_count(ALICE) == 0


def test_concurrent_registrations_of_one_device_create_one_user(server: KeyServer) -> None:
    """Racing registerUser for one device id: exactly one copy is stored (UNIQUE(curve, id))."""
    devices = [Device(ALICE, Curve.C25519, seed=s) for s in range(8)]
    barrier = threading.Barrier(8)
    answers: list[bytes] = []

    def register(d: Device) -> None:
        barrier.wait(timeout=10)
        answers.append(server.handle(ALICE, d.register(range(3))))

    threads = [threading.Thread(target=register, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert answers.count(hdr(0x09, 1)) == 1
    assert sum(a[:4] == b"\x01\xff\x01\x05" for a in answers) == 7
    assert server.opk_count(ALICE) == 3
