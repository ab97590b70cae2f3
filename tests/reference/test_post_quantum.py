"""lime 5.4's post-quantum algorithms in the reference: KEMs, hybrid X3DH, the KEM ratchet,
and conversations between reference devices (1:1, multi-device, groups, every policy)."""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Iterator

import pytest
from kyber_py.ml_kem import ML_KEM_512, ML_KEM_1024

from pylime import POST_QUANTUM_CURVES, Curve, Policy, errors
from pylime.keyserver import KeyServer
from pylime.reference import encoding, hybrid, kem
from pylime.reference.manager import ReferenceManager
from pylime.types import PeerStatus
from tests.conftest import SERVER_URL, Device, World, requires_lime

PQ = pytest.mark.parametrize("pq_curve", POST_QUANTUM_CURVES, ids=lambda c: c.name.lower())


class SmallWorld(World):
    """A World whose devices publish 3 OPks: pure-Python Kyber/ML-KEM-512 key generation
    costs ~10 ms a key, and these tests need only a few."""

    def device(self, name: str, domain: str = "example.org", create: bool = True,
               transport: object = None) -> Device:
        dev = super().device(name, domain, create=False, transport=transport)
        if create:
            dev.manager.create_user(dev.device_id, SERVER_URL, self.curve, opk_batch=3)
        return dev


