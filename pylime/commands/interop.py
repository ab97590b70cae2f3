"""``pylime interop``: liblime and the pure-Python reference, end to end over a real key server.

It starts pylime's key server on 127.0.0.1 (HTTPS with a fresh self-signed certificate,
digest authentication on, one random-password account per user, created for the run) — or
uses ``--against URL`` — and runs a matrix on both curves with devices on both backends:

=============  ==================================================================
one-to-one    every sender/receiver backend pair, both directions, statuses
multi-device  two devices per user, own other devices included
group         four devices, one message from each, under each encryption policy
out-of-order  six messages delivered shuffled (skipped message keys)
handoff       a liblime database continued by the reference, and vice versa
stale-session a retired session: a new X3DH, the old session's late messages still read
prekeys       one-time prekeys consumed by new peers, topped up by update()
trust         a peer trusted from its identity QR payload; lime then reports it TRUSTED
mitm          a key server swapping Bob's bundle: Mallory reads, Bob cannot, the ZRTP
              auxiliary secrets disagree → UNSAFE, unsafe sending refused, a genuine
              verification restores a TRUSTED, working session (pylime.linphone)
envelope      Linphone's multipart/encrypted chat messages in a room, replies
auth          the key server refuses a device without (or with wrong) credentials
=============  ==================================================================

On lime 5.4's post-quantum algorithms (c25519k512, c25519mlk512, c448mlk1024) only the
reference speaks them, so their rows run reference↔reference: one-to-one, multi-device,
group under each policy, out-of-order, stale-session and prekeys.

One table (or ``--json``) of results and timings; exit 0 only if every check passed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pylime import errors
from pylime.backend import (
    BACKENDS,
    available_backends,
    lime_library,
    missing_binding_message,
    open_manager,
    resolve_backend,
)
from pylime.commands.common import (
    ENV,
    EXIT_FAILURE,
    EXIT_KEYSERVER,
    CliFailure,
    JsonAwareCommand,
    Settings,
    console,
    curve_name,
    load_credentials,
    parse_curve,
    report_failure,
)
from pylime.types import Curve, PeerStatus, Policy

if TYPE_CHECKING:
    from pylime.backend import Backend

__all__ = ["Row", "interop", "preflight", "run_matrix"]

OPK_BATCH = 8  # prekeys per device: plenty for a run, cheap to generate
USERS = ("alice", "bob", "carol", "dave", "erin")
EMBEDDED_REALM = "example.org"


@dataclass(frozen=True)
class Row:
    """One check of the matrix."""

    scenario: str
    curve: str
    backends: str
    ok: bool
    seconds: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of a result row (docs/cli.md)."""
        return {"scenario": self.scenario, "curve": self.curve, "backends": self.backends,
                "ok": self.ok, "seconds": round(self.seconds, 4), "detail": self.detail}


class CheckFailed(Exception):
    """A check of the matrix did not hold (the message says which, never a secret)."""


def check(condition: bool, what: str) -> None:
    """Fail the current scenario with ``what`` unless ``condition``."""
    if not condition:
        raise CheckFailed(what)


# ------------------------------------------------------------------ the key server side


@dataclass
class Rig:
    """Where the run's devices register: the URL, the domain and one transport per user."""

    url: str
    domain: str
    ca_file: str | None
    timeout: float
    # user -> (username, password); empty = an open server. Kept out of the repr: secrets.
    accounts: dict[str, tuple[str, str]] = field(repr=False)
    single_account: str | None = None  # --against with one account: every device is its own
    _transports: dict[str, Any] = field(default_factory=dict)

    def device_id(self, user: str) -> str:
        """A fresh GRUU for ``user`` on the rig's domain."""
        name = self.single_account or user
        return f"sip:{name}@{self.domain};gr=urn:uuid:{uuid.uuid4()}"

    def user_uri(self, user: str) -> str:
        """The user's sip URI (a recipient user id)."""
        return f"sip:{user}@{self.domain}"

    def transport(self, user: str) -> Any:
        """The HTTPS transport of ``user``'s account (kept alive for the run)."""
        from pylime.transport.https import HttpsTransport

        if user not in self._transports:
            account = self.accounts.get(self.single_account or user)
            self._transports[user] = HttpsTransport(
                ca_file=self.ca_file, timeout=self.timeout,
                username=account[0] if account else None,
                password=account[1] if account else None)
        return self._transports[user]

    def close(self) -> None:
        """Close every transport."""
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()


