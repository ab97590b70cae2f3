"""Key-server faults through the transport, beyond tests/binding/test_faults.py.

Each operation that talks to the key server (create_user, encrypt to several recipients,
update, delete_user) meets timeouts, a server that never answers, connections reset before
or after the server did the work, truncated and oversized answers. The invariant: a typed
error or success, nothing left pending, no wait past the transport's own timeout, the
database unchanged where the operation failed, and the same Manager working once the
server is back. Runs on both backends and both curves through the ``world`` fixture.
"""

from __future__ import annotations

import time

import pytest
from faults import (
    BOUND,
    GET_BUNDLE,
    GET_SELF_OPKS,
    POST_OPKS,
    REGISTER,
    FaultyTransport,
    db_rows,
    no_pending,
)

from pylime import errors
from pylime.types import Curve, PeerStatus

BEFORE_SERVER = ["timeout", "never", "reset-before"]
AFTER_SERVER = ["reset-after", "truncated", "http500-after"]
FAILING = {
    "timeout": errors.TransportError,
    "never": errors.TransportError,
    "reset-before": errors.TransportError,
    "reset-after": errors.TransportError,
    "truncated": errors.KeyServerError,
    "http500-after": errors.KeyServerHTTPError,
}
# Generous: the transport gives up after BOUND; lime's own work is milliseconds.
SLACK = 2.0


@pytest.fixture(params=[Curve.C25519], ids=["c25519"])
def curve(request):
    """Faults do not depend on the curve: one is enough here (the suite must stay fast)."""
    return request.param


@pytest.fixture
def faulty(server):
    return FaultyTransport(server)


def _timed(call):
    started = time.monotonic()
    try:
        call()
    finally:
        elapsed = time.monotonic() - started
    return elapsed


@pytest.mark.parametrize("mode", BEFORE_SERVER + ["truncated", "http500-after"])
def test_create_user_fault_keeps_only_a_pending_registration(world, faulty, mode):
    """A failed create_user raises in bounded time and keeps nothing but the pending user.

    The answer was lost, so the server may hold the keys: the user stays stored inactive
    (not a user yet) with its keys, and the same manager's retry completes it.
    """
    alice = world.device("alice", transport=faulty)  # the schema exists from here on
    path = alice.manager.path
    before = db_rows(path)
    faulty.fail(mode, REGISTER)
    started = time.monotonic()
    with pytest.raises(FAILING[mode]):
        alice.manager.create_user(alice.device_id + "-2", "https://k.example", world.curve)
    assert time.monotonic() - started < BOUND + SLACK
    assert no_pending(alice.manager)
    after = db_rows(path)
    assert set(before) <= set(after)
    added = [row for row in after if row not in before]
    assert all(row.startswith(('INSERT INTO "lime_LocalUsers"', 'INSERT INTO "X3DH_SPK"',
                               'INSERT INTO "X3DH_OPK"')) for row in added)
    assert not alice.manager.is_user(alice.device_id + "-2")
    faulty.fail(None)
    alice.manager.create_user(alice.device_id + "-2", "https://k.example", world.curve)
    assert alice.manager.is_user(alice.device_id + "-2")
    assert world.transport.opk_count(alice.device_id + "-2") == 100
    assert no_pending(alice.manager)


@pytest.mark.parametrize("mode", AFTER_SERVER)
def test_create_user_retry_after_a_lost_answer_succeeds(world, faulty, mode):
    """When the server registered the user but its answer was lost, a retry still succeeds.

    lime alone deletes the local user on any create_user failure, so the retry would make a
    new Ik that the server refuses with user_already_in (0x05) for ever. pylime keeps the
    pending user and its keys instead; the retry re-sends them as an identical registration.
    """
    alice = world.device("alice", create=False, transport=faulty)
    faulty.fail(mode, REGISTER)
    with pytest.raises(errors.KeyServerError):
        alice.manager.create_user(alice.device_id, "https://k.example", world.curve)
    faulty.fail(None)
    alice.manager.create_user(alice.device_id, "https://k.example", world.curve)
    assert alice.manager.is_user(alice.device_id)


