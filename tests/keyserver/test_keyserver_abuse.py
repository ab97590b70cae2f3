"""The key server under abuse (issue 17): no account drains, bloats or confuses it.

Each rule runs on every storage backend (SQLite in memory, SQLite file, PostgreSQL):
getPeerBundle takes at most one OPk per distinct device and meters OPks per requester,
quotas per account refuse with resource_limit_reached and store nothing, and device ids of
odd shapes are refused at the door.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ks_pg import fresh_pg_storage, require_pg_url
from ks_servers import make_server
from ks_wire import Device, error, get_bundles, hdr, u16, unknown_entry

from pylime.keyserver import KeyServer
from pylime.keyserver.storage import UserKeys, device_bytes, opk_bytes
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000a"
BOB = "sip:bob@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000b"
MALLORY = "sip:mallory@example.org;gr=urn:uuid:00000000-0000-4000-8000-00000000000d"


def alice_device(n: int) -> str:
    return f"sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-{n:012d}"


class Clock:
    """A settable time source."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def flags(answer: bytes) -> list[int]:
    """The flag of each entry of a peerBundle answer (parsed by the protocol module)."""
    from pylime.keyserver.protocol import PeerBundle, parse_response

    parsed = parse_response(answer)
    assert isinstance(parsed, PeerBundle)
    return [int(b.flag) for b in parsed.bundles]


# ------------------------------------------------------------------ getPeerBundle: repeats


def test_fifty_repeats_of_one_device_take_one_opk(server: KeyServer, curve: Curve) -> None:
    """A bundle request naming one device 50 times takes at most one OPk and answers it once."""
    bob = Device(BOB, curve)
    server.handle(BOB, bob.register(range(1, 51)))
    answer = server.handle(MALLORY, get_bundles(curve, *[BOB] * 50))
    assert answer == hdr(0x06, curve) + u16(1) + bob.bundle(1)
    assert server.opk_count(BOB) == 49


def test_repeats_among_other_ids_are_answered_once_each(server: KeyServer, curve: Curve) -> None:
    """Repeats of several devices, known or not, each get one entry where first asked."""
    alice, bob = Device(ALICE, curve), Device(BOB, curve, seed=3)
    server.handle(ALICE, alice.register([1, 2]))
    server.handle(BOB, bob.register([5, 6]))
    unknown = "sip:nobody@example.org;gr=x"
    answer = server.handle(MALLORY, get_bundles(curve, BOB, unknown, BOB, ALICE, unknown, ALICE))
    assert answer == (
        hdr(0x06, curve) + u16(3) + bob.bundle(5) + unknown_entry(unknown) + alice.bundle(1)
    )
    assert (server.opk_count(ALICE), server.opk_count(BOB)) == (1, 1)


# ------------------------------------------------------------------ getPeerBundle: OPk budget


def test_opk_budget_serves_bundles_without_opk_once_spent(
    storage_backend: str, tmp_path: Path
) -> None:
    """Past its budget a requester gets bundles without OPk (flag 0); the OPks stay for others."""
    clock = Clock()
    with make_server(storage_backend, tmp_path, opk_budget=3, clock=clock) as server:
        devices = [Device(alice_device(n), Curve.C25519) for n in range(5)]
        for d in devices:
            server.handle(d.device_id, d.register([1, 2]))
        ids = [d.device_id for d in devices]
        assert flags(server.handle(MALLORY, get_bundles(1, *ids))) == [1, 1, 1, 0, 0]
        assert flags(server.handle(MALLORY, get_bundles(1, *ids))) == [0] * 5
        assert [server.opk_count(i) for i in ids] == [1, 1, 1, 2, 2]
        # Another account has its own budget.
        assert flags(server.handle(BOB, get_bundles(1, *ids))) == [1, 1, 1, 0, 0]