@contextmanager
def embedded_server(workdir: Path, timeout: float) -> Iterator[Rig]:
    """pylime's key server on 127.0.0.1 (HTTPS, self-signed, digest auth, accounts for the run)."""
    from pylime.keyserver import KeyServer, ServerConfig, make_account
    from pylime.keyserver.service import ServerThread
    from pylime.keyserver.tls import generate_self_signed

    cert, key = workdir / "keyserver-cert.pem", workdir / "keyserver-key.pem"
    generate_self_signed(cert, key, ("localhost", "127.0.0.1"))
    accounts = {user: (user, secrets.token_urlsafe(18)) for user in USERS}
    # A rig, not a deployment: one run takes hundreds of OPks per account and its scenarios
    # count the OPks they use, so the per-account OPk budget is off. The quotas stay.
    server = KeyServer(workdir / "keys.sqlite3", opk_budget=0)
    try:
        for username, password in accounts.values():
            server.storage.put_account(make_account(username, EMBEDDED_REALM, password))
        thread = ServerThread(ServerConfig(realm=EMBEDDED_REALM), server=server, cert=cert,
                              key=key, log_level="critical")
        try:
            thread.start()
        except RuntimeError as exc:
            raise CliFailure(f"the embedded key server did not start ({exc})",
                             EXIT_KEYSERVER) from None
        rig = Rig(thread.url, EMBEDDED_REALM, str(cert), timeout, accounts)
        try:
            yield rig
        finally:
            rig.close()
            thread.stop()
    finally:
        server.close()


# ------------------------------------------------------------------ devices


def _manager(backend: str, path: Path, transport: Any) -> Any:
    """A manager of the named backend ("lime" or "reference") on ``path``."""
    return open_manager(path, transport, backend=cast("Backend", backend))


@dataclass
class Dev:
    """A device of the run: its GRUU, user, backend and manager on its own database."""

    device_id: str
    user: str
    backend: str
    path: Path
    manager: Any


class Scene:
    """What one scenario needs: the rig, a curve, and devices closed when it ends."""

    def __init__(self, rig: Rig, curve: Curve, workdir: Path, label: str = "scene") -> None:
        self.rig, self.curve, self.workdir, self.label = rig, curve, workdir, label
        self.devices: list[Dev] = []
        self.extra: list[Any] = []
        self._count = 0

    def db_path(self, who: str) -> Path:
        """A new database file, named after the case and its owner (see ``--keep``)."""
        self._count += 1
        return self.workdir / f"{self.label}-{self._count:02d}-{who}.sqlite3"

    def device(self, user: str, backend: str) -> Dev:
        """Create a device of ``user`` on ``backend`` and register it on the key server."""
        device_id = self.rig.device_id(user)
        path = self.db_path(f"{user}-{backend}")
        manager = _manager(backend, path, self.rig.transport(user))
        dev = Dev(device_id, user, backend, path, manager)
        self.devices.append(dev)
        manager.create_user(device_id, self.rig.url, self.curve, opk_batch=OPK_BATCH)
        return dev

    def reopen(self, dev: Dev, backend: str, transport: Any = None) -> None:
        """Close ``dev``'s manager and continue its database on ``backend``."""
        dev.manager.close()
        dev.manager = _manager(backend, dev.path,
                               transport or self.rig.transport(dev.user))
        dev.backend = backend

    def close(self) -> None:
        """Close every manager of the scenario, and take its devices off the key server.

        The server-side deletion is a bare deleteUser, best effort: the local databases stay
        whole (``--keep``), and a run leaves no devices behind on someone else's server nor
        fills an account's device quota.
        """
        from pylime.keyserver.protocol import DeleteUser

        for dev in self.devices:
            dev.manager.close()
            try:
                self.rig.transport(dev.user).post(
                    self.rig.url, dev.device_id, DeleteUser(self.curve).to_bytes())
            except Exception:  # noqa: BLE001, S110 - cleanup only: the row already has its verdict
                pass
        for thing in self.extra:
            thing.close()


def send(sender: Dev, ruid: str, to: Sequence[Dev], text: bytes,
         policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE) -> Any:
    """Encrypt from ``sender`` to the devices ``to``; every recipient must be encrypted to."""
    out = sender.manager.encrypt(sender.device_id, ruid, [d.device_id for d in to], text,
                                 policy)
    failed = [r.device_id for r in out.recipients if r.status is PeerStatus.FAIL]
    check(not failed, f"{sender.backend} could not encrypt to {len(failed)} device(s)")
    return out


def receive(out: Any, sender: Dev, ruid: str, dev: Dev, text: bytes,
            expect: PeerStatus | None = None) -> None:
    """``dev`` decrypts its part of ``out`` and must read ``text`` (and see ``expect``)."""
    (mine,) = [r for r in out.recipients if r.device_id == dev.device_id]
    try:
        status, plain = dev.manager.decrypt(dev.device_id, ruid, sender.device_id,
                                            mine.dr_message, out.cipher_message)
    except errors.DecryptionError as exc:
        raise CheckFailed(f"{dev.backend} could not decrypt from {sender.backend} "
                          f"({type(exc).__name__})") from None
    check(plain == text, f"{dev.backend} read another plaintext than {sender.backend} sent")
    if expect is not None:
        check(status is expect, f"{dev.backend} saw sender status {status.name}, "
                                f"expected {expect.name}")


