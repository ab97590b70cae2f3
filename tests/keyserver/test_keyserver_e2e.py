"""liblime devices (Manager + HttpsTransport) against the served key server: HTTPS on
127.0.0.1, digest authentication on, SQLite and PostgreSQL, both curves."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ks_servers import make_server

from pylime import Curve, Policy
from pylime.errors import DecryptionError, EncryptionError, KeyServerHTTPError, TransportError
from pylime.keyserver import KeyServer
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.auth import make_account
from pylime.keyserver.service import ServerThread
from pylime.transport import HttpsTransport
from pylime.types import PeerStatus

try:
    from pylime.manager import Manager
except ImportError as exc:  # only where _lime was never built
    Manager = None  # type: ignore[assignment,misc]
    MISSING = f"pylime._lime is not built ({exc})"
else:
    MISSING = ""

pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING or "lime present")

REALM = "example.org"
USERS = ("alice", "bob", "carol")
_uuid = itertools.count(1)


@dataclass
class Dev:
    """One phone: its device id, its user's URI, its Manager and its transport."""

    device_id: str
    user: str
    manager: Any
    transport: HttpsTransport

    def send(
        self, to: str, devs: list[Dev], text: bytes, policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE
    ) -> Any:
        return self.manager.encrypt(
            self.device_id, to, [d.device_id for d in devs], text, policy=policy
        )

    def read(self, to: str, sender: Dev, out: Any) -> Any:
        (mine,) = [r for r in out.recipients if r.device_id == self.device_id]
        return self.manager.decrypt(
            self.device_id, to, sender.device_id, mine.dr_message, out.cipher_message
        )


class Rig:
    """A served key server with accounts alice, bob and carol, and the devices made on it."""

    def __init__(
        self, tmp: Path, server: KeyServer, thread: ServerThread, cert: Path, curve: Curve
    ) -> None:
        self.tmp, self.server, self.thread, self.cert, self.curve = tmp, server, thread, cert, curve
        self.url = thread.url
        self.devs: list[Dev] = []

    def device(
        self,
        name: str,
        *,
        account: str | None = None,
        password: str | None = None,
        create: bool = True,
    ) -> Dev:
        """A new device of user ``name`` with its own database, authenticating as ``account``."""
        account = account or name
        transport = HttpsTransport(self.cert, account, password or f"{account}-pw", timeout=10)
        user = f"sip:{name}@{REALM}"
        device_id = f"{user};gr=urn:uuid:00000000-0000-4000-8000-{next(_uuid):012d}"
        manager = Manager(self.tmp / f"{name}-{len(self.devs)}.sqlite3", transport=transport)
        dev = Dev(device_id, user, manager, transport)
        self.devs.append(dev)
        if create:
            manager.create_user(device_id, self.url, self.curve, opk_batch=20)
        return dev

    def close(self) -> None:
        for d in self.devs:
            d.manager.close()
            d.transport.close()


@pytest.fixture
def rig(
    served_backend: str, tmp_path: Path, tls_files: tuple[Path, Path], curve: Curve
) -> Iterator[Rig]:
    """Devices on an HTTPS key server with authentication, per backend and curve."""
    server = make_server(served_backend, tmp_path)
    for user in USERS:
        server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
    with ServerThread(
        ServerConfig(realm=REALM), server=server, cert=tls_files[0], key=tls_files[1]
    ) as thread:
        r = Rig(tmp_path, server, thread, tls_files[0], curve)
        try:
            yield r
        finally:
            r.close()
    server.close()


def test_one_to_one_both_ways_with_ratchet_steps(rig: Rig) -> None:
    """alice and bob exchange messages both ways; each direction change is a DH ratchet step."""
    alice, bob = rig.device("alice"), rig.device("bob")
    assert rig.server.opk_count(bob.device_id) == 20
    out = alice.send(bob.user, [bob], b"hello bob")
    assert out.recipients[0].status is PeerStatus.UNKNOWN
    assert rig.server.opk_count(bob.device_id) == 19  # one OPk consumed by the bundle fetch
    assert bob.read(bob.user, alice, out).plaintext == b"hello bob"
    for i in range(3):
        back = bob.send(alice.user, [alice], b"reply %d" % i)
        assert alice.read(alice.user, bob, back).plaintext == b"reply %d" % i
        forth = alice.send(bob.user, [bob], b"again %d" % i)
        assert forth.recipients[0].status is PeerStatus.UNTRUSTED
        assert bob.read(bob.user, alice, forth).plaintext == b"again %d" % i


