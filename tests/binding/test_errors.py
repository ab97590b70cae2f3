"""Misuse gets the right typed error, never a crash."""

from __future__ import annotations

import pytest

from pylime import (
    Curve,
    InvalidCurveError,
    ManagerClosedError,
    PeerStatus,
    UserExistsError,
    UserNotFoundError,
)

GHOST = "sip:ghost@example.org;gr=urn:uuid:dead"


def _calls(manager, peer):
    return {
        "encrypt": lambda: manager.encrypt(GHOST, "sip:x@example.org", [peer], b"hi"),
        "decrypt": lambda: manager.decrypt(GHOST, "sip:x@example.org", peer, b"\x01\x02\x01" * 40),
        "delete_user": lambda: manager.delete_user(GHOST),
        "identity_key": lambda: manager.identity_key(GHOST),
        "stale_sessions": lambda: manager.stale_sessions(GHOST, peer),
        "server_url": lambda: manager.server_url(GHOST),
        "set_server_url": lambda: manager.set_server_url(GHOST, "https://elsewhere.example.org"),
    }


@pytest.mark.parametrize("call", sorted(_calls(None, None)))
def test_unknown_local_user_raises_user_not_found(world, call):
    """Every per-user call on a user this database does not hold raises UserNotFoundError."""
    alice = world.device("alice")
    with pytest.raises(UserNotFoundError) as caught:
        _calls(alice.manager, alice.device_id)[call]()
    assert isinstance(caught.value, LookupError)
    assert alice.manager.is_user(alice.device_id), "the manager is still usable"


def test_is_user_is_false_for_an_unknown_user(world):
    """is_user answers False rather than raising."""
    alice = world.device("alice")
    assert alice.manager.is_user(GHOST) is False


@pytest.mark.parametrize("bad", [0, 6, 25519, -1])
def test_bad_curve_raises_invalid_curve(world, bad):
    """A curve id lime has not (neither 5.1's 1-2 nor 5.4's 3-5) raises InvalidCurveError (a
    ValueError); the post-quantum 3-5 are tests/reference/test_post_quantum.py's."""
    alice = world.device("alice", create=False)
    with pytest.raises(InvalidCurveError) as caught:
        alice.manager.create_user(alice.device_id, "https://k.example.org", bad)
    assert isinstance(caught.value, ValueError)
    assert not alice.manager.is_user(alice.device_id)


def test_creating_an_existing_user_raises(world):
    """create_user on an active user raises UserExistsError and keeps its keys."""
    alice = world.device("alice")
    key = alice.manager.identity_key(alice.device_id)
    with pytest.raises(UserExistsError):
        alice.manager.create_user(alice.device_id, "https://k.example.org", world.curve)
    assert alice.manager.identity_key(alice.device_id) == key


def test_nul_characters_and_wrong_types_are_refused(world):
    """Strings C would truncate, and arguments of the wrong type, raise before reaching lime."""
    alice = world.device("alice")
    with pytest.raises(ValueError):
        alice.manager.is_user(alice.device_id + "\0suffix")
    with pytest.raises(TypeError):
        alice.manager.is_user(b"sip:bytes@example.org")
    with pytest.raises(TypeError):
        alice.manager.encrypt(alice.device_id, "sip:x@example.org", "sip:not-a-list", b"hi")
    with pytest.raises(ValueError):
        alice.manager.encrypt(alice.device_id, "sip:x@example.org", [], b"hi")
    with pytest.raises(ValueError):
        alice.manager.encrypt(alice.device_id, "sip:x@example.org", ["sip:b"], b"hi", policy=7)
    with pytest.raises(ValueError):
        alice.manager.create_user("sip:new@example.org;gr=1", "https://k", Curve.C25519,
                                  opk_batch=70000)


def test_a_closed_manager_raises(world):
    """Every call after close() raises ManagerClosedError."""
    alice = world.device("alice")
    alice.manager.close()
    for call in (lambda: alice.manager.is_user(alice.device_id),
                 lambda: alice.manager.peer_status(GHOST),
                 lambda: alice.manager.update(),
                 lambda: alice.manager.set_peer_status(GHOST, PeerStatus.UNSAFE)):
        with pytest.raises(ManagerClosedError):
            call()