def exchange(sender: Dev, ruid: str, to: Sequence[Dev], text: bytes,
             policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE,
             expect: PeerStatus | None = None) -> None:
    """Send and deliver to everyone."""
    out = send(sender, ruid, to, text, policy)
    for dev in to:
        receive(out, sender, ruid, dev, text, expect)


# ------------------------------------------------------------------ scenarios


def one_to_one(scene: Scene, a: str, b: str) -> str:
    """Alice (backend a) and Bob (backend b) talk: three messages, statuses as lime says."""
    alice, bob = scene.device("alice", a), scene.device("bob", b)
    ruid_bob, ruid_alice = scene.rig.user_uri("bob"), scene.rig.user_uri("alice")
    exchange(alice, ruid_bob, [bob], b"Hello Bob", expect=PeerStatus.UNKNOWN)
    # Alice stored Bob's device when she fetched his bundle: he is no longer unknown to her.
    exchange(bob, ruid_alice, [alice], b"Hi Alice", expect=PeerStatus.UNTRUSTED)
    exchange(alice, ruid_bob, [bob], "d\u00e9j\u00e0 vu".encode(), expect=PeerStatus.UNTRUSTED)
    return "3 messages, statuses UNKNOWN then UNTRUSTED"


def multi_device(scene: Scene, backends: Sequence[str]) -> str:
    """Two devices per user on alternating backends; own other devices read too."""
    b0, b1 = backends[0], backends[-1]
    alice1, alice2 = scene.device("alice", b0), scene.device("alice", b1)
    bob1, bob2 = scene.device("bob", b1), scene.device("bob", b0)
    ruid_bob, ruid_alice = scene.rig.user_uri("bob"), scene.rig.user_uri("alice")
    exchange(alice1, ruid_bob, [bob1, bob2, alice2], b"to both of Bob's devices")
    exchange(bob2, ruid_alice, [alice1, alice2, bob1], b"Bob replies from his other device")
    exchange(alice2, ruid_bob, [bob1, bob2, alice1], b"and Alice from her tablet")
    return "4 devices, 3 messages, 9 decryptions"


def group(scene: Scene, backends: Sequence[str], policy: Policy) -> str:
    """Four devices in a room; each sends once under ``policy``; everyone reads everything."""
    devs = [scene.device(user, backends[i % len(backends)])
            for i, user in enumerate(("alice", "bob", "carol", "dave"))]
    room = f"sip:chatroom-{uuid.uuid4().hex[:10]}@conference.{scene.rig.domain}"
    long = b"A longer message, so the policies choose differently. " * 8
    for n, sender in enumerate(devs):
        text = long if n % 2 else f"short {n}".encode()
        exchange(sender, room, [d for d in devs if d is not sender], text, policy)
    return f"4 devices, 4 messages, 12 decryptions ({policy.name})"


def out_of_order(scene: Scene, a: str, b: str) -> str:
    """Six messages decrypted shuffled, then a reply: skipped message keys on both sides."""
    alice, bob = scene.device("alice", a), scene.device("bob", b)
    ruid_bob, ruid_alice = scene.rig.user_uri("bob"), scene.rig.user_uri("alice")
    exchange(alice, ruid_bob, [bob], b"opening")
    exchange(bob, ruid_alice, [alice], b"ack")
    texts = [f"message {i}".encode() for i in range(6)]
    outs = [send(alice, ruid_bob, [bob], t) for t in texts]
    order = [4, 0, 5, 2, 1, 3]
    for i in order:
        receive(outs[i], alice, ruid_bob, bob, texts[i])
    replay = outs[order[0]]
    try:
        receive(replay, alice, ruid_bob, bob, texts[order[0]])
    except CheckFailed:
        pass
    else:
        raise CheckFailed(f"{bob.backend} decrypted a replayed message")
    exchange(bob, ruid_alice, [alice], b"all six read")
    return f"order {order}, replay refused"


def handoff(scene: Scene, first: str, then: str) -> str:
    """Alice's database moves from backend ``first`` to ``then`` mid-conversation."""
    alice = scene.device("alice", first)
    bob = scene.device("bob", then)
    ruid_bob, ruid_alice = scene.rig.user_uri("bob"), scene.rig.user_uri("alice")
    exchange(alice, ruid_bob, [bob], b"before the move")
    exchange(bob, ruid_alice, [alice], b"reply before the move")
    in_flight = send(bob, ruid_alice, [alice], b"sent while Alice moves")
    skipped_over = send(bob, ruid_alice, [alice], b"read after the move")
    scene.reopen(alice, then)
    receive(skipped_over, bob, ruid_alice, alice, b"read after the move")
    receive(in_flight, bob, ruid_alice, alice, b"sent while Alice moves")
    exchange(alice, ruid_bob, [bob], b"after the move")
    carol = scene.device("carol", first)
    exchange(alice, scene.rig.user_uri("carol"), [carol], b"a new session after the move")
    return f"{first} database continued by {then}: old sessions, skipped keys, new X3DH"


