"""message/cpim: the inner plaintext and the cleartext sender part, as liblinphone writes them."""

from __future__ import annotations

import datetime as dt

import pytest

from pylime.linphone.cpim import build_minimal_cpim, build_text_cpim, new_message_id, parse_cpim
from pylime.linphone.errors import CpimError
from tests.linphone.helpers import ALICE_PHONE, ROOM

# linphone.md §1.5, with the device ids written out.
INNER = (
    f"From: <{ALICE_PHONE}>\r\n"
    f"To: <{ROOM}>\r\n"
    "DateTime: 2025-06-24T16:10:10Z\r\n"
    "NS: imdn <urn:ietf:params:imdn>\r\n"
    "imdn.Message-ID: 7uQ2xVn0LcKa\r\n"
    "imdn.Disposition-Notification: positive-delivery, display\r\n"
    "\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 5\r\n"
    "\r\n"
    "Hello"
).encode()


def test_the_spec_inner_cpim_parses_field_by_field():
    """From (URI-only), To, DateTime, IMDN id and disposition, content type and text."""
    cpim = parse_cpim(INNER)
    assert cpim.sender == ALICE_PHONE
    assert cpim.header("To") == f"<{ROOM}>"
    assert cpim.header("DateTime") == "2025-06-24T16:10:10Z"
    assert cpim.message_id == "7uQ2xVn0LcKa"
    assert cpim.header("imdn.Disposition-Notification") == "positive-delivery, display"
    assert cpim.content_type == "text/plain"
    assert cpim.text == "Hello"


def test_a_text_message_is_built_exactly_as_the_spec_shows():
    """build_text_cpim with the spec's values gives the spec's bytes."""
    when = dt.datetime(2025, 6, 24, 16, 10, 10, tzinfo=dt.UTC)
    cpim = build_text_cpim(ALICE_PHONE, ROOM, "Hello", message_id="7uQ2xVn0LcKa", date=when)
    assert cpim.to_bytes() == INNER


def test_a_display_name_in_from_is_stripped_from_the_sender():
    """The sender is the URI inside the angle brackets."""
    cpim = parse_cpim(INNER.replace(b"From: <", b'From: "Alice" <'))
    assert cpim.sender == ALICE_PHONE


def test_utf8_text_round_trips():
    """Non-ASCII text survives build and parse; Content-Length counts bytes."""
    cpim = build_text_cpim(ALICE_PHONE, ROOM, "h\u00e9llo \u2603")
    assert parse_cpim(cpim.to_bytes()).text == "h\u00e9llo \u2603"
    assert cpim.content_header("Content-Length") == str(len("h\u00e9llo \u2603".encode()))


def test_the_cleartext_part_has_sender_and_id_and_no_content():
    """From, NS imdn, imdn.Message-ID, then Content-Type: text/plain and an empty content."""
    raw = build_minimal_cpim(ALICE_PHONE, "7uQ2xVn0LcKa").to_bytes()
    assert raw == (f"From: <{ALICE_PHONE}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
                   "imdn.Message-ID: 7uQ2xVn0LcKa\r\n\r\nContent-Type: text/plain\r\n\r\n").encode()
    parsed = parse_cpim(raw)
    assert (parsed.sender, parsed.message_id, parsed.content) == (ALICE_PHONE, "7uQ2xVn0LcKa", b"")


def test_the_spec_shape_without_the_last_blank_line_also_parses():
    """linphone.md §1.4 shows the cleartext part ending right after Content-Type."""
    raw = (f"From: <{ALICE_PHONE}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
           "imdn.Message-ID: x\r\n\r\nContent-Type: text/plain\r\n").encode()
    assert parse_cpim(raw).content_type == "text/plain"


def test_message_ids_are_twelve_random_alphanumerics():
    """The IMDN id liblinphone uses is a 12-character token."""
    ids = {new_message_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 12 and i.isalnum() for i in ids)


@pytest.mark.parametrize("raw", [b"From: <sip:a@b>", b"no colon here\r\n\r\n\r\n", b"\xff: x\r\n\r\n\r\n"])
def test_malformed_cpim_raises_cpim_error(raw):
    """No blank line, a header without a colon, or non-UTF-8 headers: CpimError."""
    with pytest.raises(CpimError):
        parse_cpim(raw)


def test_cpim_repr_hides_the_content():
    """The message text never shows in a repr."""
    assert "Hello" not in repr(parse_cpim(INNER))
