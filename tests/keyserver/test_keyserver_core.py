"""The key server's protocol behaviour, byte for byte, as lime 5.1.64 expects it."""

from __future__ import annotations

from pathlib import Path

from ks_servers import make_server
from ks_wire import Device, error, get_bundles, hdr, u16, u32, unknown_entry

from pylime.keyserver import KeyServer
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:0000-a"
BOB = "sip:bob@example.org;gr=urn:uuid:0000-b"
CAROL = "sip:carol@example.org;gr=urn:uuid:0000-c"


def test_register_answers_bare_header(server: KeyServer, curve: Curve) -> None:
    """registerUser is answered with the bare header 01 09 <curve>."""
    alice = Device(ALICE, curve)
    assert server.handle(ALICE, alice.register()) == hdr(0x09, curve)
    assert server.opk_count(ALICE) == 5


def test_post_is_http_200_with_the_answer(server: KeyServer, curve: Curve) -> None:
    """The transport interface returns (200, answer) whatever the outcome."""
    alice = Device(ALICE, curve)
    assert server.post("https://ks.invalid/", ALICE, alice.register()) == (200, hdr(0x09, curve))
    status, body = server.post("https://ks.invalid/", ALICE, b"\x07")
    assert status == 200 and body[:2] == b"\x01\xff"


def test_identical_reregistration_succeeds(server: KeyServer, curve: Curve) -> None:
    """Re-registering with the same Ik, SPk, signature and SPk id succeeds and adds nothing."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register())
    assert server.handle(ALICE, alice.register(range(10, 20))) == hdr(0x09, curve)
    assert server.opk_count(ALICE) == 5


def test_reregistration_with_other_keys_is_user_already_in(server: KeyServer, curve: Curve) -> None:
    """Re-registering with a different Ik or SPk id is refused with user_already_in (0x05)."""
    server.handle(ALICE, Device(ALICE, curve).register())
    other = Device(ALICE, curve, seed=2)
    assert server.handle(ALICE, other.register())[:4] == error(curve, 0x05)
    assert server.handle(ALICE, Device(ALICE, curve).register(spk_id=8))[:4] == error(curve, 0x05)
    kept = Device(ALICE, curve).bundle(1, spk_id=7)
    assert server.handle(BOB, get_bundles(curve, ALICE)) == hdr(0x06, curve) + u16(1) + kept


def test_register_with_zero_opks_is_answered(server: KeyServer, curve: Curve) -> None:
    """registerUser with 0 OPks is accepted and answered (upstream hangs forever)."""
    alice = Device(ALICE, curve)
    assert server.handle(ALICE, alice.register([])) == hdr(0x09, curve)
    assert server.opk_count(ALICE) == 0
    assert server.handle(BOB, get_bundles(curve, ALICE)) == hdr(0x06, curve) + u16(
        1
    ) + alice.bundle(None)


def test_register_over_the_opk_cap_is_resource_limit(server: KeyServer, curve: Curve) -> None:
    """registerUser with more than 200 OPks is refused with resource_limit_reached (0x0a)."""
    alice = Device(ALICE, curve)
    assert server.handle(ALICE, alice.register(range(201)))[:4] == error(curve, 0x0A)
    assert server.handle(ALICE, alice.register(range(200))) == hdr(0x09, curve)
    assert server.opk_count(ALICE) == 200


def test_opk_cap_is_configurable(tmp_path: Path, storage_backend: str) -> None:
    """max_opks_per_device sets the cap on stored OPks."""
    alice = Device(ALICE, Curve.C25519)
    with make_server(storage_backend, tmp_path, max_opks_per_device=10) as server:
        assert server.handle(ALICE, alice.register(range(11)))[:4] == error(1, 0x0A)
        assert server.handle(ALICE, alice.register(range(8))) == hdr(0x09, 1)
        assert server.handle(ALICE, alice.post_opks(range(100, 103)))[:4] == error(1, 0x0A)
        assert server.handle(ALICE, alice.post_opks(range(100, 102))) == hdr(0x04, 1)
        assert server.opk_count(ALICE) == 10


def test_both_curves_are_separate_users(server: KeyServer) -> None:
    """The same device id on curve25519 and curve448 is two independent users."""
    a1, a2 = Device(ALICE, Curve.C25519), Device(ALICE, Curve.C448, seed=3)
    assert server.handle(ALICE, a1.register(range(3))) == hdr(0x09, 1)
    assert server.handle(ALICE, a2.register(range(4))) == hdr(0x09, 2)
    assert server.opk_count(ALICE) == 7
    assert server.handle(BOB, get_bundles(2, ALICE)) == hdr(0x06, 2) + u16(1) + a2.bundle(0)
    assert server.handle(ALICE, hdr(0x02, 1)) == hdr(0x02, 1)
    assert server.handle(BOB, get_bundles(1, ALICE)) == hdr(0x06, 1) + u16(1) + unknown_entry(ALICE)
    assert server.opk_count(ALICE) == 3


def test_peer_bundle_hands_out_oldest_opk_once(server: KeyServer, curve: Curve) -> None:
    """getPeerBundle serves the oldest OPk and deletes it; flag 0 once none are left."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([5, 3]))
    expected = [alice.bundle(5), alice.bundle(3), alice.bundle(None), alice.bundle(None)]
    for entry in expected:
        assert server.handle(BOB, get_bundles(curve, ALICE)) == hdr(0x06, curve) + u16(1) + entry
    assert server.opk_count(ALICE) == 0