def _has_x3dh_init(dr_message: bytes) -> bool:
    """Bit 0 of a DR header's type byte: the message carries an X3DH init (a new session)."""
    return len(dr_message) > 1 and bool(dr_message[1] & 0x01)


def stale_session(scene: Scene, a: str, b: str) -> str:
    """After stale_sessions a new X3DH starts; messages of the old session still decrypt."""
    alice, bob = scene.device("alice", a), scene.device("bob", b)
    ruid_bob, ruid_alice = scene.rig.user_uri("bob"), scene.rig.user_uri("alice")
    exchange(alice, ruid_bob, [bob], b"first session")
    exchange(bob, ruid_alice, [alice], b"answer: the session is established")
    late = send(alice, ruid_bob, [bob], b"old session, delivered late")
    check(not _has_x3dh_init(late.recipients[0].dr_message), "an established session "
          "still sends X3DH inits")
    alice.manager.stale_sessions(alice.device_id, bob.device_id)
    fresh = send(alice, ruid_bob, [bob], b"new session")
    check(_has_x3dh_init(fresh.recipients[0].dr_message),
          "no new X3DH after stale_sessions")
    receive(fresh, alice, ruid_bob, bob, b"new session")
    receive(late, alice, ruid_bob, bob, b"old session, delivered late")
    exchange(bob, ruid_alice, [alice], b"reply on the new session")
    return "new X3DH after stale_sessions; the old session still decrypts"


def _local_opks(path: Path) -> int:
    """Active one-time prekeys a database holds (X3DH_OPK rows with status 1; same schema on
    both backends)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM X3DH_OPK WHERE Status = 1").fetchone()[0])
    finally:
        conn.close()


def prekeys(scene: Scene, a: str, b: str) -> str:
    """Peers consume Bob's one-time prekeys; update() tops them up; new peers still connect."""
    bob = scene.device("bob", b)
    held = _local_opks(bob.path)
    check(held == OPK_BATCH, f"{b} holds {held} one-time prekeys, not {OPK_BATCH}")
    ruid_bob, ruid_alice = scene.rig.user_uri("bob"), scene.rig.user_uri("alice")
    senders = [scene.device("alice", a) for _ in range(3)]
    for n, alice in enumerate(senders):
        exchange(alice, ruid_bob, [bob], f"from Alice's device {n}".encode())
    check(_local_opks(bob.path) == held - len(senders),
          f"{b} did not retire the {len(senders)} one-time prekeys used (or the key server "
          "withheld them: a pylime key server serves bundles without OPk once an account "
          "has taken its --opk-budget)")
    remaining = held - len(senders)
    bob.manager.update(OPK_BATCH + 4, 4)  # the server holds fewer than OPK_BATCH + 4
    topped = _local_opks(bob.path)
    expected = remaining + max(4, OPK_BATCH + 4 - remaining)
    check(topped == expected, f"update() left {topped} one-time prekeys, not {expected} ({b})")
    late = scene.device("alice", a)
    exchange(late, ruid_bob, [bob], b"after the top-up")
    exchange(bob, ruid_alice, [late, *senders], b"Bob answers all four")
    return f"{len(senders)} prekeys used, {topped - remaining} uploaded by update()"


def trust(scene: Scene, a: str, b: str) -> str:
    """Bob trusts Alice from her identity QR payload; lime then reports her TRUSTED."""
    from pylime.linphone import fingerprint, parse_qr_payload, qr_payload, trust_scanned

    alice, bob = scene.device("alice", a), scene.device("bob", b)
    ruid_bob = scene.rig.user_uri("bob")
    exchange(alice, ruid_bob, [bob], b"hello", expect=PeerStatus.UNKNOWN)
    key = alice.manager.identity_key(alice.device_id)
    payload = qr_payload(alice.device_id, key, scene.curve)
    check(parse_qr_payload(payload).fingerprint == fingerprint(key, scene.curve),
          "the QR payload does not carry the device's key")
    status = trust_scanned(bob.manager, payload)
    check(status is PeerStatus.TRUSTED, f"after the scan Alice is {status.name}")
    exchange(alice, ruid_bob, [bob], b"now verified", expect=PeerStatus.TRUSTED)
    bob.manager.set_peer_status(alice.device_id, PeerStatus.UNTRUSTED)
    exchange(alice, ruid_bob, [bob], b"trust withdrawn", expect=PeerStatus.UNTRUSTED)
    return "QR scan → TRUSTED as reported by decrypt; untrust → UNTRUSTED"