def test_an_answer_with_trailing_bytes_is_refused_and_the_retry_registers(world, faulty):
    """1 MiB of junk after a valid acknowledgement is refused (liblime would ignore it): the
    answer counts as lost, the user stays pending, and the retry registers the same keys."""
    alice = world.device("alice", create=False, transport=faulty)
    faulty.fail("oversized", REGISTER)
    with pytest.raises(errors.KeyServerError, match="after its answer") as caught:
        alice.manager.create_user(alice.device_id, "https://k.example", world.curve)
    assert caught.value.answer_lost is True
    assert not alice.manager.is_user(alice.device_id) and no_pending(alice.manager)
    faulty.fail(None)
    alice.manager.create_user(alice.device_id, "https://k.example", world.curve)
    assert alice.manager.is_user(alice.device_id) and no_pending(alice.manager)


@pytest.mark.parametrize("mode", BEFORE_SERVER + AFTER_SERVER)
def test_encrypt_to_several_recipients_fails_whole_then_recovers(world, faulty, mode):
    """A bundle fetch that fails fails the whole encrypt, keeps the DB, and the retry reaches all."""
    alice = world.device("alice", transport=faulty)
    bobs = [world.device("bob") for _ in range(3)]
    bobs[0].receive(bobs[0].user, alice, alice.encrypt(bobs[0].user, bobs[:1], b"open"))
    before = db_rows(alice.manager.path)
    faulty.fail(mode, GET_BUNDLE)
    started = time.monotonic()
    # a truncated peerBundle is refused by lime's parser: the encryption itself fails
    expected = (errors.KeyServerError, errors.EncryptionError) if mode == "truncated" \
        else FAILING[mode]
    with pytest.raises(expected):
        alice.encrypt(bobs[0].user, bobs, b"lost")
    assert time.monotonic() - started < BOUND + SLACK
    assert no_pending(alice.manager)
    assert db_rows(alice.manager.path) == before
    faulty.fail(None)
    out = alice.encrypt(bobs[0].user, bobs, b"found")
    assert [r.status for r in out.recipients] == [PeerStatus.UNTRUSTED] + [PeerStatus.UNKNOWN] * 2
    for bob in bobs:
        assert bob.receive(bob.user, alice, out).plaintext == b"found"


def test_encrypt_reaches_the_recipients_the_server_knows(world, faulty):
    """A recipient unknown to the key server gets FAIL; the others still get the message."""
    alice = world.device("alice", transport=faulty)
    bob = world.device("bob")
    ghost = world.device("ghost", create=False)
    carol = world.device("carol")
    out = alice.encrypt(bob.user, [bob, ghost, carol], b"to whom it may concern")
    assert [r.status for r in out.recipients] == [PeerStatus.UNKNOWN, PeerStatus.FAIL,
                                                  PeerStatus.UNKNOWN]
    assert out.recipients[1].dr_message == b""
    for dev in (bob, carol):
        assert dev.receive(bob.user, alice, out).plaintext == b"to whom it may concern"
    assert no_pending(alice.manager)


def test_an_oversized_bundle_answer_still_encrypts(world, faulty):
    """Trailing junk after a peerBundle answer is ignored, as lime's parser reads by length."""
    alice, bob = world.device("alice", transport=faulty), world.device("bob")
    faulty.fail("oversized", GET_BUNDLE)
    try:
        out = alice.encrypt(bob.user, [bob], b"big answer")
    except errors.KeyServerError:
        pass  # refusing it is as good: typed, and nothing pending
    else:
        assert bob.receive(bob.user, alice, out).plaintext == b"big answer"
    assert no_pending(alice.manager)


