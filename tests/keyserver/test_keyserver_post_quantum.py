"""The key server with lime 5.4's post-quantum algorithms (curve ids 3-5), on SQLite and
PostgreSQL: the same protocol version 0x01 and messages, EC ‖ KEM prekeys, served to
reference devices; liblime 5.1.64 clients keep working on the same server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from ks_servers import make_server

from pylime import POST_QUANTUM_CURVES, Curve, Policy
from pylime.keyserver import KeyServer
from pylime.keyserver import protocol as proto
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.auth import make_account
from pylime.keyserver.service import ServerThread
from pylime.reference import hybrid
from pylime.reference.manager import ReferenceManager
from pylime.reference.primitives import ed_keypair, ed_sign, ed_verify
from pylime.transport import HttpsTransport
from pylime.types import PeerStatus

REALM = "example.org"
URL = "https://keys.example.org/lime"
_ids = itertools.count(1)


@pytest.fixture(params=POST_QUANTUM_CURVES, ids=lambda c: c.name.lower())
def pq_curve(request: pytest.FixtureRequest) -> Curve:
    """Each lime 5.4 post-quantum algorithm."""
    return Curve(request.param)


def _device(name: str) -> str:
    return f"sip:{name}@{REALM};gr=urn:uuid:00000000-0000-4000-8000-{next(_ids):012d}"


def _register(curve: Curve, opks: int) -> tuple[proto.RegisterUser, bytes]:
    ik, seed = ed_keypair(curve)
    spk = hybrid.PreKey.generate(curve)
    keys = tuple(proto.OPk(hybrid.PreKey.generate(curve).public, 100 + i) for i in range(opks))
    return proto.RegisterUser(curve, ik, spk.public, ed_sign(curve, seed, spk.public), 42,
                              keys), ik


def test_sizes_are_ec_plus_kem_and_the_version_is_unchanged(pq_curve: Curve) -> None:
    """Protocol version 0x01, header curve byte 3/4/5, SPk/OPk = EC key ‖ KEM key; a registerUser
    parses back to itself."""
    msg, _ = _register(pq_curve, 2)
    raw = msg.to_bytes()
    assert raw[:3] == bytes([0x01, proto.MessageType.REGISTER_USER, int(pq_curve)])
    size = {Curve.C448MLK1024: 56 + 1568}.get(pq_curve, 32 + 800)
    assert proto.KEY_SIZES[pq_curve].x == size == len(msg.spk)
    assert proto.parse_request(raw) == msg


def test_a_prekey_of_the_classic_size_is_bad_size(pq_curve: Curve) -> None:
    """A registerUser whose keys have another algorithm's sizes is refused with bad_size."""
    msg, _ = _register(pq_curve, 0)
    short = proto.RegisterUser(pq_curve, msg.ik, msg.spk[:32], msg.spk_sig, 42).to_bytes()
    with KeyServer() as ks:
        answer = proto.parse_response(ks.handle(_device("x"), short))
    assert isinstance(answer, proto.ErrorMessage) and answer.code == proto.ErrorCode.BAD_SIZE


def test_stores_and_serves_hybrid_bundles(server: KeyServer, pq_curve: Curve) -> None:
    """On each storage backend: register with 2 OPks, then three bundle requests give an OPk,
    an OPk, then none (flag 0), each bundle's SPk signature verifying over EC ‖ KEM; postSPk
    and postOPks replace and add hybrid keys."""
    dev = _device("bob")
    msg, ik = _register(pq_curve, 2)
    assert isinstance(proto.parse_response(server.handle(dev, msg.to_bytes())), proto.Ack)
    assert server.opk_count(dev) == 2
    flags = []
    for _ in range(3):
        answer = proto.parse_response(
            server.handle(_device("alice"), proto.GetPeerBundle(pq_curve, (dev,)).to_bytes()))
        assert isinstance(answer, proto.PeerBundle)
        (bundle,) = answer.bundles
        assert bundle.ik == ik and bundle.spk == msg.spk and bundle.spk_id == 42
        assert ed_verify(pq_curve, ik, bundle.spk, bundle.spk_sig)
        flags.append(bundle.flag)
        if bundle.opk is not None:
            assert len(bundle.opk.public) == proto.KEY_SIZES[pq_curve].x
    assert flags == [proto.BundleFlag.WITH_OPK, proto.BundleFlag.WITH_OPK,
                     proto.BundleFlag.NO_OPK]
    extra = tuple(proto.OPk(hybrid.PreKey.generate(pq_curve).public, 7 + i) for i in range(3))
    assert isinstance(proto.parse_response(server.handle(
        dev, proto.PostOPks(pq_curve, extra).to_bytes())), proto.Ack)
    assert server.opk_count(dev) == 3
    assert server.storage.opk_ids(pq_curve, dev) == [7, 8, 9]