class SwappingTransport:
    """Mallory's key server: honest, except that Bob's bundle is swapped for Mallory's."""

    def __init__(self, honest: Any, mallory: Any, victim: str) -> None:
        self.honest, self.mallory, self.victim = honest, mallory, victim
        self.active = True
        self.swapped = 0

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Forward; answer a getPeerBundle for the victim with Mallory's bundle."""
        from pylime.keyserver.protocol import (
            GetPeerBundle,
            PeerBundle,
            parse_request,
            parse_response,
        )

        status, answer = self.honest.post(url, sender, body)
        request = parse_request(body)
        if (not self.active or not isinstance(request, GetPeerBundle)
                or self.victim not in request.device_ids or status != 200):
            return status, answer
        honest = parse_response(answer)
        _, raw = self.mallory.post(url, self.victim,
                                   GetPeerBundle(request.curve, (self.victim,)).to_bytes())
        forged = parse_response(raw)
        if not isinstance(honest, PeerBundle) or not isinstance(forged, PeerBundle):
            return status, answer
        self.swapped += 1
        bundles = tuple(forged.bundles[0] if b.device_id == self.victim else b
                        for b in honest.bundles)
        return status, PeerBundle(honest.curve, bundles).to_bytes()


def mitm(scene: Scene, a: str, b: str) -> str:
    """A man in the middle is detected through ZRTP, then cleared by a genuine verification."""
    from pylime.keyserver import KeyServer
    from pylime.linphone import (
        AuxSecretStatus,
        IdentityKey,
        SdpIdentity,
        SecurityLevel,
        UnsafeConversationError,
        apply_sas_verdict,
        aux_secret,
        conversation_security_level,
        decrypt_message,
        encrypt_message,
    )
    from pylime.linphone.zrtp import aux_secret_id, check_aux_secret

    curve = scene.curve
    bob = scene.device("bob", b)
    mallory_server = KeyServer()
    scene.extra.append(mallory_server)
    evil = SwappingTransport(scene.rig.transport("alice"), mallory_server, bob.device_id)
    alice_id = scene.rig.device_id("alice")
    alice_mgr = _manager(a, scene.db_path(f"alice-{a}"), evil)
    alice = Dev(alice_id, "alice", a, Path(alice_mgr.path), alice_mgr)
    scene.devices.append(alice)
    alice_mgr.create_user(alice_id, scene.rig.url, curve, opk_batch=OPK_BATCH)
    mallory = _manager(b, scene.db_path(f"mallory-{b}"), mallory_server)
    scene.extra.append(mallory)
    mallory.create_user(bob.device_id, scene.rig.url, curve, opk_batch=OPK_BATCH)
    ik_alice = alice_mgr.identity_key(alice_id)
    ik_bob = bob.manager.identity_key(bob.device_id)
    ik_mallory = mallory.identity_key(bob.device_id)
    room = f"sip:chatroom-{uuid.uuid4().hex[:10]}@conference.{scene.rig.domain}"
    delivered = {"From": f"<{room}>"}

    out = encrypt_message(alice_mgr, alice_id, room, [bob.device_id], "for Bob only")
    check(evil.swapped == 1, "the key server did not swap Bob's bundle")
    stolen = decrypt_message(mallory, bob.device_id, out.body.body, {**out.headers, **delivered})
    check(stolen.text == "for Bob only", "Mallory could not read the swapped message")
    try:
        decrypt_message(bob.manager, bob.device_id, out.body.body, {**out.headers, **delivered})
    except errors.DecryptionError:
        pass
    else:
        raise CheckFailed("Bob decrypted a message encrypted to Mallory's keys")

    def sdp(key: bytes) -> SdpIdentity:
        return SdpIdentity.from_keys([IdentityKey(int(curve), key)], legacy_algo=curve)

    def aux_status(mine: bytes | None, theirs: bytes | None) -> AuxSecretStatus:
        h3 = os.urandom(32)
        return check_aux_secret(mine, h3, aux_secret_id(theirs or b"", h3))

    # A call relayed by Mallory: Alice sees Mallory's Ik in "Bob's" SDP.
    at_alice = aux_secret(sdp(ik_alice), sdp(ik_mallory), outgoing=True)
    at_bob = aux_secret(sdp(ik_bob), sdp(ik_alice), outgoing=False)
    status = apply_sas_verdict(alice_mgr, bob.device_id, verified=True,
                               aux_status=aux_status(at_alice, at_bob),
                               peer_keys=[IdentityKey(int(curve), ik_mallory)], curve=curve)
    check(status is PeerStatus.UNSAFE, f"after the mismatch Bob is {status.name}, not UNSAFE")
    level = conversation_security_level(alice_mgr, alice_id, [bob.device_id])
    check(level is SecurityLevel.UNSAFE, f"the conversation is {level.name}, not UNSAFE")
    try:
        encrypt_message(alice_mgr, alice_id, room, [bob.device_id], "again")
    except UnsafeConversationError:
        pass
    else:
        raise CheckFailed("sending to an unsafe device was not refused")

    # A genuine call: the auxiliary secrets agree, the verified key replaces Mallory's.
    evil.active = False
    at_alice = aux_secret(sdp(ik_alice), sdp(ik_bob), outgoing=True)
    status = apply_sas_verdict(alice_mgr, bob.device_id, verified=True,
                               aux_status=aux_status(at_alice, at_bob),
                               peer_keys=[IdentityKey(int(curve), ik_bob)], curve=curve)
    check(status is PeerStatus.TRUSTED, f"after verification Bob is {status.name}")
    out = encrypt_message(alice_mgr, alice_id, room, [bob.device_id], "now for the real Bob")
    msg = decrypt_message(bob.manager, bob.device_id, out.body.body, {**out.headers, **delivered})
    check(msg.text == "now for the real Bob", "the real Bob could not read after verification")
    return "swapped bundle read by Mallory only; aux secret mismatch → UNSAFE; cleared"