def test_opk_budget_refills_over_its_window(storage_backend: str, tmp_path: Path) -> None:
    """The bucket refills at size/window: one more OPk after a third of the window (size 3)."""
    clock = Clock()
    with make_server(
        storage_backend, tmp_path, opk_budget=3, opk_budget_window=300.0, clock=clock
    ) as server:
        bob = Device(BOB, Curve.C25519)
        server.handle(BOB, bob.register(range(1, 11)))
        taken = [flags(server.handle(MALLORY, get_bundles(1, BOB)))[0] for _ in range(4)]
        assert taken == [1, 1, 1, 0]
        clock.now += 100.0
        assert flags(server.handle(MALLORY, get_bundles(1, BOB))) == [1]
        assert flags(server.handle(MALLORY, get_bundles(1, BOB))) == [0]
        clock.now += 3600.0  # never more than the bucket's size
        taken = [flags(server.handle(MALLORY, get_bundles(1, BOB)))[0] for _ in range(4)]
        assert taken == [1, 1, 1, 0]
        assert server.opk_count(BOB) == 3


def test_the_requester_is_the_account_not_the_device(storage_backend: str, tmp_path: Path) -> None:
    """Every device of one account draws on one budget (the owner of the sender id)."""
    with make_server(storage_backend, tmp_path, opk_budget=2, clock=Clock()) as server:
        bob = Device(BOB, Curve.C25519)
        server.handle(BOB, bob.register(range(1, 11)))
        answers = [server.handle(alice_device(n), get_bundles(1, BOB)) for n in range(3)]
        assert [flags(a)[0] for a in answers] == [1, 1, 0]


def test_opk_budget_zero_means_unmetered(storage_backend: str, tmp_path: Path) -> None:
    """opk_budget=0 turns the metering off (upstream's behaviour)."""
    with make_server(storage_backend, tmp_path, opk_budget=0) as server:
        bob = Device(BOB, Curve.C25519)
        server.handle(BOB, bob.register(range(1, 151)))
        for _ in range(150):
            assert flags(server.handle(MALLORY, get_bundles(1, BOB))) == [1]
        assert server.opk_count(BOB) == 0


def test_spent_budget_rows_are_forgotten(storage_backend: str, tmp_path: Path) -> None:
    """A budget row full again is deleted, so the table holds only recent requesters."""
    clock = Clock()
    with make_server(storage_backend, tmp_path, opk_budget=5, clock=clock) as server:
        bob = Device(BOB, Curve.C25519)
        server.handle(BOB, bob.register(range(1, 20)))
        server.handle(MALLORY, get_bundles(1, BOB))
        clock.now += 3601.0
        assert server.storage.forget_budgets(clock.now - 3600.0) == 1
        assert server.storage.forget_budgets(clock.now - 3600.0) == 0


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """One database that two KeyServer instances open, as two workers or machines would."""
    if request.param == "postgres":
        fresh_pg_storage().close()  # empty the tables once
        yield require_pg_url()
    else:
        yield tmp_path / "shared.sqlite3"