_REPEATED_AFTER_RESTART = """
import os, sys, tempfile
from pylime.keyserver import KeyServer
from pylime.manager import Manager
from pylime.types import Curve
d, server = tempfile.mkdtemp(), KeyServer()
alice, bob = "sip:alice@example.org;gr=1", "sip:bob@example.org;gr=1"
a = Manager(os.path.join(d, "a"), transport=server)
b = Manager(os.path.join(d, "b"), transport=server)
a.create_user(alice, "https://k", Curve(int(sys.argv[1])))
b.create_user(bob, "https://k", Curve(int(sys.argv[1])))
a.encrypt(alice, "sip:bob@example.org", [bob], b"first")
a.close()
a = Manager(os.path.join(d, "a"), transport=server)  # the session now comes from the database
try:
    a.encrypt(alice, "sip:bob@example.org", [bob, bob], b"twice")
except ValueError as exc:
    print("refused:", exc)
print(len(a.encrypt(alice, "sip:bob@example.org", [bob], b"once").recipients))
"""


@pytest.mark.parametrize("curve", [Curve.C25519, Curve.C448], ids=["c25519", "c448"])
def test_a_repeated_recipient_is_refused_before_lime_crashes_on_it(curve):
    """liblime 5.1.64 SIGSEGVs on a repeated device whose session it loads from its database.

    Found by scripts/asan_binding (corpus device-ids, "encrypt.duplicates"); the call runs in
    a child process so a regression is a failure, not a dead test run.
    """
    import os
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", _REPEATED_AFTER_RESTART, str(int(curve))],
                           capture_output=True, text=True, timeout=120, check=False,
                           env=dict(os.environ))
    assert child.returncode == 0, f"the process died: {child.returncode} {child.stderr[-500:]}"
    assert child.stdout.splitlines() == ["refused: recipients must not repeat a device id", "1"]


_BUNDLE_WITHOUT_THE_DEVICE = """
import os, sys, tempfile
from pylime import KeyServerError
from pylime.keyserver import KeyServer, protocol as proto
from pylime.manager import Manager
from pylime.reference import ReferenceManager
from pylime.types import Curve
factory = Manager if sys.argv[1] == "lime" else ReferenceManager

class Forging:  # answers getPeerBundle without an entry for the device asked for
    def __init__(self, server):
        self.server = server
    def post(self, url, sender, body):
        code, answer = self.server.post(url, sender, body)
        if body[1] == proto.MessageType.GET_PEER_BUNDLE:
            pb = proto.parse_response(answer)
            b = pb.bundles[0]
            other = proto.Bundle("sip:mallory@example.org;gr=9", b.ik, b.spk, b.spk_id,
                                 b.spk_sig, b.opk)
            answer = proto.PeerBundle(pb.curve, () if sys.argv[2] == "zero" else (other,))
            answer = answer.to_bytes()
        return code, answer

d, server = tempfile.mkdtemp(), KeyServer()
alice, bob = "sip:alice@example.org;gr=1", "sip:bob@example.org;gr=1"
a = factory(os.path.join(d, "a"), transport=Forging(server))
factory(os.path.join(d, "b"), transport=server).create_user(bob, "https://k", Curve.C25519)
a.create_user(alice, "https://k", Curve.C25519)
try:
    a.encrypt(alice, "sip:bob@example.org", [bob], b"hi")
except KeyServerError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize("entries", ["zero", "another-device"])
@pytest.mark.parametrize("backend_name", ["lime", "reference"])
def test_a_peer_bundle_without_the_device_asked_for_fails_the_encrypt(backend_name, entries):
    """KeyServerError on both backends; liblime 5.1.64 would loop for ever on that answer.

    Found while checking scripts/asan_binding's answers corpus. A child process, so a
    regression is a timeout, not a hung test run.
    """
    import os
    import subprocess
    import sys

    from pylime.backend import binding_available

    if backend_name == "lime" and not binding_available():
        pytest.skip("the liblime binding is not built")
    child = subprocess.run([sys.executable, "-c", _BUNDLE_WITHOUT_THE_DEVICE, backend_name,
                            entries], capture_output=True, text=True, timeout=60,
                           check=False, env=dict(os.environ))
    assert child.returncode == 0, child.stderr[-500:]
    assert child.stdout.strip() == ("refused: key server at https://k sent no bundle entry for "
                                    "'sip:bob@example.org;gr=1'")