def envelope(scene: Scene, backends: Sequence[str]) -> str:
    """Linphone chat messages in a room across backends: text, sender, IMDN id, replies."""
    from pylime.linphone import decrypt_message, encrypt_message, parse_envelope

    b0, b1 = backends[0], backends[-1]
    alice1, alice2 = scene.device("alice", b0), scene.device("alice", b1)
    bob, carol = scene.device("bob", b1), scene.device("carol", b0)
    room = (f"sip:chatroom-{uuid.uuid4().hex[:10]}@conference.{scene.rig.domain}"
            f";gr=urn:uuid:{uuid.uuid4()}")
    everyone = [alice1, alice2, bob, carol]
    count = 0
    for sender, text, deflate in ((alice1, "Hello room \u2728", True),
                                  (bob, "Bob's reply " * 40, False),
                                  (carol, "Carol: " + "x" * 600, True)):
        out = encrypt_message(sender.manager, sender.device_id, room,
                              [d.device_id for d in everyone], text, deflate=deflate)
        parsed = parse_envelope(out.body.content_type, out.body.body, out.body.content_encoding)
        check(len(parsed.device_ids) == 3, "the envelope does not address the 3 other devices")
        for dev in everyone:
            if dev is sender:
                continue
            msg = decrypt_message(dev.manager, dev.device_id, out.body.body,
                                  {**out.headers, "From": f"<{room}>"})
            check(msg.text == text and msg.sender == sender.device_id
                  and msg.message_id == out.message_id,
                  f"{dev.backend} read another message than {sender.backend} sent")
            count += 1
    return f"3 envelopes, {count} decryptions, deflated and plain bodies"


def auth(scene: Scene) -> str:
    """The key server refuses a device with no credentials, and with a wrong password."""
    from pylime.reference.manager import ReferenceManager
    from pylime.transport.https import HttpsTransport

    refused = 0
    for username, password in ((None, None), ("alice", "not-the-password")):
        transport = HttpsTransport(ca_file=scene.rig.ca_file, username=username,
                                   password=password, timeout=scene.rig.timeout)
        scene.extra.append(transport)
        manager = ReferenceManager(scene.db_path("intruder-reference"),
                                   transport)
        scene.extra.append(manager)
        try:
            manager.create_user(scene.rig.device_id("alice"), scene.rig.url, scene.curve,
                                opk_batch=1)
        except errors.KeyServerHTTPError as exc:
            check(exc.status == 401, f"refused with HTTP {exc.status}, not 401")
            refused += 1
        else:
            raise CheckFailed("the key server accepted a device without valid credentials")
    return f"{refused} unauthenticated registrations refused with 401"


# ------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Case:
    """A scenario to run: name, curve, backends label and the function."""

    scenario: str
    curve: Curve
    backends: str
    run: Callable[[Scene], str]


def plan(curves: Sequence[Curve], backends: Sequence[str], *, with_auth: bool) -> list[Case]:
    """Every case of the matrix, in the order they run."""
    cases: list[Case] = []
    pairs = [(a, b) for a in backends for b in backends]
    cross = [(a, b) for a, b in pairs if a != b] or pairs[:1]
    mixed = "+".join(backends)
    for curve in curves:
        if curve.is_post_quantum:
            if "reference" in backends:
                cases += _post_quantum_cases(curve)
            continue
        for a, b in pairs:
            cases.append(Case("one-to-one", curve, f"{a}→{b}",
                              lambda s, a=a, b=b: one_to_one(s, a, b)))  # type: ignore[misc]
        cases.append(Case("multi-device", curve, mixed, lambda s: multi_device(s, backends)))
        for policy in Policy:
            cases.append(Case(f"group {policy.name.lower()}", curve, mixed,
                              lambda s, p=policy: group(s, backends, p)))  # type: ignore[misc]
        for a, b in cross:
            cases.append(Case("out-of-order", curve, f"{a}→{b}",
                              lambda s, a=a, b=b: out_of_order(s, a, b)))  # type: ignore[misc]
        for a, b in cross:
            cases.append(Case("handoff", curve, f"{a}⇒{b}",
                              lambda s, a=a, b=b: handoff(s, a, b)))  # type: ignore[misc]
        for a, b in cross:
            cases.append(Case("stale-session", curve, f"{a}→{b}",
                              lambda s, a=a, b=b: stale_session(s, a, b)))  # type: ignore[misc]
            cases.append(Case("prekeys", curve, f"{a}→{b}",
                              lambda s, a=a, b=b: prekeys(s, a, b)))  # type: ignore[misc]
            cases.append(Case("trust", curve, f"{a}→{b}",
                              lambda s, a=a, b=b: trust(s, a, b)))  # type: ignore[misc]
        for a, b in cross:
            cases.append(Case("mitm", curve, f"{a}→{b}",
                              lambda s, a=a, b=b: mitm(s, a, b)))  # type: ignore[misc]
        cases.append(Case("envelope", curve, mixed, lambda s: envelope(s, backends)))
    if with_auth:
        cases.append(Case("auth", curves[0], "reference", auth))
    return cases