def test_post_quantum_and_classic_users_of_one_device(server: KeyServer, tmp_path: Path) -> None:
    """One device id registered on c25519 and on every hybrid keeps separate keys per curve
    (the storage keys users by curve and device id); each curve's bundle is its own."""
    dev = _device("multi")
    for curve in (Curve.C25519, *POST_QUANTUM_CURVES):
        m = ReferenceManager(tmp_path / f"{int(curve)}.sqlite3", server)
        m.create_user(dev, URL, curve, opk_batch=1)
        m.close()
    for curve in (Curve.C25519, *POST_QUANTUM_CURVES):
        answer = proto.parse_response(
            server.handle(_device("a"), proto.GetPeerBundle(curve, (dev,)).to_bytes()))
        assert isinstance(answer, proto.PeerBundle) and answer.curve == curve
        assert len(answer.bundles[0].spk or b"") == proto.KEY_SIZES[curve].x


def test_reference_devices_converse_through_each_backend(
        server: KeyServer, pq_curve: Curve, tmp_path: Path) -> None:
    """Reference devices register, fetch bundles and exchange messages through the key
    server on each storage backend; update() tops the OPks up."""
    alice = ReferenceManager(tmp_path / "alice.sqlite3", server)
    bob = ReferenceManager(tmp_path / "bob.sqlite3", server)
    a, b = _device("alice"), _device("bob")
    alice.create_user(a, URL, pq_curve, opk_batch=2)
    bob.create_user(b, URL, pq_curve, opk_batch=2)
    out = alice.encrypt(a, f"sip:bob@{REALM}", [b], b"hello")
    assert server.opk_count(b) == 1
    assert bob.decrypt(b, f"sip:bob@{REALM}", a, out.recipients[0].dr_message,
                       out.cipher_message).plaintext == b"hello"
    back = bob.encrypt(b, f"sip:alice@{REALM}", [a], b"hi", Policy.CIPHER_MESSAGE)
    got = alice.decrypt(a, f"sip:alice@{REALM}", b, back.recipients[0].dr_message,
                        back.cipher_message)
    assert (got.plaintext, got.status) == (b"hi", PeerStatus.UNTRUSTED)
    bob.update(opk_low_limit=3, opk_batch=2)
    assert server.opk_count(b) == 3
    alice.close()
    bob.close()


# --------------------------------------------------------------------------- over HTTPS


@pytest.fixture
def https_server(served_backend: str, tmp_path: Path,
                 tls_files: tuple[Path, Path]) -> Iterator[tuple[KeyServer, ServerThread]]:
    """The served key server (HTTPS, digest auth) on SQLite or PostgreSQL."""
    server = make_server(served_backend, tmp_path)
    for user in ("alice", "bob"):
        server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
    with ServerThread(ServerConfig(realm=REALM), server=server, cert=tls_files[0],
                      key=tls_files[1]) as thread:
        yield server, thread
    server.close()


def test_https_conversation_on_every_algorithm(
        https_server: tuple[KeyServer, ServerThread], tls_files: tuple[Path, Path],
        tmp_path: Path) -> None:
    """Over HTTPS with digest authentication, reference devices on each hybrid algorithm
    register and talk; the server holds their EC ‖ KEM keys."""
    server, thread = https_server
    cert = tls_files[0]
    for curve in POST_QUANTUM_CURVES:
        ta = HttpsTransport(cert, "alice", "alice-pw", timeout=10)
        tb = HttpsTransport(cert, "bob", "bob-pw", timeout=10)
        alice = ReferenceManager(tmp_path / f"a{int(curve)}.sqlite3", ta)
        bob = ReferenceManager(tmp_path / f"b{int(curve)}.sqlite3", tb)
        a, b = _device("alice"), _device("bob")
        alice.create_user(a, thread.url, curve, opk_batch=2)
        bob.create_user(b, thread.url, curve, opk_batch=2)
        assert server.storage.opk_ids(curve, b) is not None
        for i in range(3):
            out = alice.encrypt(a, f"sip:bob@{REALM}", [b], b"ping %d" % i)
            assert bob.decrypt(b, f"sip:bob@{REALM}", a, out.recipients[0].dr_message,
                               out.cipher_message).plaintext == b"ping %d" % i
            back = bob.encrypt(b, f"sip:alice@{REALM}", [a], b"pong %d" % i)
            assert alice.decrypt(a, f"sip:alice@{REALM}", b, back.recipients[0].dr_message,
                                 back.cipher_message).plaintext == b"pong %d" % i
        for m, t in ((alice, ta), (bob, tb)):
            m.close()
            t.close()


def test_export_import_keeps_hybrid_keys(server: KeyServer, pq_curve: Curve,
                                         tmp_path: Path) -> None:
    """`keyserver export`/`import` (pylime.keyserver.transfer) carry EC ‖ KEM prekeys
    unchanged: the copy serves the same bundle."""
    import io

    from pylime.keyserver import transfer

    dev = _device("bob")
    msg, _ = _register(pq_curve, 1)
    server.handle(dev, msg.to_bytes())
    out = io.StringIO()
    transfer.dump(server.storage, out)
    with KeyServer(tmp_path / "copy.sqlite3") as copy:
        transfer.load(copy.storage, out.getvalue().splitlines())
        ask = proto.GetPeerBundle(pq_curve, (dev,)).to_bytes()
        assert copy.handle(_device("a"), ask) == server.handle(_device("a"), ask)