@pytest.fixture(params=POST_QUANTUM_CURVES, ids=lambda c: c.name.lower())
def pq_world(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[World]:
    """Reference devices on one in-memory key server, on each post-quantum algorithm."""
    with KeyServer() as ks:
        w = SmallWorld(tmp_path, ks, request.param, ReferenceManager)
        yield w
        w.close()


# --------------------------------------------------------------------------- KEMs


@pytest.mark.parametrize("k", list(kem.Kem), ids=lambda k: k.value)
def test_kem_round_trip_and_liboqs_sizes(k: kem.Kem) -> None:
    """Each KEM encapsulates to a fresh key and decapsulates to the same 32-byte secret;
    the sizes are liboqs's, which lime 5.4 puts on the wire."""
    sizes = {kem.Kem.KYBER512: (800, 768), kem.Kem.MLKEM512: (800, 768),
             kem.Kem.MLKEM1024: (1568, 1568)}[k]
    pk, sk = kem.generate(k)
    ct, ss = kem.encaps(k, pk)
    assert (len(pk), len(ct), len(ss)) == (*sizes, 32)
    assert kem.decaps(k, sk, ct) == ss
    assert kem.public_from_private(k, sk) == pk


@pytest.mark.parametrize("impl,k", [(ML_KEM_512, kem.Kem.MLKEM512),
                                    (ML_KEM_1024, kem.Kem.MLKEM1024)], ids=["512", "1024"])
def test_ml_kem_seed_and_expanded_keys_agree(impl: object, k: kem.Kem) -> None:
    """A 64-byte seed (what the reference stores) and its FIPS 203 expanded key (what lime
    stores, liboqs's form) decapsulate alike and give the same public key."""
    pk, seed = kem.generate(k)
    ek, dk = impl.key_derive(bytes(seed))  # type: ignore[attr-defined]
    assert ek == pk and len(dk) == kem.SIZES[k].sk
    ct, ss = kem.encaps(k, pk)
    assert kem.decaps(k, dk, ct) == kem.decaps(k, seed, ct) == ss
    assert kem.public_from_private(k, dk) == pk


def test_kem_refuses_wrong_sizes() -> None:
    """A key or ciphertext of the wrong length is a ValueError, never a crash or a guess."""
    pk, sk = kem.generate(kem.Kem.MLKEM512)
    with pytest.raises(ValueError):
        kem.encaps(kem.Kem.MLKEM512, pk[:-1])
    with pytest.raises(ValueError):
        kem.decaps(kem.Kem.MLKEM512, sk, bytes(767))
    with pytest.raises(ValueError):
        kem.decaps(kem.Kem.KYBER512, bytes(64), bytes(768))  # Kyber has no seed form


# --------------------------------------------------------------------------- X3DH


@PQ
@pytest.mark.parametrize("with_opk", [True, False], ids=["opk", "no-opk"])
def test_hybrid_x3dh_agrees_and_the_init_has_lime54_size(pq_curve: Curve, with_opk: bool) -> None:
    """Initiator and responder derive the same SK; the init carries the KEM ciphertext,
    sized as lime 5.4's X3DHinitSize (837/841 on the 512s, 1686/1690 on c448mlk1024)."""
    from pylime.reference.primitives import ed_keypair, ed_sign, ed_verify

    a_pub, a_seed = ed_keypair(pq_curve)
    b_pub, b_seed = ed_keypair(pq_curve)
    spk = hybrid.PreKey.generate(pq_curve)
    opk = hybrid.PreKey.generate(pq_curve) if with_opk else None
    assert ed_verify(pq_curve, b_pub, spk.public, ed_sign(pq_curve, b_seed, spk.public))
    sk_a, init = hybrid.initiate(pq_curve, a_pub, a_seed, b_pub, spk.public, 7,
                                 (opk.public, 9) if opk else None)
    raw = init.to_bytes()
    expected = {Curve.C448MLK1024: 1686}.get(pq_curve, 837) + (4 if with_opk else 0)
    assert len(raw) == expected == encoding.x3dh_init_size(pq_curve, with_opk)
    parsed = encoding.parse_x3dh_init(raw, pq_curve)
    assert parsed == init
    assert hybrid.respond(pq_curve, b_pub, b_seed, spk, opk, parsed) == sk_a


@PQ
def test_x3dh_info_names_ec_and_kem(pq_curve: Curve) -> None:
    """The HKDF info is lime 5.4's Lime_<EC>_SHA512_<KEM>."""
    assert hybrid.x3dh_info(pq_curve) == {
        Curve.C25519K512: b"Lime_CURVE25519_SHA512_KYBER512",
        Curve.C25519MLK512: b"Lime_CURVE25519_SHA512_MLKEM512",
        Curve.C448MLK1024: b"Lime_CURVE448_SHA512_MLKEM1024",
    }[pq_curve]


# --------------------------------------------------------------------------- conversations


def _headers(out: object) -> list[encoding.DRHeader]:
    return [encoding.parse_dr_header(r.dr_message)[0] for r in out.recipients]  # type: ignore[attr-defined]


def test_one_to_one_kem_ratchet_schedule(pq_world: World) -> None:
    """The responder's first answer is a KEM step (full header); later answers ratchet EC
    only with KEM indexes, until the side holding an unused KEM key of its peer has seen
    more than 42 messages since the last KEM step."""
    alice, bob = pq_world.device("alice"), pq_world.device("bob")
    first = alice.encrypt(bob.user, [bob], b"hello", Policy.DR_MESSAGE)
    (h,) = _headers(first)
    assert h.x3dh_init is not None and h.x3dh_init.ct and h.kem_indexes is None
    assert bob.receive(bob.user, alice, first).plaintext == b"hello"
    back = bob.encrypt(alice.user, [alice], b"hi", Policy.DR_MESSAGE)
    assert _headers(back)[0].kem_indexes is None  # forced KEM step: full ratchet keys
    assert alice.receive(alice.user, bob, back).plaintext == b"hi"
    again = alice.encrypt(bob.user, [bob], b"again", Policy.DR_MESSAGE)
    (h,) = _headers(again)
    assert h.kem_indexes is not None and h.x3dh_init is None  # EC step, indexes
    assert bob.receive(bob.user, alice, again).plaintext == b"again"
    for i in range(43):
        out = alice.encrypt(bob.user, [bob], b"bulk %d" % i, Policy.DR_MESSAGE)
        assert bob.receive(bob.user, alice, out).plaintext == b"bulk %d" % i
    answer = bob.encrypt(alice.user, [alice], b"after bulk", Policy.DR_MESSAGE)
    assert _headers(answer)[0].kem_indexes is not None  # bob used alice's KEM key already
    assert alice.receive(alice.user, bob, answer).plaintext == b"after bulk"
    kem_step = alice.encrypt(bob.user, [bob], b"kem step", Policy.DR_MESSAGE)
    assert _headers(kem_step)[0].kem_indexes is None  # chain > 42: a KEM step, full keys
    assert bob.receive(bob.user, alice, kem_step).status is PeerStatus.UNTRUSTED
    last = bob.encrypt(alice.user, [alice], b"last", Policy.DR_MESSAGE)
    assert _headers(last)[0].kem_indexes is not None  # alice's new KEM key was used: EC again
    assert alice.receive(alice.user, bob, last).plaintext == b"last"


def test_out_of_order_replay_and_tampering(pq_world: World) -> None:
    """Skipped keys are kept under lime 5.4's 24-byte chain index and used once; a replay and
    an altered message are refused with their precise reason and change nothing."""
    alice, bob = pq_world.device("alice"), pq_world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"0"))
    alice.receive(alice.user, bob, bob.encrypt(alice.user, [alice], b"r"))
    outs = [alice.encrypt(bob.user, [bob], b"m%d" % i) for i in range(4)]
    assert bob.receive(bob.user, alice, outs[3]).plaintext == b"m3"
    assert bob.receive(bob.user, alice, outs[1]).plaintext == b"m1"
    with pytest.raises(errors.ReplayError):
        bob.receive(bob.user, alice, outs[1])
    from pylime import diagnose

    (mine,) = outs[1].recipients
    reason = diagnose(pq_world.directory / "bob-1.sqlite3", bob.device_id, bob.user,
                      alice.device_id, mine.dr_message, outs[1].cipher_message)
    assert isinstance(reason, errors.ReplayError)  # pylime diagnose explains hybrids too
    dr = bytearray(outs[0].recipients[0].dr_message)
    dr[-1] ^= 1
    with pytest.raises(errors.BadTagError):
        bob.decrypt(bob.user, alice, bytes(dr), outs[0].cipher_message)
    assert bob.receive(bob.user, alice, outs[0]).plaintext == b"m0"
    assert bob.receive(bob.user, alice, outs[2]).plaintext == b"m2"
    chains = sqlite3.connect(pq_world.directory / "bob-1.sqlite3").execute(
        "SELECT DHr FROM DR_MSk_DHr").fetchall()
    assert all(len(c[0]) == 24 for c in chains)