def _post_quantum_cases(curve: Curve) -> list[Case]:
    """The rows of a post-quantum algorithm: the reference with itself (liblime 5.1.64 has none)."""
    ref = "reference"
    pair = f"{ref}→{ref}"
    cases = [Case("one-to-one", curve, pair, lambda s: one_to_one(s, ref, ref)),
             Case("multi-device", curve, ref, lambda s: multi_device(s, [ref]))]
    for policy in Policy:
        cases.append(Case(f"group {policy.name.lower()}", curve, ref,
                          lambda s, p=policy: group(s, [ref], p)))  # type: ignore[misc]
    cases += [Case("out-of-order", curve, pair, lambda s: out_of_order(s, ref, ref)),
              Case("stale-session", curve, pair, lambda s: stale_session(s, ref, ref)),
              Case("prekeys", curve, pair, lambda s: prekeys(s, ref, ref))]
    return cases


def _run_case(case: Case, rig: Rig, workdir: Path, index: int = 0) -> tuple[Row, bool]:
    """Run one case with fresh devices; the flag says the key server became unreachable."""
    slug = "".join(c if c.isalnum() else "-" for c in case.scenario)
    scene = Scene(rig, case.curve, workdir, f"{index:02d}-{slug}-{curve_name(case.curve)}")
    start = time.perf_counter()
    lost = False
    try:
        detail, ok = case.run(scene), True
    except CheckFailed as exc:
        detail, ok = str(exc), False
    except errors.TransportError as exc:
        detail, ok, lost = f"key server unreachable: {exc}", False, True
    except Exception as exc:  # noqa: BLE001 - any failure is a failed row, named by its type
        detail, ok = f"{type(exc).__name__}: {exc}", False
    finally:
        scene.close()
    return Row(case.scenario, curve_name(case.curve), case.backends, ok,
               time.perf_counter() - start, detail), lost


def preflight(rig: Rig, workdir: Path) -> None:
    """Register and delete one device, so that a refusing or unreachable key server stops the
    run at once with its own error (exit 3) instead of failing every row."""
    from pylime.reference.manager import ReferenceManager

    device_id = rig.device_id("alice")
    with ReferenceManager(workdir / "preflight.sqlite3", rig.transport("alice")) as manager:
        manager.create_user(device_id, rig.url, Curve.C25519, opk_batch=1)
        manager.delete_user(device_id)


def run_matrix(rig: Rig, workdir: Path, cases: Sequence[Case],
               progress: Progress | None = None) -> tuple[list[Row], bool]:
    """Run each case in order (each with fresh devices): one row per case run, and whether
    the run stopped early because the key server became unreachable."""
    rows: list[Row] = []
    task = progress.add_task("interop", total=len(cases)) if progress else None
    for index, case in enumerate(cases, 1):
        if progress is not None and task is not None:
            progress.update(task, description=f"{case.scenario} {curve_name(case.curve)} "
                                              f"{case.backends}")
        row, lost = _run_case(case, rig, workdir, index)
        rows.append(row)
        if lost:
            return rows, True
        if progress is not None and task is not None:
            progress.advance(task)
    return rows, False


def _table(rows: Sequence[Row], server: str, elapsed: float) -> Table:
    passed = sum(r.ok for r in rows)
    table = Table(title=f"pylime interop against {server}",
                  caption=f"{passed}/{len(rows)} passed in {elapsed:.1f} s")
    table.add_column("scenario")
    table.add_column("curve")
    table.add_column("backends")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for r in rows:
        table.add_row(r.scenario, r.curve, r.backends,
                      "[green]pass[/]" if r.ok else "[bold red]FAIL[/]",
                      f"{r.seconds * 1000:.0f} ms", r.detail)
    return table