def test_peer_bundle_answers_every_distinct_id_once_in_order(
    server: KeyServer, curve: Curve
) -> None:
    """Each distinct id is answered once, in the order first asked; unknown devices get flag 2."""
    alice, bob = Device(ALICE, curve), Device(BOB, curve, seed=4)
    server.handle(ALICE, alice.register([1]))
    server.handle(BOB, bob.register([9, 10]))
    answer = server.handle(CAROL, get_bundles(curve, BOB, CAROL, ALICE, BOB, ALICE))
    assert answer == hdr(0x06, curve) + u16(3) + bob.bundle(9) + unknown_entry(CAROL) + alice.bundle(1)
    assert server.opk_count(BOB) == 1  # the repeat took nothing


def test_requester_need_not_be_registered(server: KeyServer, curve: Curve) -> None:
    """Anyone with a sender id may fetch bundles; the requester needs no keys here."""
    server.handle(ALICE, Device(ALICE, curve).register([1]))
    answer = server.handle("sip:stranger@elsewhere;gr=x", get_bundles(curve, ALICE))
    assert answer == hdr(0x06, curve) + u16(1) + Device(ALICE, curve).bundle(1)


def test_bundle_on_the_other_curve_is_unknown(server: KeyServer) -> None:
    """A device registered on curve25519 is unknown (flag 2) to a curve448 request."""
    server.handle(ALICE, Device(ALICE, Curve.C25519).register())
    assert server.handle(BOB, get_bundles(2, ALICE)) == hdr(0x06, 2) + u16(1) + unknown_entry(ALICE)
    assert server.opk_count(ALICE) == 5


def test_post_spk_replaces_the_signed_prekey(server: KeyServer, curve: Curve) -> None:
    """postSPk replaces SPk, signature and id; later bundles carry the new one."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([1]))
    assert server.handle(ALICE, alice.post_spk(5, 99)) == hdr(0x03, curve)
    answer = server.handle(BOB, get_bundles(curve, ALICE))
    assert answer == hdr(0x06, curve) + u16(1) + alice.bundle(1, spk_n=5, spk_id=99)


def test_post_spk_for_unknown_device_is_user_not_found(server: KeyServer, curve: Curve) -> None:
    """postSPk from a device the server does not know is refused with user_not_found (0x06)."""
    assert server.handle(ALICE, Device(ALICE, curve).post_spk(1, 2))[:4] == error(curve, 0x06)


def test_post_opks_adds_after_the_existing_ones(server: KeyServer, curve: Curve) -> None:
    """postOPks appends; bundles keep serving the oldest first."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([1]))
    assert server.handle(ALICE, alice.post_opks([7, 8])) == hdr(0x04, curve)
    assert server.opk_count(ALICE) == 3
    answers = [server.handle(BOB, get_bundles(curve, ALICE)) for _ in range(3)]
    assert answers == [hdr(0x06, curve) + u16(1) + alice.bundle(n) for n in (1, 7, 8)]


def test_post_opks_for_unknown_device_is_user_not_found(server: KeyServer, curve: Curve) -> None:
    """postOPks from an unknown device is refused with user_not_found (0x06)."""
    assert server.handle(ALICE, Device(ALICE, curve).post_opks([1]))[:4] == error(curve, 0x06)


def test_post_zero_opks_is_accepted(server: KeyServer, curve: Curve) -> None:
    """postOPks with an empty list succeeds and changes nothing."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([1]))
    assert server.handle(ALICE, alice.post_opks([])) == hdr(0x04, curve)
    assert server.opk_count(ALICE) == 1


def test_self_opks_lists_remaining_ids(server: KeyServer, curve: Curve) -> None:
    """getSelfOPks answers selfOPks (0x08) with the ids still held, oldest first."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([4, 2, 0xFFFFFFFF]))
    server.handle(BOB, get_bundles(curve, ALICE))
    assert server.handle(ALICE, hdr(0x07, curve)) == hdr(0x08, curve) + u16(2) + u32(2) + u32(
        0xFFFFFFFF
    )