def test_group_of_three_users_with_two_devices_each(rig: Rig) -> None:
    """alice's first device reaches her other device and 4 others under each of the 4 policies."""
    devs = [rig.device(u) for u in USERS for _ in range(2)]
    sender, others = devs[0], devs[1:]
    room = "sip:room@conference.example.org"
    for policy in Policy:
        text = b"policy %s " % policy.name.encode() + b"x" * 300
        out = sender.send(room, others, text, policy)
        if policy is Policy.DR_MESSAGE:
            assert out.cipher_message == b""
        if policy is Policy.CIPHER_MESSAGE:
            assert len(out.cipher_message) == len(text) + 16
        for d in others:
            assert d.read(room, sender, out).plaintext == text


def test_opks_consumed_and_replenished_by_update(rig: Rig) -> None:
    """Bundle fetches consume OPks on the server; update() tops them up again."""
    bob = rig.device("bob")
    senders = [rig.device("alice") for _ in range(5)]
    for s in senders:
        s.send(bob.user, [bob], b"hi")
    assert rig.server.opk_count(bob.device_id) == 15
    bob.manager.update(opk_low_limit=20, opk_batch=10)
    assert rig.server.opk_count(bob.device_id) == 25  # max(batch, low limit - held) = 10 added


def test_delete_user_removes_it_on_the_server(rig: Rig) -> None:
    """delete_user removes the device locally and on the key server (its OPks are gone)."""
    bob = rig.device("bob")
    assert rig.server.opk_count(bob.device_id) == 20
    bob.manager.delete_user(bob.device_id)
    assert rig.server.opk_count(bob.device_id) == 0
    assert not bob.manager.is_user(bob.device_id)
    alice = rig.device("alice")
    with pytest.raises(EncryptionError):  # the server answers flag 2: no bundle
        alice.send(bob.user, [bob], b"to nobody")


def test_republish_after_the_server_lost_the_device(rig: Rig) -> None:
    """When the server forgets a device, update() re-registers it and peers can reach it again."""
    bob = rig.device("bob")
    rig.server.storage.delete_user(rig.curve, bob.device_id)  # as the lifetime expiry would
    bob.manager.update(opk_low_limit=20, opk_batch=10)
    assert rig.server.opk_count(bob.device_id) == 20
    alice = rig.device("alice")
    out = alice.send(bob.user, [bob], b"found you")
    assert bob.read(bob.user, alice, out).plaintext == b"found you"


def test_wrong_password_fails_create_user(rig: Rig) -> None:
    """create_user with a wrong password fails with the HTTP status, and registers nothing."""
    with pytest.raises(KeyServerHTTPError) as info:
        rig.device("alice", password="wrong")
    assert info.value.status == 401
    assert rig.server.opk_count(rig.devs[-1].device_id) == 0


def test_another_account_cannot_register_my_device(rig: Rig) -> None:
    """bob's credentials cannot register a device of alice's (403), nothing is stored."""
    with pytest.raises(KeyServerHTTPError) as info:
        rig.device("alice", account="bob")
    assert info.value.status == 403
    assert rig.server.opk_count(rig.devs[-1].device_id) == 0


def test_unreachable_server_then_back(rig: Rig) -> None:
    """With the server unreachable encrypt raises TransportError; once reachable it works."""
    alice, bob = rig.device("alice"), rig.device("bob")
    dead = "https://127.0.0.1:9/lime-server"
    alice.manager.set_server_url(alice.device_id, dead)
    with pytest.raises(TransportError):
        alice.send(bob.user, [bob], b"lost")
    alice.manager.set_server_url(alice.device_id, rig.url)
    out = alice.send(bob.user, [bob], b"delivered")
    assert bob.read(bob.user, alice, out).plaintext == b"delivered"
    with pytest.raises(DecryptionError):
        bob.read(bob.user, alice, out)  # replay