def test_group_multi_device_every_policy(pq_world: World) -> None:
    """alice's device reaches her other device and two devices of bob and one of carol, in a
    group, under each policy in turn (the first one sets the sessions up); bob's first
    device answers to all."""
    a1, a2 = pq_world.device("alice"), pq_world.device("alice")
    b1, b2 = pq_world.device("bob"), pq_world.device("bob")
    carol = pq_world.device("carol")
    room = "sip:room@conference.example.org"
    others = [a2, b1, b2, carol]
    for policy in [*Policy, Policy.DR_MESSAGE]:
        text = b"policy %s " % policy.name.encode() + b"x" * 200
        out = a1.encrypt(room, others, text, policy)
        if policy is Policy.DR_MESSAGE:
            assert out.cipher_message == b""
        if policy is Policy.CIPHER_MESSAGE:
            assert len(out.cipher_message) == len(text) + 16
        for d in others:
            assert d.receive(room, a1, out).plaintext == text
        reply = b1.encrypt(room, [a1, a2, b2, carol], b"re " + text, policy)
        for d in (a1, a2, b2, carol):
            assert d.receive(room, b1, reply).plaintext == b"re " + text


def test_state_survives_reopening_the_database(pq_world: World) -> None:
    """A hybrid session and its KEM state are saved: a reopened manager goes on mid-chain."""
    alice, bob = pq_world.device("alice"), pq_world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"one"))
    pending = bob.encrypt(alice.user, [alice], b"two")
    path = pq_world.directory / "alice-0.sqlite3"
    alice.manager.close()
    alice.manager = ReferenceManager(path, pq_world.transport)
    assert alice.receive(alice.user, bob, pending).plaintext == b"two"
    out = alice.encrypt(bob.user, [bob], b"three")
    assert _headers(out)[0].kem_indexes is not None  # the flags came back from the database
    assert bob.receive(bob.user, alice, out).plaintext == b"three"