def test_opk_budget_holds_across_two_servers(shared_db: object) -> None:
    """Two KeyServers on one database draw on one budget per requester, even concurrently."""
    clock = Clock()
    with (
        KeyServer(shared_db, opk_budget=10, clock=clock) as one,  # type: ignore[arg-type]
        KeyServer(shared_db, opk_budget=10, clock=clock) as two,  # type: ignore[arg-type]
    ):
        devices = [Device(alice_device(n), Curve.C25519) for n in range(30)]
        for d in devices:
            one.handle(d.device_id, d.register([1, 2, 3]))
        barrier = threading.Barrier(4)
        got: list[int] = []
        lock = threading.Lock()

        def fetch(server: KeyServer, chunk: list[Device]) -> None:
            barrier.wait()
            for d in chunk:
                f = flags(server.handle(MALLORY, get_bundles(1, d.device_id)))
                with lock:
                    got.extend(f)

        threads = [
            threading.Thread(target=fetch, args=(s, devices[i::4]))
            for i, s in enumerate((one, two, one, two))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 30 and got.count(1) == 10
        assert sum(two.opk_count(d.device_id) for d in devices) == 90 - 10
        # The other server sees the budget spent too.
        assert flags(two.handle(MALLORY, get_bundles(1, devices[0].device_id))) == [0]


# ------------------------------------------------------------------ quotas


def test_devices_per_account_quota(server_factory: object, curve: Curve) -> None:
    """Past max_devices_per_account a new device is refused (0x0a) and nothing is stored."""
    server = server_factory(max_devices_per_account=3)  # type: ignore[operator]
    for n in range(3):
        assert server.handle(alice_device(n), Device(alice_device(n), curve).register()) == hdr(
            0x09, curve
        )
    usage = server.storage.account_usage("alice@example.org")
    fourth = Device(alice_device(3), curve)
    assert server.handle(fourth.device_id, fourth.register())[:4] == error(curve, 0x0A)
    assert server.storage.account_usage("alice@example.org") == usage
    assert server.opk_count(fourth.device_id) == 0
    assert server.handle(BOB, get_bundles(curve, fourth.device_id)) == hdr(0x06, curve) + u16(
        1
    ) + unknown_entry(fourth.device_id)
    # An identical re-registration of a device it has still succeeds; other accounts are free.
    again = Device(alice_device(0), curve)
    assert server.handle(again.device_id, again.register()) == hdr(0x09, curve)
    assert server.handle(BOB, Device(BOB, curve).register()) == hdr(0x09, curve)
    # Deleting a device frees its place.
    assert server.handle(alice_device(0), hdr(0x02, curve)) == hdr(0x02, curve)
    assert server.handle(fourth.device_id, fourth.register()) == hdr(0x09, curve)


def test_device_id_length_quota(server_factory: object, curve: Curve) -> None:
    """Device ids up to max_device_id_length bytes register; longer ones are refused (0x0a)."""
    server = server_factory()  # type: ignore[operator]
    prefix, suffix = "sip:", "@example.org;gr=urn:uuid:00000000-0000-4000-8000-000000000001"
    fits = prefix + "a" * (256 - len(prefix) - len(suffix)) + suffix
    too_long = prefix + "b" * (257 - len(prefix) - len(suffix)) + suffix
    assert (len(fits.encode()), len(too_long.encode())) == (256, 257)
    assert server.handle(fits, Device(fits, curve).register()) == hdr(0x09, curve)
    assert server.handle(too_long, Device(too_long, curve).register())[:4] == error(curve, 0x0A)
    assert server.opk_count(too_long) == 0
    # Bytes, not characters: 'é' is two.
    accented = prefix + "é" * 100 + suffix
    assert len(accented) < 256 < len(accented.encode())
    assert server.handle(accented, Device(accented, curve).register())[:4] == error(curve, 0x0A)


def test_account_bytes_quota_on_register_and_post_opks(server_factory: object, curve: Curve) -> None:
    """Past max_account_bytes registerUser and postOPks are refused (0x0a) and store nothing."""
    first = Device(alice_device(1), curve)
    keys = UserKeys(first.ik, first.spk(), first.sig(), 7)
    x = {Curve.C25519: 32, Curve.C448: 56}[curve]
    one_device = device_bytes(first.device_id, keys) + 10 * (x + 4)
    server = server_factory(max_account_bytes=2 * one_device + 5 * (x + 4))  # type: ignore[operator]
    for n in (1, 2):
        d = Device(alice_device(n), curve)
        assert server.handle(d.device_id, d.register(range(10))) == hdr(0x09, curve)
    assert server.storage.account_usage("alice@example.org") == (2, 2 * one_device)
    third = Device(alice_device(3), curve)
    assert server.handle(third.device_id, third.register(range(10)))[:4] == error(curve, 0x0A)
    assert server.storage.account_usage("alice@example.org") == (2, 2 * one_device)
    assert server.handle(first.device_id, first.post_opks(range(100, 106)))[:4] == error(
        curve, 0x0A
    )
    assert server.opk_count(first.device_id) == 10
    assert server.handle(first.device_id, first.post_opks(range(100, 105))) == hdr(0x04, curve)
    assert server.storage.account_usage("alice@example.org") == (2, 2 * one_device + 5 * (x + 4))
    # The quota is per account: bob is not charged for alice.
    assert server.handle(BOB, Device(BOB, curve).register(range(10))) == hdr(0x09, curve)


def test_quota_bytes_count_what_is_stored() -> None:
    """device_bytes and opk_bytes count the id in UTF-8, the keys and the 4-byte ids."""
    keys = UserKeys(b"i" * 57, b"s" * 56, b"g" * 114, 1)
    assert device_bytes("sip:é@d", keys) == 8 + 57 + 56 + 114 + 4
    from pylime.keyserver.protocol import OPk

    assert opk_bytes([OPk(b"o" * 56, 1), OPk(b"o" * 56, 2)]) == 2 * 60


def test_quotas_hold_across_two_servers_racing(shared_db: object) -> None:
    """Two servers registering one account's devices at once never pass the device quota."""
    with (
        KeyServer(shared_db, max_devices_per_account=5) as one,  # type: ignore[arg-type]
        KeyServer(shared_db, max_devices_per_account=5) as two,  # type: ignore[arg-type]
    ):
        barrier = threading.Barrier(2)
        answers: list[bytes] = []

        def register(server: KeyServer, numbers: range) -> None:
            barrier.wait()
            for n in numbers:
                d = Device(alice_device(n), Curve.C25519)
                answers.append(server.handle(d.device_id, d.register()))

        threads = [
            threading.Thread(target=register, args=(one, range(0, 20, 2))),
            threading.Thread(target=register, args=(two, range(1, 20, 2))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers.count(hdr(0x09, 1)) == 5
        assert one.storage.account_usage("alice@example.org")[0] == 5


# ------------------------------------------------------------------ odd device ids

ODD_IDS = [
    "sip:alice:x@bob@example.org",  # a password part, two @: bob's to a parser splitting last
    "sip:bob@alice@example.org",  # more than one @
    "sip:alice:secret@example.org;gr=1",  # a password part
    "<sip:alice@example.org;gr=1>",  # angle brackets
    "sip:alice>@example.org;gr=1",
    "sip:alice@example.org;gr=<1>",
    "sip:alice?x@example.org;gr=1",  # a header part
    "sip:alice@example.org;gr=1?x",
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_odd_device_ids_are_refused_at_the_door(server: KeyServer, odd: str) -> None:
    """Ids with more than one @, a password, <, >, ? are refused (0x02) and never stored."""
    d = Device(odd, Curve.C25519)
    assert server.handle(odd, d.register())[:4] == error(1, 0x02)
    assert server.handle(odd, d.post_opks([9]))[:4] == error(1, 0x02)
    assert server.opk_count(odd) == 0
    answer = server.handle(BOB, get_bundles(1, odd))
    assert answer == hdr(0x06, 1) + u16(1) + unknown_entry(odd)


def test_devices_stored_before_the_door_get_their_owner(tmp_path: Path) -> None:
    """Migrating an SQLite database of schema 1 (step 2) fills Owner from the device ids."""
    from pylime.keyserver import schema
    from pylime.keyserver.storage import SQLiteStorage

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        for statement in schema.STEPS[0].sqlite:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        for user_id in (alice_device(1), alice_device(2), ODD_IDS[0]):
            conn.execute(
                "INSERT INTO Users (Curve, UserId, Ik, SPk, SPk_sig, SPk_id, Registered)"
                " VALUES (1, ?, ?, ?, ?, 7, 0)",
                (user_id, b"i" * 32, b"s" * 32, b"g" * 64),
            )
    with pytest.raises(schema.SchemaTooOldError):
        SQLiteStorage(path)
    SQLiteStorage(path, migrate=True).close()
    with KeyServer(path, max_devices_per_account=3) as server:
        assert server.storage.account_usage("alice@example.org")[0] == 2
        assert server.storage.account_usage("bob@example.org")[0] == 0  # the odd id is nobody's
        third, fourth = Device(alice_device(3), Curve.C25519), Device(alice_device(4), Curve.C25519)
        assert server.handle(third.device_id, third.register()) == hdr(0x09, 1)
        assert server.handle(fourth.device_id, fourth.register())[:4] == error(1, 0x0A)


@pytest.mark.postgres
def test_postgres_devices_stored_before_the_door_get_their_owner() -> None:
    """Migrating a PostgreSQL database of schema 1 (step 2) fills lime_users.owner from the ids."""
    from pylime.keyserver import schema
    from pylime.keyserver.postgres import PostgresStorage

    storage = fresh_pg_storage()
    with KeyServer(storage) as server:
        for n in (1, 2):
            d = Device(alice_device(n), Curve.C25519)
            server.handle(d.device_id, d.register())
        with storage._auto() as cur:  # back to schema 1
            cur.execute("ALTER TABLE lime_users DROP COLUMN owner")
            cur.execute("DROP TABLE lime_opk_budgets")
            cur.execute("DROP TABLE lime_nonces, lime_rate")  # step 3
            cur.execute("UPDATE lime_config SET value = '1' WHERE name = 'schema_version'")
    migrated = PostgresStorage(require_pg_url(), migrate=True)
    try:
        assert migrated.applied_steps == list(range(2, schema.SCHEMA_VERSION + 1))
        assert migrated.account_usage("alice@example.org")[0] == 2
    finally:
        migrated.close()


@pytest.fixture
def server_factory(storage_backend: str, tmp_path: Path) -> Iterator[object]:
    """Make one KeyServer with the given settings on the backend under test."""
    made: list[KeyServer] = []

    def factory(**kwargs: object) -> KeyServer:
        made.append(make_server(storage_backend, tmp_path, **kwargs))
        return made[-1]

    yield factory
    for s in made:
        s.close()


# ------------------------------------------------------------------ lime keeps working


class CountingServer:
    """A transport in front of a KeyServer that records each getPeerBundle request."""

    def __init__(self, server: KeyServer) -> None:
        self.server = server
        self.bundle_requests: list[tuple[str, ...]] = []

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        from pylime.keyserver.protocol import GetPeerBundle, parse_request

        if body[1:2] == b"\x05":
            request = parse_request(body)
            assert isinstance(request, GetPeerBundle)
            self.bundle_requests.append(request.device_ids)
        return self.server.post(url, sender, body)


def test_a_repeated_recipient_is_refused_before_the_key_server_is_asked(
    tmp_path: Path, storage_backend: str, curve: Curve, backend: object
) -> None:
    """A recipient listed twice is refused by both backends (liblime 5.1.64 crashes on it once
    the session comes from its database: docs/security.md); no bundle is asked, no OPk taken.
    The server's own answer to repeats in a request is pinned by the tests above."""
    from tests.conftest import World

    with make_server(storage_backend, tmp_path) as server:
        counting = CountingServer(server)
        world = World(tmp_path, counting, curve, backend)  # type: ignore[arg-type]
        try:
            alice, bob = world.device("alice"), world.device("bob")
            before = server.opk_count(bob.device_id)
            with pytest.raises(ValueError, match="repeat"):
                alice.encrypt(bob.user, [bob, bob], b"twice")
            assert counting.bundle_requests == []
            assert server.opk_count(bob.device_id) == before
            out = alice.encrypt(bob.user, [bob], b"once")  # the manager is still usable
            plain = bob.decrypt(bob.user, alice, out.recipients[0].dr_message, out.cipher_message)
            assert plain.plaintext == b"once"
        finally:
            world.close()


def test_lime_works_with_bundles_past_the_budget(
    tmp_path: Path, curve: Curve, backend: object
) -> None:
    """Once the requester's budget is spent, bundles come without OPk and sessions still start."""
    from tests.conftest import World

    with KeyServer(opk_budget=1) as server:
        world = World(tmp_path, server, curve, backend)  # type: ignore[arg-type]
        try:
            alice, bob1, bob2 = world.device("alice"), world.device("bob"), world.device("bob")
            counts = (server.opk_count(bob1.device_id), server.opk_count(bob2.device_id))
            out = alice.encrypt(bob1.user, [bob1, bob2], b"hello")
            after = (server.opk_count(bob1.device_id), server.opk_count(bob2.device_id))
            assert sum(counts) - sum(after) == 1  # one OPk taken, the other bundle had none
            for dev in (bob1, bob2):
                assert dev.receive(bob1.user, alice, out).plaintext == b"hello"
        finally:
            world.close()


def test_server_config_limits_reach_the_key_server() -> None:
    """ServerConfig's quota and budget fields are the KeyServer a worker process opens."""
    from pylime.keyserver.app import KeyServerApp, ServerConfig

    config = ServerConfig(
        open=True,
        max_devices_per_account=4,
        max_device_id_length=100,
        max_account_bytes=5000,
        opk_budget=7,
        opk_budget_window=60.0,
    )
    app = KeyServerApp(config)
    app._open_sync()
    server = app._server
    assert server is not None
    try:
        assert (server.quotas.max_devices, server.quotas.max_bytes) == (4, 5000)
        assert server.max_device_id_length == 100
        assert server.opk_budget is not None
        assert (server.opk_budget.size, server.opk_budget.window) == (7, 60.0)
    finally:
        server.close()