def _choose_backends(wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """The backends to run and notes for the report.

    Without --backend: every backend this installation has, with a note where liblime's
    binding is absent (the matrix then runs reference to reference). A --backend it lacks is
    an error.
    """
    notes: list[str] = []
    if wanted:
        for name in wanted:
            resolve_backend(name)  # BackendUnavailableError for an absent binding
        return list(dict.fromkeys(wanted)), notes
    chosen = list(available_backends())
    if "lime" not in chosen:
        notes.append("liblime is absent: the matrix runs on the pure-Python reference only. "
                     + missing_binding_message())
    return chosen, notes


@click.command("interop", cls=JsonAwareCommand)
@click.option("--against", default=None, metavar="URL",
              help="Test this key server instead of starting one (HTTPS).")
@click.option("--ca-file", envvar=ENV["ca_file"], default=None,
              type=click.Path(exists=True, dir_okay=False), metavar="PEM",
              help=f"--against: trust this certificate [env {ENV['ca_file']}].")
@click.option("--credentials", envvar=ENV["credentials"], default=None,
              type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="--against: the account file [env PYLIME_CREDENTIALS; else "
                   "PYLIME_USERNAME/PYLIME_PASSWORD; none: an open server].")
@click.option("--realm", default=EMBEDDED_REALM, show_default=True, metavar="DOMAIN",
              help="--against: the SIP domain of the run's device ids (the account's realm).")
@click.option("--curve", "curves", multiple=True,
              type=click.Choice(["c25519", "c448", "c25519k512", "c25519mlk512", "c448mlk1024"]),
              help="Run on this curve only (repeat) [default: all five, the post-quantum "
                   "three on the reference only; with --against: c25519 and c448].")
@click.option("--backend", "backends", multiple=True, type=click.Choice(BACKENDS),
              help="Run this backend only (repeat) [default: both].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--keep", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Keep the run's databases (one per device) in DIR, e.g. for "
                   "`pylime diagnose` [default: a temporary directory, removed].")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for the key server.")
def interop(against: str | None, ca_file: str | None, credentials: str | None, realm: str,
            curves: tuple[str, ...], backends: tuple[str, ...], as_json: bool,
            keep: str | None, timeout: float) -> None:
    """The main job: liblime and the reference end to end over a real key server."""
    settings = Settings(db="", server=against, backend="", json=as_json, ca_file=ca_file,
                        credentials=credentials, timeout=timeout)
    # A key server someone else runs may predate lime 5.4: its post-quantum rows on request.
    default = ("c25519", "c448") if against else ("c25519", "c448", "c25519k512",
                                                   "c25519mlk512", "c448mlk1024")
    chosen_curves = [parse_curve(c) for c in (curves or default)]
    try:
        chosen_backends, notes = _choose_backends(backends)
        if notes and not as_json:
            for note in notes:
                click.echo(f"pylime: note: {note}", err=True)
        rows, lost, elapsed, server = _interop(settings, against, realm, chosen_curves,
                                               chosen_backends, keep)
    except click.exceptions.Exit:
        raise
    except errors.TransportError as exc:
        report_failure(settings, CliFailure(f"the key server is unreachable: {exc}", EXIT_KEYSERVER))
    except (errors.LimeError, CliFailure, click.UsageError, OSError, RuntimeError) as exc:
        report_failure(settings, exc)
    ok = all(r.ok for r in rows) and not lost
    if as_json:
        click.echo(json.dumps({"ok": ok, "server": server, "embedded": against is None,
                               "seconds": round(elapsed, 3),
                               "passed": sum(r.ok for r in rows), "total": len(rows),
                               "backends": chosen_backends, "lime": _lime_json(),
                               "notes": notes,
                               "results": [r.to_json() for r in rows]}))
    else:
        where = f"embedded key server {server}" if against is None else server
        console().print(_table(rows, where, elapsed))
    if not ok:
        raise click.exceptions.Exit(EXIT_KEYSERVER if lost else EXIT_FAILURE)


def _lime_json() -> dict[str, str] | None:
    """The liblime the run used, for the JSON report (null where the binding is absent)."""
    library = lime_library()
    return None if library is None else {"version": library.version, "path": library.path}


def _interop(settings: Settings, against: str | None, realm: str, curves: list[Curve],
             backends: list[str], keep: str | None) -> tuple[list[Row], bool, float, str]:
    start = time.perf_counter()
    lime_log = logging.getLogger("pylime.lime")
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # The mitm and out-of-order scenarios make lime log the failures they provoke on
        # purpose; `pylime -v interop` shows them.
        lime_log.setLevel(logging.CRITICAL)
    with ExitStack() as stack:
        if keep is None:
            workdir = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="pylime-interop-")))
        else:
            workdir = Path(keep)
            workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if against is None:
            rig = stack.enter_context(embedded_server(workdir, settings.timeout))
            server = rig.url
        else:
            account = load_credentials(settings)
            accounts = {account[0]: account} if account else {}
            rig = Rig(against, realm, settings.ca_file, settings.timeout, accounts,
                      single_account=account[0] if account else None)
            stack.callback(rig.close)
            server = against
        cases = plan(curves, backends, with_auth=against is None)
        show = not settings.json and sys.stderr.isatty()
        progress = Progress(TextColumn("{task.description:<40}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                            console=Console(file=sys.stderr), transient=True, disable=not show)
        preflight(rig, workdir)
        with progress:
            rows, lost = run_matrix(rig, workdir, cases, progress)
    return rows, lost, time.perf_counter() - start, server