def test_no_opk_bundle_and_update(pq_world: World) -> None:
    """A device with no OPk left is reached through its SPk's KEM key; update() publishes a
    new batch of hybrid OPks the server then hands out."""
    bob = pq_world.factory(pq_world.directory / "bob-solo.sqlite3", transport=pq_world.transport)
    bob_id = "sip:bob@example.org;gr=solo"
    bob.create_user(bob_id, SERVER_URL, pq_world.curve, opk_batch=0)
    alice = pq_world.device("alice")
    out = alice.manager.encrypt(alice.device_id, "sip:bob@example.org", [bob_id], b"no opk")
    init = _headers(out)[0].x3dh_init
    assert init is not None and init.opk_id is None and init.ct
    assert bob.decrypt(bob_id, "sip:bob@example.org", alice.device_id,
                       out.recipients[0].dr_message).plaintext == b"no opk"
    bob.update(opk_low_limit=5, opk_batch=5)
    assert pq_world.transport.opk_count(bob_id) == 5
    carol = pq_world.device("carol")
    out = carol.manager.encrypt(carol.device_id, "sip:bob@example.org", [bob_id], b"opk")
    assert _headers(out)[0].x3dh_init.opk_id is not None  # type: ignore[union-attr]
    assert bob.decrypt(bob_id, "sip:bob@example.org", carol.device_id,
                       out.recipients[0].dr_message).plaintext == b"opk"
    bob.close()


def test_classic_and_post_quantum_users_share_a_database(tmp_path: pathlib.Path) -> None:
    """One reference database holds a c25519 user and a post-quantum user side by side."""
    with KeyServer() as ks:
        a = ReferenceManager(tmp_path / "a.sqlite3", ks)
        b = ReferenceManager(tmp_path / "b.sqlite3", ks)
        for curve, tag in ((Curve.C25519, "c"), (Curve.C25519MLK512, "pq")):
            a.create_user(f"sip:a@x;gr={tag}", SERVER_URL, curve, opk_batch=2)
            b.create_user(f"sip:b@x;gr={tag}", SERVER_URL, curve, opk_batch=2)
        for tag in ("c", "pq", "c", "pq"):
            out = a.encrypt(f"sip:a@x;gr={tag}", "sip:b@x", [f"sip:b@x;gr={tag}"], tag.encode())
            got = b.decrypt(f"sip:b@x;gr={tag}", "sip:b@x", f"sip:a@x;gr={tag}",
                            out.recipients[0].dr_message, out.cipher_message)
            assert got.plaintext == tag.encode()
        a.close()
        b.close()


# --------------------------------------------------------------------------- backends


@requires_lime
@PQ
def test_binding_refuses_post_quantum_curves_and_names_the_reference(
        pq_curve: Curve, tmp_path: pathlib.Path) -> None:
    """pylime.Manager (liblime 5.1.64) refuses a lime 5.4 algorithm with a typed error that
    is an InvalidCurveError and says the reference has it; nothing is created."""
    from pylime import Manager

    with KeyServer() as ks, Manager(tmp_path / "m.sqlite3", ks) as m:
        with pytest.raises(errors.CurveNotInBindingError, match="reference") as info:
            m.create_user("sip:a@x;gr=1", SERVER_URL, pq_curve)
        assert isinstance(info.value, errors.InvalidCurveError)
        assert not m.is_user("sip:a@x;gr=1")
        assert ks.opk_count("sip:a@x;gr=1") == 0


@PQ
def test_auto_backend_routes_post_quantum_curves_to_the_reference(
        pq_curve: Curve, tmp_path: pathlib.Path) -> None:
    """open_manager(backend="auto", curves=[a post-quantum one]) gives the reference, which
    creates the user; backend="lime" with such a curve is refused up front."""
    from pylime import open_manager

    with KeyServer() as ks:
        m = open_manager(tmp_path / "auto.sqlite3", ks, curves=[pq_curve])
        assert isinstance(m, ReferenceManager)
        m.create_user("sip:a@x;gr=1", SERVER_URL, pq_curve, opk_batch=1)
        assert m.is_user("sip:a@x;gr=1")
        m.close()
        with pytest.raises(errors.CurveNotInBindingError):
            open_manager(tmp_path / "lime.sqlite3", ks, backend="lime", curves=[pq_curve])
