"""Our envelopes through Debian's belle-sip 5.1.64, the parser a liblinphone 5.1.65 receiver runs.

Skipped where ``libbellesip1`` is not installed. The oracle is first shown to reproduce the
shapes linphone-5.1.65.md §2.4/§2.5 observed to crash or be refused, so that its approval of
our bodies means something.
"""

from __future__ import annotations

import os
import zlib

import pytest

from pylime.linphone import envelope as env
from tests.linphone import bellesip
from tests.linphone.helpers import ALICE_PHONE, BOB_PHONE, BOUNDARY
from tests.linphone.test_linphone_envelope import GOLDEN_BODY, GOLDEN_CT, golden_envelope

pytestmark = pytest.mark.skipif(bool(bellesip.MISSING), reason=bellesip.MISSING or "present")


def _envelopes() -> list[env.Envelope]:
    devices = [f"sip:u{i}@example.org;gr=urn:uuid:00000000-0000-4000-8000-{i:012d}" for i in range(5)]
    return [
        golden_envelope(),
        env.Envelope(ALICE_PHONE, None, (env.KeyPart(BOB_PHONE, b"\x01\x00\x01"),), b"\x00"),
        env.Envelope(ALICE_PHONE, "Xy12", tuple(env.KeyPart(d, os.urandom(87 + i)) for i, d in
                                               enumerate(devices)), os.urandom(3000), True),
    ]


def test_the_oracle_reproduces_the_shapes_5_1_65_refuses_or_crashes_on():
    """Unquoted protocol is rejected; LF endings, a preamble and a quoted boundary give no part."""
    assert bellesip.parse_content_type(GOLDEN_CT.replace('"application/lime"', "application/lime")) is None
    assert bellesip.split(GOLDEN_BODY.replace(b"\r\n", b"\n"), BOUNDARY) == []
    assert bellesip.split(b"preamble\r\n" + GOLDEN_BODY, BOUNDARY) == []
    quoted = GOLDEN_CT.replace(f"boundary={BOUNDARY}", f'boundary="{BOUNDARY}"')
    assert bellesip.split(GOLDEN_BODY, bellesip.channel_boundary(quoted) or "") == []
    first = f'multipart/encrypted;boundary={BOUNDARY};protocol="application/lime"'
    assert bellesip.split(GOLDEN_BODY, bellesip.channel_boundary(first) or "") == []


@pytest.mark.parametrize("index", range(3))
def test_belle_sip_reads_our_content_type_with_the_quoted_protocol_and_last_boundary(index):
    """Type multipart/encrypted, protocol stored as "application/lime" with its quotes."""
    built = env.build_envelope(_envelopes()[index])
    parsed = bellesip.parse_content_type(built.content_type)
    boundary = built.content_type.rsplit("=", 1)[1]
    assert parsed == bellesip.ParsedContentType("multipart", "encrypted", '"application/lime"', boundary)
    assert bellesip.channel_boundary(built.content_type) == boundary


@pytest.mark.parametrize("index", range(3))
def test_belle_sip_splits_our_bodies_into_exactly_our_parts(index):
    """Same number of parts, the exact Content-Id string per key part, identical part bodies."""
    envelope = _envelopes()[index]
    built = env.build_envelope(envelope, deflate=False)
    ours = env.parse_multipart(built.content_type, built.body)
    theirs = bellesip.split(built.body, bellesip.channel_boundary(built.content_type) or "")
    assert len(theirs) == len(ours) == len(envelope.key_parts) + (3 if envelope.message_id else 2)
    for mine, seen in zip(ours, theirs):
        assert seen.body == mine.body
        assert seen.headers == dict(mine.headers)
    key_parts = [p for p in theirs if p.headers.get("Content-Type") == "application/lime"]
    assert [p.headers["Content-Id"] for p in key_parts] == list(envelope.device_ids)
    cipher = [p for p in theirs if p.headers.get("Content-Type") == "application/octet-stream"]
    assert len(cipher) == 1


@pytest.mark.parametrize("index", range(3))
def test_belle_sip_inflates_our_deflated_bodies(index):
    """Our Content-Encoding: deflate body is zlib data that belle-sip inflates to the plain body."""
    envelope = _envelopes()[index]
    boundary = env.new_boundary()
    packed = env.build_envelope(envelope, boundary=boundary)
    plain = env.build_envelope(envelope, boundary=boundary, deflate=False)
    assert packed.content_encoding == "deflate"
    assert bellesip.inflate(packed.body) == plain.body


@pytest.mark.parametrize("size", [200, 255, 256, 257, 300, 1000])
@pytest.mark.parametrize("random", [False, True], ids=["text", "noise"])
def test_we_compress_exactly_when_belle_sip_does(size, random):
    """Threshold 256 and the 27-byte saving rule: same decision, same zlib bytes."""
    data = os.urandom(size) if random else (b"Content-Type: application/lime\r\n" * 40)[:size]
    theirs = bellesip.deflate(data)
    compressed = zlib.compress(data)
    ours = compressed if (len(data) >= env.DEFLATE_THRESHOLD
                          and len(compressed) + env.DEFLATE_HEADER_COST < len(data)) else None
    assert ours == theirs
