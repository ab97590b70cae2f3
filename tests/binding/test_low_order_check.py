"""The C shim's low-order DHs check agrees with pylime.keycheck, which owns the list."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylime import Manager, Policy
from pylime.errors import MalformedMessageError
from pylime.keycheck import dr_message_has_low_order_key, low_order_encodings
from pylime.types import Curve
from tests.conftest import SERVER_URL, requires_lime

pytestmark = requires_lime

X_SIZE = {1: 32, 2: 56}


def _c_verdict(message: bytes) -> bool:
    from pylime.bindings import lib

    return lib.pylime_dhs_low_order(message, len(message)) == 1


@st.composite
def headers(draw):
    """DR messages of established sessions: any curve byte, a DHs low-order or not, any cut."""
    curve = draw(st.sampled_from([0, 1, 2, 3, 255]))
    kind = draw(st.integers(0, 255)) & ~0x01  # no X3DH init: those are Python's to check
    x = X_SIZE.get(curve, 32)
    if curve in X_SIZE and draw(st.booleans()):
        dhs = draw(st.sampled_from(low_order_encodings(Curve(curve))))
    else:
        dhs = draw(st.binary(min_size=x, max_size=x))
    message = bytes([draw(st.integers(0, 255)), kind, curve]) + draw(
        st.binary(min_size=4, max_size=4)) + dhs + draw(st.binary(max_size=48))
    return message[:draw(st.integers(0, len(message)))]


@settings(max_examples=2000, deadline=None)
@given(headers())
def test_the_c_check_flags_exactly_what_keycheck_flags(message):
    """Every established-session header: C and Python give the same verdict."""
    assert _c_verdict(message) == dr_message_has_low_order_key(message)


@pytest.mark.parametrize("curve_id", [1, 2])
def test_every_registered_encoding_is_flagged_and_init_messages_are_left_to_python(curve_id):
    """Each low-order encoding as DHs is refused in C; an X3DH init header is not C's to judge."""
    for key in low_order_encodings(Curve(curve_id)):
        message = bytes([1, 0x02, curve_id, 0, 1, 0, 0]) + key + bytes(40)
        assert _c_verdict(message)
        assert not _c_verdict(bytes([1, 0x03, curve_id]) + message[3:])


def test_a_low_order_ratchet_key_is_refused_before_lime_and_the_session_goes_on(tmp_path,
                                                                               server, curve):
    """A message whose DHs was swapped for a low-order key: MalformedMessageError, lime
    untouched, and the genuine message decrypts afterwards."""
    alice_id, bob_id = "sip:alice@example.org;gr=a", "sip:bob@example.org;gr=b"
    with Manager(tmp_path / "a.sqlite3", server) as alice, \
            Manager(tmp_path / "b.sqlite3", server) as bob:
        alice.create_user(alice_id, SERVER_URL, curve, opk_batch=2)
        bob.create_user(bob_id, SERVER_URL, curve, opk_batch=2)
        first = alice.encrypt(alice_id, "sip:bob@example.org", [bob_id], b"hello",
                              Policy.DR_MESSAGE).recipients[0].dr_message
        bob.decrypt(bob_id, "sip:bob@example.org", alice_id, first)
        reply = bob.encrypt(bob_id, "sip:alice@example.org", [alice_id], b"hi",
                            Policy.DR_MESSAGE).recipients[0].dr_message
        alice.decrypt(alice_id, "sip:alice@example.org", bob_id, reply)
        genuine = alice.encrypt(alice_id, "sip:bob@example.org", [bob_id], b"again",
                                Policy.DR_MESSAGE).recipients[0].dr_message
        assert not genuine[1] & 0x01  # an established session's message
        x = X_SIZE[genuine[2]]
        for key in low_order_encodings(Curve(genuine[2])):
            forged = genuine[:7] + key + genuine[7 + x:]
            with pytest.raises(MalformedMessageError, match="low-order"):
                bob.decrypt(bob_id, "sip:bob@example.org", alice_id, forged)
        assert bob.decrypt(bob_id, "sip:bob@example.org", alice_id,
                           genuine).plaintext == b"again"
