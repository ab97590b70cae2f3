"""A receiver holding many stale sessions with one peer: decryption still works, pruning is safe.

lime tries every stored session with the sender (stale ones too) before X3DH on a new
session's first message, so this case is slow by design (timings live in scripts/bench); these
tests pin what must keep working, and what pylime.sessions.prune_stale_sessions changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pylime import Curve, DecryptionError, InternalError, Manager, Policy
from pylime.keyserver import KeyServer
from pylime.sessions import SessionCount, prune_stale_sessions, session_counts
from tests.conftest import SERVER_URL, requires_lime

pytestmark = requires_lime

A = "sip:alice@example.org;gr=urn:uuid:a"
B = "sip:bob@example.org;gr=urn:uuid:b"
UA, UB = "sip:alice@example.org", "sip:bob@example.org"


@dataclass
class Renewed:
    """Alice and Bob after Alice renewed her session with Bob many times."""

    alice: Manager
    bob: Manager
    bob_path: Path
    server: KeyServer
    # late[k]: a message Alice sent on session k, never delivered until the test does.
    late: list[bytes] = field(default_factory=list)

    def send(self, text: bytes) -> bytes:
        out = self.alice.encrypt(A, UB, [B], text, Policy.DR_MESSAGE)
        return out.recipients[0].dr_message

    def bob_reads(self, dr: bytes) -> bytes:
        return self.bob.decrypt(B, UB, A, dr).plaintext

    def reopen_bob(self) -> None:
        self.bob.close()
        self.bob = Manager(self.bob_path, self.server)


def renew(tmp_path: Path, server: KeyServer, sessions: int) -> Renewed:
    """Open ``sessions`` sessions one after the other, each used both ways, then staled."""
    alice = Manager(tmp_path / "alice.sqlite3", server)
    bob = Manager(tmp_path / "bob.sqlite3", server)
    alice.create_user(A, SERVER_URL, Curve.C25519, opk_batch=5)
    # Enough OPks that every X3DH carries one: a replayed init can then never re-open a session.
    bob.create_user(B, SERVER_URL, Curve.C25519, opk_batch=sessions + 5)
    r = Renewed(alice, bob, tmp_path / "bob.sqlite3", server)
    for k in range(sessions):
        if k:
            alice.stale_sessions(A, B)
        assert r.bob_reads(r.send(b"open %d" % k)) == b"open %d" % k
        reply = bob.encrypt(B, UA, [A], b"ack %d" % k, Policy.DR_MESSAGE)
        alice.decrypt(A, UA, B, reply.recipients[0].dr_message)
        r.late.append(r.send(b"late %d" % k))
    return r


@pytest.fixture
def many_server():
    """A key server that stores enough OPks per device for hundreds of sessions, and hands
    them all to Alice (no per-account OPk budget: every X3DH must carry one)."""
    with KeyServer(max_opks_per_device=1000, opk_budget=0) as server:
        yield server


def _check_many_sessions(tmp_path: Path, server: KeyServer, sessions: int) -> None:
    r = renew(tmp_path, server, sessions)
    try:
        assert session_counts(r.bob_path) == [SessionCount(B, A, 1, sessions - 1)]
        assert r.bob_reads(r.late[0]) == b"late 0"  # the oldest stale session
        assert r.bob_reads(r.late[-2]) == b"late %d" % (sessions - 2)  # the newest stale one
        r.alice.stale_sessions(A, B)
        assert r.bob_reads(r.send(b"new")) == b"new"  # X3DH after every session failed
        r.reopen_bob()
        assert r.bob_reads(r.send(b"after restart")) == b"after restart"
    finally:
        r.alice.close()
        r.bob.close()


def test_receiver_with_many_stale_sessions_decrypts_new_and_late_messages(tmp_path, many_server):
    """With 30 sessions held, new-session, late and post-restart messages all decrypt."""
    _check_many_sessions(tmp_path, many_server, 30)


@pytest.mark.slow
def test_receiver_with_two_hundred_stale_sessions_decrypts(tmp_path, many_server):
    """The reported case, 200 sessions with one peer: every kind of message still decrypts."""
    _check_many_sessions(tmp_path, many_server, 200)


def test_prune_keeps_the_newest_stale_sessions_and_the_conversation(tmp_path, many_server):
    """Pruning to 5 stale sessions: late messages on kept ones decrypt, on pruned ones fail."""
    r = renew(tmp_path, many_server, 30)
    try:
        r.bob.close()
        assert prune_stale_sessions(r.bob_path, keep=5) == 24
        assert session_counts(r.bob_path) == [SessionCount(B, A, 1, 5)]
        r.reopen_bob()
        assert r.bob_reads(r.late[-3]) == b"late 27"
        with pytest.raises(DecryptionError):
            r.bob_reads(r.late[0])
        r.alice.stale_sessions(A, B)
        assert r.bob_reads(r.send(b"new")) == b"new"
        reply = r.bob.encrypt(B, UA, [A], b"still here", Policy.DR_MESSAGE)
        assert r.alice.decrypt(A, UA, B, reply.recipients[0].dr_message).plaintext == \
            b"still here"
    finally:
        r.alice.close()
        r.bob.close()


def test_prune_leaves_recently_staled_sessions_alone(tmp_path, many_server):
    """Sessions that went stale less than older_than_days ago are kept, whatever keep says."""
    r = renew(tmp_path, many_server, 4)
    r.alice.close()
    r.bob.close()
    assert prune_stale_sessions(r.bob_path, keep=0, older_than_days=1) == 0
    assert session_counts(r.bob_path) == [SessionCount(B, A, 1, 3)]
    assert prune_stale_sessions(r.bob_path, keep=0) == 3
    assert session_counts(r.bob_path) == [SessionCount(B, A, 1, 0)]


def test_prune_refuses_negative_arguments_and_missing_files(tmp_path):
    """A negative keep or age is a ValueError; a missing database is FileNotFoundError."""
    with pytest.raises(ValueError):
        prune_stale_sessions(tmp_path / "x.sqlite3", keep=-1)
    with pytest.raises(FileNotFoundError):
        prune_stale_sessions(tmp_path / "x.sqlite3", keep=1)
    with pytest.raises(FileNotFoundError):
        session_counts(tmp_path / "x.sqlite3")


def test_prune_and_counts_refuse_a_file_that_is_not_a_lime_database(tmp_path):
    """A file without lime's tables is an InternalError, and is left unchanged."""
    other = tmp_path / "other.sqlite3"
    other.write_bytes(b"")
    with pytest.raises(InternalError):
        prune_stale_sessions(other, keep=1)
    with pytest.raises(InternalError):
        session_counts(other)
    assert other.read_bytes() == b""


def test_sessions_module_all_is_sorted_and_complete():
    """pylime.sessions.__all__ is sorted and lists exactly its public names."""
    import inspect

    import pylime.sessions as mod

    assert mod.__all__ == sorted(mod.__all__)
    public = {name for name, obj in vars(mod).items()
              if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
              and obj.__module__ == mod.__name__}
    assert public == set(mod.__all__)
