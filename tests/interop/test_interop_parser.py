"""pylime's envelope parser against the shapes that crash liblinphone 5.1.65 (no liblinphone needed)."""

from __future__ import annotations

import pytest

from pylime.linphone import Envelope, KeyPart, build_envelope, parse_envelope
from pylime.linphone.envelope import Part, build_multipart, new_boundary
from pylime.linphone.errors import EnvelopeError, MalformedMultipartError, MissingBoundaryError
from tests.interop.variants import ALICE, BOB, crash_variants, sample_body

EXPECTED = {
    "boundary-first": MalformedMultipartError,
    "boundary-quoted": MalformedMultipartError,
    "lf-line-endings": MalformedMultipartError,
    "preamble": MalformedMultipartError,
    "boundary-missing": MissingBoundaryError,
    "empty-last-part": MalformedMultipartError,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_answers_each_crash_variant_with_a_typed_error(name: str) -> None:
    """Every body that kills a 5.1.65 receiver is refused with its EnvelopeError subclass."""
    content_type, body = crash_variants()[name]
    with pytest.raises(EXPECTED[name]) as info:
        parse_envelope(content_type, body)
    assert isinstance(info.value, EnvelopeError)


def test_parser_accepts_the_spellings_linphone_survives() -> None:
    """Spaces around ';' and '=', and an upper-case type that bypasses belle-sip's channel, parse."""
    good = sample_body()
    boundary = good.content_type.split(";boundary=", 1)[1]
    for content_type in (
        f'multipart/encrypted; protocol="application/lime"; boundary={boundary}',
        f'multipart/encrypted;protocol = "application/lime";boundary = {boundary}',
        f'Multipart/Encrypted;boundary="{boundary}";protocol="application/lime"',
    ):
        assert parse_envelope(content_type, good.body).device_ids == (BOB,)


def test_builder_refuses_an_empty_cipher_message() -> None:
    """lime's DR-message policy yields an empty cipher message; as the last part it kills 5.1.65."""
    envelope = Envelope(ALICE, "m", (KeyPart(BOB, b"\x01\x00\x01"),), b"")
    with pytest.raises(EnvelopeError, match="empty"):
        build_envelope(envelope)
    with pytest.raises(MalformedMultipartError, match="last part is empty"):
        build_multipart([Part((("Content-Type", "text/plain"),), b"")], new_boundary())