def test_self_opks_when_all_are_used(server: KeyServer, curve: Curve) -> None:
    """getSelfOPks for a device without OPks left answers an empty list."""
    server.handle(ALICE, Device(ALICE, curve).register([]))
    assert server.handle(ALICE, hdr(0x07, curve)) == hdr(0x08, curve) + u16(0)


def test_self_opks_for_unknown_device_is_user_not_found(server: KeyServer, curve: Curve) -> None:
    """getSelfOPks from an unknown device is user_not_found, which makes lime republish."""
    assert server.handle(ALICE, hdr(0x07, curve))[:4] == error(curve, 0x06)


def test_delete_user_removes_device_and_opks(server: KeyServer, curve: Curve) -> None:
    """deleteUser removes the sending device with its OPks and answers 01 02 <curve>."""
    server.handle(ALICE, Device(ALICE, curve).register())
    assert server.handle(ALICE, hdr(0x02, curve)) == hdr(0x02, curve)
    assert server.opk_count(ALICE) == 0
    assert server.handle(BOB, get_bundles(curve, ALICE)) == hdr(0x06, curve) + u16(
        1
    ) + unknown_entry(ALICE)


def test_delete_unknown_user_succeeds(server: KeyServer, curve: Curve) -> None:
    """deleteUser for a device the server does not know still succeeds, as upstream."""
    assert server.handle(ALICE, hdr(0x02, curve)) == hdr(0x02, curve)


def test_register_after_delete_starts_afresh(server: KeyServer, curve: Curve) -> None:
    """A deleted device can register again with new keys."""
    server.handle(ALICE, Device(ALICE, curve).register())
    server.handle(ALICE, hdr(0x02, curve))
    assert server.handle(ALICE, Device(ALICE, curve, seed=5).register([1])) == hdr(0x09, curve)
    assert server.opk_count(ALICE) == 1


def test_republish_after_loss_is_accepted(server: KeyServer, curve: Curve) -> None:
    """lime's republish (registerUser with the old Ik and SPk after user_not_found) works."""
    alice = Device(ALICE, curve)
    server.handle(ALICE, alice.register([1, 2]))
    server.handle(ALICE, hdr(0x02, curve))  # as if the server lost the device
    assert server.handle(ALICE, hdr(0x07, curve))[:4] == error(curve, 0x06)
    assert server.handle(ALICE, alice.register([3, 4])) == hdr(0x09, curve)
    assert server.handle(ALICE, hdr(0x07, curve)) == hdr(0x08, curve) + u16(2) + u32(3) + u32(4)


def test_lifetime_expires_devices(tmp_path: Path, storage_backend: str) -> None:
    """With a lifetime, devices are deleted once it has passed since registration."""
    now = [1000.0]
    alice = Device(ALICE, Curve.C25519)
    with make_server(storage_backend, tmp_path, lifetime=300, clock=lambda: now[0]) as server:
        server.handle(ALICE, alice.register())
        now[0] += 299
        assert server.handle(BOB, get_bundles(1, ALICE))[7 + len(ALICE)] == 1
        now[0] += 2
        assert server.handle(BOB, get_bundles(1, ALICE)) == hdr(0x06, 1) + u16(1) + unknown_entry(
            ALICE
        )
        assert server.opk_count(ALICE) == 0


def test_lifetime_zero_keeps_devices(server: KeyServer) -> None:
    """The default lifetime 0 never expires anything."""
    server.handle(ALICE, Device(ALICE, Curve.C25519).register())
    assert server.expire() == 0
    assert server.opk_count(ALICE) == 5


def test_opk_count_of_unknown_device_is_zero(server: KeyServer) -> None:
    """opk_count is 0 for a device the server does not know, including invalid ids."""
    assert server.opk_count(ALICE) == 0
    assert server.opk_count("") == 0
    assert server.opk_count("a\x00b") == 0


def test_sqlite_file_persists_across_restarts(tmp_path: Path) -> None:
    """A KeyServer on an SQLite file finds its devices again after a restart."""
    alice = Device(ALICE, Curve.C448)
    with KeyServer(tmp_path / "k.sqlite3") as server:
        server.handle(ALICE, alice.register([1, 2]))
        server.handle(BOB, get_bundles(2, ALICE))
    with KeyServer(str(tmp_path / "k.sqlite3")) as server:
        assert server.opk_count(ALICE) == 1
        assert server.handle(BOB, get_bundles(2, ALICE)) == hdr(0x06, 2) + u16(1) + alice.bundle(2)
