"""Fuzzing handle(): it never raises, always answers a well-formed message, never corrupts keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ks_wire import Device, get_bundles, hdr, u16

from pylime.keyserver import KeyServer
from pylime.keyserver.protocol import parse_response
from pylime.types import Curve

ALICE = "sip:alice@example.org;gr=urn:uuid:0000-a"
VICTIM = "sip:victim@example.org;gr=urn:uuid:0000-v"


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[KeyServer]:
    """One server shared by all examples, holding a victim device the fuzzer must not damage."""
    with KeyServer() as server:
        for curve in (Curve.C25519, Curve.C448):
            server.handle(VICTIM, Device(VICTIM, curve).register([]))
        yield server


def _valid_prefix() -> st.SearchStrategy[bytes]:
    """Bodies that start like real requests, so the fuzzer gets past the header checks."""
    return st.builds(
        lambda v, t, c, rest: bytes((v, t, c)) + rest,
        st.sampled_from([1, 1, 1, 0, 2]),
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 0xFF, 0x42]),
        st.sampled_from([1, 2, 0, 3]),
        st.binary(max_size=400),
    )


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(st.binary(max_size=64), _valid_prefix()),
    sender=st.one_of(st.none(), st.text(max_size=40), st.just(ALICE)),
    content_type=st.sampled_from(["x3dh/octet-stream", "text/plain", None]),
)
def test_handle_never_raises_and_answers_wellformed(
    fuzzed: KeyServer, body: bytes, sender: str | None, content_type: str | None
) -> None:
    """Any input gets a parseable answer, and another device's stored keys stay intact."""
    answer = fuzzed.handle(sender, body, content_type=content_type)
    assert isinstance(answer, bytes) and len(answer) >= 3 and answer[0] == 1
    if answer[1] == 0xFF:
        assert len(answer) >= 4
    elif answer[2] in (1, 2, 3, 4, 5):  # every curve the server serves
        parse_response(answer)  # raises if malformed
    # The victim never sends: its keys must survive whatever the others send.
    for curve in (Curve.C25519, Curve.C448):
        expected = hdr(0x06, curve) + u16(1) + Device(VICTIM, curve).bundle(None)
        assert fuzzed.handle(ALICE, get_bundles(curve, VICTIM)) == expected