@pytest.mark.parametrize("mode", BEFORE_SERVER + AFTER_SERVER)
def test_update_fault_on_get_self_opks_changes_nothing(world, faulty, server, mode):
    """update() fails typed at its first request, the DB unchanged; the next update tops up."""
    bob = world.device("bob", transport=faulty)
    before = db_rows(bob.manager.path)
    faulty.fail(mode, GET_SELF_OPKS)
    with pytest.raises(FAILING[mode]):
        bob.manager.update(opk_low_limit=110, opk_batch=5)
    assert no_pending(bob.manager)
    assert db_rows(bob.manager.path) == before
    faulty.fail(None)
    bob.manager.update(opk_low_limit=110, opk_batch=5)
    assert server.opk_count(bob.device_id) == 110


@pytest.mark.parametrize("mode", BEFORE_SERVER + ["reset-after"])
def test_update_fault_on_post_opks_keeps_unpublished_keys_until_the_next_update(
        world, faulty, server, mode):
    """OPks generated for a failed upload stay local, unpublished; the next update retires them."""
    bob = world.device("bob", transport=faulty)
    faulty.fail(mode, POST_OPKS)
    with pytest.raises(errors.TransportError):
        bob.manager.update(opk_low_limit=110, opk_batch=5)
    assert no_pending(bob.manager)
    held = server.opk_count(bob.device_id)
    assert held in (100, 110)  # 110 when the server stored them before the reset
    faulty.fail(None)
    bob.manager.update(opk_low_limit=110, opk_batch=5)
    assert server.opk_count(bob.device_id) >= 110
    # the keys lime generated but never managed to publish are no longer offered as active
    rows = [r for r in db_rows(bob.manager.path) if r.startswith('INSERT INTO "X3DH_OPK"')]
    assert len(rows) >= server.opk_count(bob.device_id)


@pytest.mark.parametrize("mode", BEFORE_SERVER + AFTER_SERVER)
def test_delete_user_deletes_locally_whatever_the_fault(world, faulty, mode):
    """The local deletion stands, typed error reported, nothing pending, the Manager still usable."""
    alice = world.device("alice", transport=faulty)
    faulty.fail(mode, 0x02)
    with pytest.raises(FAILING[mode]):
        alice.manager.delete_user(alice.device_id)
    assert not alice.manager.is_user(alice.device_id)
    assert no_pending(alice.manager)
    faulty.fail(None)
    # the same Manager still creates users and talks to peers
    alice.manager.create_user(alice.device_id + "-new", "https://k.example", world.curve)
    assert alice.manager.is_user(alice.device_id + "-new")


def test_a_silent_server_costs_one_timeout_per_request(world, faulty):
    """A server that never answers: each request waits the transport's bound, no longer."""
    alice = world.device("alice", transport=faulty)
    bobs = [world.device("bob") for _ in range(4)]
    faulty.fail("never")
    elapsed = _timed(lambda: pytest.raises(errors.TransportError, alice.encrypt,
                                           bobs[0].user, bobs, b"anyone?"))
    assert faulty.injected == 1  # one bundle request for all four recipients
    assert elapsed < BOUND + SLACK
    assert faulty.longest < BOUND + 0.5
    assert no_pending(alice.manager)


def test_a_request_refuses_a_second_answer(tmp_path, server):
    """A key-server request is one-shot: answering it again raises instead of freeing twice."""
    manager_module = pytest.importorskip("pylime.manager")
    from pylime import bindings
    from pylime._callbacks import Operation

    manager = manager_module.Manager(tmp_path / "a.sqlite3", transport=server)
    try:
        state = manager._state
        op = Operation()
        state.pending.add(op)
        device = b"sip:a@example.org;gr=1"
        assert bindings.create_user(state.ptr, device, b"https://k", 1, 5, op.handle) == 0
        request = state.queue.popleft()
        code, body = server.post(request.url, request.sender, request.body)
        request.answer(code, body)
        with pytest.raises(RuntimeError, match="already answered"):
            request.answer(code, body)  # a server that answers twice
        with pytest.raises(RuntimeError):
            request.answer(0, b"")
        assert op.done and op.ok and request.answered
        state.pending.discard(op)
        assert manager.is_user(device.decode()) and no_pending(manager)
    finally:
        manager.close()
