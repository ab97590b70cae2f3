"""A key server that is down or answers garbage: typed errors, then recovery."""

from __future__ import annotations

import pytest

from pylime import (
    KeyServerError,
    KeyServerHTTPError,
    KeyServerProtocolError,
    PeerStatus,
    TransportError,
)


class Faulty:
    """Forwards to a real key server unless told to fail; counts what it was asked."""

    def __init__(self, server):
        self.server = server
        self.mode = None
        self.calls = 0

    def post(self, url, sender, body):
        self.calls += 1
        if self.mode == "down":
            raise ConnectionRefusedError("connection refused")
        if self.mode == "http500":
            return 500, b"Internal Server Error"
        if self.mode == "garbage":
            return 200, b"\x7f\x00garbage that is no X3DH message"
        if self.mode == "empty":
            return 200, b""
        if self.mode == "wrong-type":  # a well-formed header of a type lime does not expect
            return 200, body[:1] + b"\x42" + body[2:3]
        if self.mode == "not-a-tuple":
            return None
        return self.server.post(url, sender, body)


FAULTS = {
    "down": TransportError,
    "not-a-tuple": TransportError,
    "http500": KeyServerHTTPError,
    "garbage": KeyServerError,
    "empty": KeyServerError,
    "wrong-type": KeyServerError,
}


@pytest.fixture
def faulty(server):
    return Faulty(server)


@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_create_user_fails_typed_then_succeeds_once_the_server_is_back(world, faulty, mode):
    """create_user raises the fault's error; the same Manager then creates the user."""
    alice = world.device("alice", create=False, transport=faulty)
    faulty.mode = mode
    with pytest.raises(FAULTS[mode]) as caught:
        alice.manager.create_user(alice.device_id, "https://keys.example.org", world.curve)
    if mode == "down":
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    faulty.mode = None
    alice.manager.create_user(alice.device_id, "https://keys.example.org", world.curve)
    assert alice.manager.is_user(alice.device_id)
    assert world.transport.opk_count(alice.device_id) == 100


@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_encrypt_fails_typed_then_succeeds_once_the_server_is_back(world, faulty, mode):
    """An encrypt that needs a bundle raises the fault's error, then works with the same Manager."""
    alice = world.device("alice", transport=faulty)
    bob = world.device("bob")
    faulty.mode = mode
    with pytest.raises(FAULTS[mode]):
        alice.encrypt(bob.user, [bob], b"hello?")
    faulty.mode = None
    out = alice.encrypt(bob.user, [bob], b"hello!")
    assert out.recipients[0].status is PeerStatus.UNKNOWN
    assert bob.receive(bob.user, alice, out).plaintext == b"hello!"


def test_encrypt_on_established_sessions_needs_no_server(world, faulty):
    """Once sessions exist, encrypting does not touch the key server at all."""
    alice, bob = world.device("alice", transport=faulty), world.device("bob")
    bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"open"))
    faulty.mode, calls = "down", faulty.calls
    out = alice.encrypt(bob.user, [bob], b"offline is fine")
    assert faulty.calls == calls
    assert bob.receive(bob.user, alice, out).plaintext == b"offline is fine"


@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_update_fails_typed_then_succeeds_once_the_server_is_back(world, faulty, server, mode):
    """update() raises the fault's error; the next update() tops the OPks up."""
    bob = world.device("bob", transport=faulty)
    for name in ("alice", "carol"):
        sender = world.device(name)
        bob.receive(bob.user, sender, sender.encrypt(bob.user, [bob], b"hi"))
    faulty.mode = mode
    with pytest.raises(FAULTS[mode]):
        bob.manager.update()
    faulty.mode = None
    bob.manager.update()
    assert server.opk_count(bob.device_id) == 98 + 25


def test_delete_user_deletes_locally_even_when_the_server_is_down(world, faulty, server):
    """The local deletion stands; the key server error is still reported."""
    alice = world.device("alice", transport=faulty)
    faulty.mode = "down"
    with pytest.raises(TransportError):
        alice.manager.delete_user(alice.device_id)
    assert not alice.manager.is_user(alice.device_id)


def test_registration_refused_by_the_server_carries_its_error_code(world, server):
    """A device id registered elsewhere with other keys is refused with user_already_in."""
    alice = world.device("alice")
    impostor = world.factory(world.directory / "impostor.sqlite3", transport=server)
    try:
        with pytest.raises(KeyServerProtocolError) as caught:
            impostor.create_user(alice.device_id, "https://keys.example.org", world.curve)
        assert caught.value.code == 0x05
        assert not impostor.is_user(alice.device_id)
    finally:
        impostor.close()


def test_a_transport_interrupt_still_answers_lime(world, faulty):
    """A KeyboardInterrupt in the transport propagates, and the Manager keeps working."""
    alice = world.device("alice", transport=faulty)
    bob = world.device("bob")

    def interrupted(url, sender, body):
        raise KeyboardInterrupt

    faulty.post, post = interrupted, faulty.post
    with pytest.raises(KeyboardInterrupt):
        alice.encrypt(bob.user, [bob], b"interrupted")
    faulty.post = post
    assert bob.receive(bob.user, alice, alice.encrypt(bob.user, [bob], b"resumed")).plaintext \
        == b"resumed"
