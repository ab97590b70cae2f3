"""The Manager's reused C buffers and encoded ids: results stay whole, nothing leaks between calls."""

from __future__ import annotations

import pytest

from pylime import Manager, Policy
from pylime.manager import _KEEP_BYTES, _KEEP_IDS
from tests.conftest import SERVER_URL, requires_lime

pytestmark = requires_lime

ALICE = "sip:alice@example.org;gr=a"
BOBS = [f"sip:bob@example.org;gr=b{i}" for i in range(3)]


@pytest.fixture
def talk(tmp_path, server, curve):
    """Alice and three devices of Bob, each in its own database."""
    managers = [Manager(tmp_path / f"{i}.sqlite3", server) for i in range(4)]
    for manager, device in zip(managers, [ALICE, *BOBS]):
        manager.create_user(device, SERVER_URL, curve, opk_batch=5)
    yield managers
    for manager in managers:
        manager.close()


def _receive(managers, out, text):
    for manager, recipient in zip(managers[1:], out.recipients):
        assert manager.decrypt(recipient.device_id, "sip:bob@example.org", ALICE,
                               recipient.dr_message, out.cipher_message).plaintext == text


def test_results_survive_the_next_calls_on_the_same_buffers(talk):
    """Each result owns its bytes: later encryptions into the same buffers change nothing."""
    alice = talk[0]
    outs = [(alice.encrypt(ALICE, "sip:bob@example.org", BOBS[:1], b"m%d" % n,
                           Policy.DR_MESSAGE), b"m%d" % n) for n in range(4)]
    frozen = [bytes(out.recipients[0].dr_message) for out, _ in outs]
    assert len(set(frozen)) == 4
    for (out, text), copy in zip(outs, frozen):
        assert out.recipients[0].dr_message == copy
        _receive(talk, out, text)


def test_fan_outs_of_every_size_and_a_message_past_the_kept_size(talk):
    """One, three, then one recipient again, and a plaintext larger than the kept buffers."""
    alice = talk[0]
    big = bytes(range(256)) * (_KEEP_BYTES // 256 + 8)
    for devices, text, policy in ((BOBS[:1], b"one", Policy.DR_MESSAGE),
                                  (BOBS, b"three", Policy.DR_MESSAGE),
                                  (BOBS, b"three again", Policy.CIPHER_MESSAGE),
                                  (BOBS[:1], big, Policy.DR_MESSAGE),
                                  (BOBS, big, Policy.CIPHER_MESSAGE),
                                  (BOBS[:1], b"small after big", Policy.DR_MESSAGE)):
        out = alice.encrypt(ALICE, "sip:bob@example.org", devices, text, policy)
        assert [r.device_id for r in out.recipients] == devices
        _receive(talk, out, text)
    assert alice._spare is not None and alice._spare.nbytes <= _KEEP_BYTES


def test_recipients_may_be_any_iterable_and_come_back_in_order(talk):
    """A generator of device ids works: the result names each recipient in the given order."""
    out = talk[0].encrypt(ALICE, "sip:bob@example.org", (b for b in reversed(BOBS)), b"gen")
    assert [r.device_id for r in out.recipients] == BOBS[::-1]


def test_no_plaintext_is_left_in_the_kept_decrypt_buffer(talk):
    """After decrypt returns, the buffer the Manager keeps for the next one holds zeros."""
    alice, bob = talk[0], talk[1]
    text = b"a secret worth wiping"
    out = alice.encrypt(ALICE, "sip:bob@example.org", BOBS[:1], text, Policy.DR_MESSAGE)
    assert bob.decrypt(BOBS[0], "sip:bob@example.org", ALICE,
                       out.recipients[0].dr_message).plaintext == text
    from pylime.bindings import ffi
    assert text not in ffi.buffer(bob._plain)[:]
    assert not any(ffi.buffer(bob._plain)[:len(text)])


def test_bad_ids_are_refused_every_time_never_remembered(talk):
    """Encoded ids are remembered only once checked: a bad one raises on each call."""
    alice = talk[0]
    for _ in range(2):
        with pytest.raises(ValueError, match="NUL"):
            alice.encrypt(ALICE, "sip:bob@example.org", ["sip:bob\0@x"], b"x")
        with pytest.raises(ValueError, match="longer"):
            alice.encrypt(ALICE, "sip:bob@example.org", ["x" * 70000], b"x")
        with pytest.raises(TypeError):
            alice.encrypt(ALICE, "sip:bob@example.org", [b"bytes-id"], b"x")
        with pytest.raises(TypeError):
            alice.decrypt(7, "sip:bob@example.org", ALICE, b"\x01\x02\x01")
    for device, ruid, ids in alice._targets:
        assert all(type(k) is str and "\0" not in k and len(k) < 70000
                   for k in (device, ruid, *ids))
    for key in alice._senders:
        assert all(type(k) is str and "\0" not in k for k in key)


def test_a_str_is_not_taken_for_a_list_of_one_letter_devices(talk):
    """recipients="abc" is refused even after a call to the devices "a", "b", "c" was cached."""
    alice = talk[0]
    alice._targets[(ALICE, "sip:bob@example.org", ("a", "b", "c"))] = alice._new_target(
        ALICE, "sip:bob@example.org", ("a", "b", "c"))
    with pytest.raises(TypeError, match="not a str"):
        alice.encrypt(ALICE, "sip:bob@example.org", "abc", b"x")


def test_the_id_caches_stay_bounded(talk):
    """Thousands of distinct ids never hold more than _KEEP_IDS encodings of each kind."""
    alice = talk[0]
    for n in range(_KEEP_IDS * 2 + 5):
        device = f"sip:u{n}@example.org"
        assert alice._new_sender((ALICE, "sip:bob@example.org", device))[2] == device.encode()
        assert alice._new_target(ALICE, "sip:bob@example.org", (device,)).ids == (device,)
    assert len(alice._senders) <= _KEEP_IDS
    assert len(alice._targets) <= _KEEP_IDS
