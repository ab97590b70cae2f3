"""Properties of the envelope: any envelope round-trips; any damage gives a typed EnvelopeError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylime.linphone import envelope as env
from pylime.linphone.errors import EnvelopeError
from tests.linphone.test_linphone_envelope import GOLDEN_BODY, GOLDEN_CT

uuids = st.uuids().map(str)
users = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=12)
devices = st.builds(lambda u, d: f"sip:{u}@example.org;gr=urn:uuid:{d}", users, uuids)
envelopes = st.builds(
    env.Envelope,
    sender=devices,
    message_id=st.one_of(st.none(), st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)),
    key_parts=st.lists(st.builds(env.KeyPart, devices, st.binary(max_size=300)), min_size=1, max_size=5,
                       unique_by=lambda k: k.device_id).map(tuple),
    cipher_message=st.binary(min_size=1, max_size=600),
    cipher_deflated=st.booleans(),
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(envelopes, st.booleans())
def test_every_envelope_round_trips_deflated_or_plain(envelope, deflate):
    """build → parse gives back the same envelope, whether or not the body was compressed."""
    built = env.build_envelope(envelope, deflate=deflate)
    assert env.parse_envelope(built.content_type, built.body, built.content_encoding) == envelope


@FAST
@given(st.integers(0, len(GOLDEN_BODY) - 1), st.integers(1, 40), st.binary(max_size=8))
def test_damaged_bodies_fail_only_with_envelope_errors(start, length, junk):
    """Cutting or overwriting any span of the golden body parses or raises an EnvelopeError."""
    damaged = GOLDEN_BODY[:start] + junk + GOLDEN_BODY[start + length:]
    try:
        env.parse_envelope(GOLDEN_CT, damaged)
    except EnvelopeError:
        pass


@FAST
@given(st.binary(max_size=400), st.sampled_from([None, "deflate", "identity", "gzip"]))
def test_arbitrary_bytes_fail_only_with_envelope_errors(body, encoding):
    """No input makes the parser raise anything but an EnvelopeError."""
    try:
        env.parse_envelope(GOLDEN_CT, body, encoding)
    except EnvelopeError:
        pass


@FAST
@given(st.text(max_size=120))
def test_arbitrary_content_types_fail_only_with_envelope_errors(content_type):
    """A hostile Content-Type never escapes as anything but an EnvelopeError."""
    try:
        env.parse_envelope(content_type, GOLDEN_BODY)
    except EnvelopeError:
        pass
