"""The multipart/encrypted envelope: golden body, exact build form, round trips, malformed bodies."""

from __future__ import annotations

import base64
import re
import zlib

import pytest

from pylime.linphone import envelope as env
from pylime.linphone.errors import (
    AmbiguousCipherMessageError,
    ContentEncodingError,
    CpimError,
    DeviceNotInEnvelopeError,
    DuplicateKeyPartError,
    EnvelopeError,
    InvalidBase64Error,
    MalformedMultipartError,
    MissingBoundaryError,
    MissingCipherMessageError,
    MissingSenderError,
    NotEncryptedError,
)
from tests.linphone.helpers import ALICE_LAPTOP, ALICE_PHONE, BOB_DESKTOP, BOB_PHONE, BOUNDARY

# Golden body: the example of linphone.md §1.4 with the full values of linphone-5.1.65.md
# §2.2/§2.3 (the envelope Debian's liblinphone 5.1.65 parsed into 6 parts). Content-Length
# values are ours (§1.4's are illustrative and receivers ignore them); DR messages have the
# spec's sizes and heads: 164 bytes starting 01 01 01, then 87 bytes starting 01 00 01.
DR_BOB_PHONE = (
    "AQEBs4U8JcR61cErL4lSm8gjDVqaEnJ0BSEb5opo1ox04lqnmNbSM1ijblLvOMPMp8wC5LpsiMx5gK6zbbNRcf58W7SH"
    "+3psvsMbKqew1qz5SyRf4h6FYMvTk0gvzKlEkZiDLWmjQK+p0TUMRzU4rWMv+CojwvWyI70EWyGhLVXvLZHB+wWq/zis"
    "F0AXMTY7Xaa72zzVKBxdZFtX4ZrEZ2Vv3Ow="
)
DR_BOB_DESKTOP = (
    "AQABFFQbL3eTG6jvs2AerjS2wKxxUSF+cRaDP5FPEH/vvaSgiOumnJvr/YoWdk2Kr8AdqyX1ZlhDUDorUBU06q5lfB1/"
    "8BNVmnD2nAc6cfN8mSpF1SBf"
)
DR_ALICE_LAPTOP = (
    "AQABhkqWxJme0dZV2YBwyQ/Wa2Sm80CNQg8rPqMySliXGSVn2a3HYzdq7xw+WoF4KGY3nowEZUtcA+eyAofkwUNrlr4j"
    "2nZWtl4fso70CUb6TOktOEhp"
)
CIPHER = (
    "WGDdyCAELvffspP0k2exAPghPPp6hLEKg5oIHDN95QtLRcM+1Q6d8+IwaL8dVTVkOoZxrtmKlLxIfWsNu0wU2QiVhXN9"
    "dqKkw3/ZQ0wZ9JNEf28iAiJCy1JAYp3XjR2KBpxBgoru02wDiS9R+fNpE6mKX4me01P4"
)
CPIM_CLEAR = (
    f"From: <{ALICE_PHONE}>\r\n"
    "NS: imdn <urn:ietf:params:imdn>\r\n"
    "imdn.Message-ID: 7uQ2xVn0LcKa\r\n"
    "\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
)
SIPFRAG = f"From: <{ALICE_PHONE}>"


def _key_part(device: str, b64: str) -> str:
    return (f"Content-Id: {device}\r\nContent-Description: Cipher key\r\n"
            f"Content-Type: application/lime\r\nContent-Length: {len(b64)}\r\n\r\n{b64}")


GOLDEN_CT = f'multipart/encrypted;protocol="application/lime";boundary={BOUNDARY}'
GOLDEN_BODY = (
    f"--{BOUNDARY}\r\n"
    f"Content-Type: message/cpim\r\nContent-Length: {len(CPIM_CLEAR)}\r\n\r\n{CPIM_CLEAR}"
    f"\r\n--{BOUNDARY}\r\n"
    f"Content-Type: message/sipfrag\r\nContent-Length: {len(SIPFRAG)}\r\n\r\n{SIPFRAG}"
    f"\r\n--{BOUNDARY}\r\n" + _key_part(BOB_PHONE, DR_BOB_PHONE)
    + f"\r\n--{BOUNDARY}\r\n" + _key_part(BOB_DESKTOP, DR_BOB_DESKTOP)
    + f"\r\n--{BOUNDARY}\r\n" + _key_part(ALICE_LAPTOP, DR_ALICE_LAPTOP)
    + f"\r\n--{BOUNDARY}\r\n"
    f"Content-Description: Encrypted message\r\nContent-Type: application/octet-stream\r\n"
    f"Content-Length: {len(CIPHER)}\r\n\r\n{CIPHER}"
    f"\r\n--{BOUNDARY}--\r\n"
).encode()


def golden_envelope() -> env.Envelope:
    """The golden body's content as an Envelope."""
    return env.Envelope(
        sender=ALICE_PHONE,
        message_id="7uQ2xVn0LcKa",
        key_parts=(
            env.KeyPart(BOB_PHONE, base64.b64decode(DR_BOB_PHONE)),
            env.KeyPart(BOB_DESKTOP, base64.b64decode(DR_BOB_DESKTOP)),
            env.KeyPart(ALICE_LAPTOP, base64.b64decode(DR_ALICE_LAPTOP)),
        ),
        cipher_message=base64.b64decode(CIPHER),
    )


# ---------------------------------------------------------------- golden body, field by field


def test_golden_body_splits_into_the_six_parts_linphone_sees():
    """The spec's example splits into cpim, sipfrag, three lime key parts and one octet-stream."""
    parts = env.parse_multipart(GOLDEN_CT, GOLDEN_BODY)
    assert [p.content_type for p in parts] == [
        "message/cpim", "message/sipfrag",
        "application/lime", "application/lime", "application/lime",
        "application/octet-stream",
    ]
    assert parts[1].body.decode() == SIPFRAG and len(parts[1].body) == 82
    assert [p.header("Content-Id") for p in parts[2:5]] == [BOB_PHONE, BOB_DESKTOP, ALICE_LAPTOP]
    assert {p.header("Content-Description") for p in parts[2:5]} == {"Cipher key"}
    assert parts[5].header("Content-Description") == "Encrypted message"


def test_golden_body_parses_field_by_field():
    """Sender, IMDN id, each device's DR message (sizes and heads of the spec) and the cipher."""
    e = env.parse_envelope(GOLDEN_CT, GOLDEN_BODY)
    assert e.sender == ALICE_PHONE
    assert e.message_id == "7uQ2xVn0LcKa"
    assert e.device_ids == (BOB_PHONE, BOB_DESKTOP, ALICE_LAPTOP)
    phone, desktop, laptop = (e.dr_message_for(d) for d in e.device_ids)
    assert (len(phone), phone[:3]) == (164, b"\x01\x01\x01"), "first message: X3DH init flag set"
    assert (len(desktop), desktop[:3]) == (87, b"\x01\x00\x01"), "existing session"
    assert laptop[:3] == b"\x01\x00\x01"
    assert len(DR_BOB_PHONE) == 220 and len(DR_BOB_DESKTOP) == 116, "spec's base64 lengths"
    assert e.cipher_message == base64.b64decode(CIPHER)
    assert e.cipher_deflated is False


def test_golden_body_is_exactly_what_the_builder_writes():
    """Building the golden content with the spec's boundary reproduces the golden bytes."""
    built = env.build_envelope(golden_envelope(), boundary=BOUNDARY, deflate=False)
    assert built.content_type == GOLDEN_CT
    assert built.content_encoding is None
    assert built.body == GOLDEN_BODY


# ---------------------------------------------------------------- the exact form 5.1.65 survives


def test_content_type_has_quoted_protocol_and_the_boundary_last_unquoted():
    """Exactly multipart/encrypted;protocol="application/lime";boundary=<b>, nothing else."""
    built = env.build_envelope(golden_envelope(), deflate=False)
    match = re.fullmatch(
        r'multipart/encrypted;protocol="application/lime";boundary=(-{10}[A-Za-z0-9-]{59})',
        built.content_type,
    )
    assert match, built.content_type
    assert built.body.startswith(b"--" + match.group(1).encode() + b"\r\n"), "no preamble"
    assert built.body.endswith(b"\r\n--" + match.group(1).encode() + b"--\r\n")


def test_built_body_uses_crlf_only_and_unwrapped_base64():
    """No bare LF anywhere; each base64 body is one line."""
    built = env.build_envelope(golden_envelope(), deflate=False)
    assert b"\n" not in built.body.replace(b"\r\n", b"")
    for part in env.parse_multipart(built.content_type, built.body)[2:]:
        assert b"\r\n" not in part.body


def test_key_parts_use_the_exact_content_id_spelling_and_bare_gruu():
    """Content-Id (not Content-ID), a bare GRUU without angle brackets, before Content-Type."""
    built = env.build_envelope(golden_envelope(), deflate=False)
    assert built.body.count(b"\r\nContent-Id: sip:") == 3
    assert b"Content-ID" not in built.body and b"Content-Id: <" not in built.body
    assert b"Content-Id: " + BOB_PHONE.encode() + b"\r\nContent-Description: Cipher key\r\n" \
        b"Content-Type: application/lime\r\n" in built.body


def test_exactly_one_octet_stream_part_is_built():
    """Linphone 5.1 takes the last octet-stream and master the first: we send one."""
    built = env.build_envelope(golden_envelope(), deflate=False)
    assert built.body.count(b"Content-Type: application/octet-stream") == 1


def test_part_content_lengths_are_accurate():
    """Each part's Content-Length is its body's length (receivers ignore it, but it is right)."""
    built = env.build_envelope(golden_envelope(), deflate=False)
    for part in env.parse_multipart(built.content_type, built.body):
        assert int(part.header("Content-Length") or -1) == len(part.body)


# ---------------------------------------------------------------- round trips, deflated and plain


def test_build_parse_round_trip_keeps_every_field():
    """Whatever is built parses back to the same envelope."""
    original = golden_envelope()
    built = env.build_envelope(original)
    assert env.parse_envelope(built.content_type, built.body, built.content_encoding) == original


def test_bodies_at_or_above_the_threshold_are_zlib_deflated():
    """A big body travels zlib-compressed with Content-Encoding: deflate and parses back."""
    built = env.build_envelope(golden_envelope())
    assert built.content_encoding == "deflate"
    assert built.headers == {"Content-Type": built.content_type, "Content-Encoding": "deflate"}
    raw = zlib.decompress(built.body)  # zlib format (RFC 1950), not raw deflate
    assert len(raw) >= env.DEFLATE_THRESHOLD
    assert env.parse_envelope(built.content_type, raw) == golden_envelope()


def test_deflate_threshold_is_inclusive_and_smaller_bodies_go_plain(monkeypatch):
    """At exactly the threshold the body is deflated; one byte below it is sent as it is."""
    plain = env.build_envelope(golden_envelope(), boundary=BOUNDARY, deflate=False).body
    for threshold, expected in ((len(plain), "deflate"), (len(plain) + 1, None)):
        monkeypatch.setattr(env, "DEFLATE_THRESHOLD", threshold)
        built = env.build_envelope(golden_envelope(), boundary=BOUNDARY)
        assert built.content_encoding == expected
        body = zlib.decompress(built.body) if expected else built.body
        assert body == plain


def test_even_the_smallest_envelope_reaches_the_threshold_and_both_forms_parse():
    """Four 69-character delimiters alone pass 256 bytes; plain and deflated forms parse alike."""
    small = env.Envelope(ALICE_PHONE, None, (env.KeyPart(BOB_PHONE, b"\x01\x00\x01"),), b"c")
    plain = env.build_envelope(small, deflate=False)
    packed = env.build_envelope(small)
    assert len(plain.body) >= env.DEFLATE_THRESHOLD
    assert plain.content_encoding is None and "Content-Encoding" not in plain.headers
    assert packed.content_encoding == "deflate"
    assert env.parse_envelope(plain.content_type, plain.body) == small
    assert env.parse_envelope(packed.content_type, packed.body, "deflate") == small


def test_incompressible_bodies_stay_plain_as_belle_sip_does():
    """belle-sip keeps a body uncompressed unless deflate saves more than 27 bytes."""
    noise = bytes(range(256)) * 8
    big = env.Envelope(ALICE_PHONE, None, (env.KeyPart(BOB_PHONE, noise[:300]),),
                       zlib.compress(noise, 9) * 3)
    built = env.build_envelope(big)
    raw = env.build_envelope(big, boundary=built.content_type.rsplit("=", 1)[1], deflate=False)
    if len(zlib.compress(raw.body)) + env.DEFLATE_HEADER_COST < len(raw.body):
        assert built.content_encoding == "deflate"
    else:
        assert built.content_encoding is None


def test_a_deflated_cipher_part_is_flagged_for_plaintext_inflation():
    """Content-Encoding: deflate on the octet-stream part sets cipher_deflated, both ways."""
    flagged = env.Envelope(ALICE_PHONE, "abc", (env.KeyPart(BOB_PHONE, b"k"),), b"c",
                           cipher_deflated=True)
    built = env.build_envelope(flagged, deflate=False)
    assert b"Content-Encoding: deflate\r\nContent-Type: application/octet-stream" in built.body
    assert env.parse_envelope(built.content_type, built.body).cipher_deflated is True


# ---------------------------------------------------------------- missing device, malformed bodies


def test_a_device_missing_from_the_envelope_gets_a_clear_error():
    """Looking up a device without a key part raises DeviceNotInEnvelopeError (a LookupError)."""
    e = env.parse_envelope(GOLDEN_CT, GOLDEN_BODY)
    stranger = "sip:carol@sip.example.org;gr=urn:uuid:cccc5555-0000-4000-8000-000000000005"
    with pytest.raises(DeviceNotInEnvelopeError, match="no key part for sip:carol") as info:
        e.dr_message_for(stranger)
    assert isinstance(info.value, LookupError)


def test_content_id_match_is_exact_string_equality():
    """A device id that differs only by a port or case is not matched, as in Linphone."""
    e = env.parse_envelope(GOLDEN_CT, GOLDEN_BODY)
    with pytest.raises(DeviceNotInEnvelopeError):
        e.dr_message_for(BOB_PHONE.replace("sip.example.org", "sip.example.org:5060"))
    with pytest.raises(DeviceNotInEnvelopeError):
        e.dr_message_for(BOB_PHONE.upper())


def _swap(old: str, new: str) -> bytes:
    return GOLDEN_BODY.replace(old.encode(), new.encode())


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("text/plain", GOLDEN_BODY, NotEncryptedError),
        (GOLDEN_CT.replace("encrypted", "mixed"), GOLDEN_BODY, NotEncryptedError),
        (GOLDEN_CT.replace("application/lime", "application/pgp-encrypted"), GOLDEN_BODY,
         NotEncryptedError),
        ('multipart/encrypted;protocol="application/lime"', GOLDEN_BODY, MissingBoundaryError),
        (GOLDEN_CT, b"preamble\r\n" + GOLDEN_BODY, MalformedMultipartError),
        (GOLDEN_CT, GOLDEN_BODY.replace(b"\r\n", b"\n"), MalformedMultipartError),
        (GOLDEN_CT, GOLDEN_BODY[: -len(f"--{BOUNDARY}--\r\n") - 2], MalformedMultipartError),
        (GOLDEN_CT, b"no boundary here", MalformedMultipartError),
        (GOLDEN_CT, _swap("Content-Type: message/cpim", "Content-Type: text/plain")
         .replace(b"Content-Type: message/sipfrag", b"Content-Type: text/plain"), MissingSenderError),
        (GOLDEN_CT, _swap(DR_BOB_DESKTOP, "not*base64!"), InvalidBase64Error),
        (GOLDEN_CT, _swap(CIPHER, CIPHER[:-3]), InvalidBase64Error),
        (GOLDEN_CT, _swap(BOB_DESKTOP, BOB_PHONE), DuplicateKeyPartError),
        (GOLDEN_CT, _swap("application/octet-stream", "application/x-other"),
         MissingCipherMessageError),
        (GOLDEN_CT, _swap("Content-Type: application/lime\r\nContent-Length: 116",
                          "Content-Type: application/octet-stream\r\nContent-Length: 116"),
         AmbiguousCipherMessageError),
        (GOLDEN_CT, _swap("NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: 7uQ2xVn0LcKa\r\n\r\n",
                          "broken line without colon\r\n\r\n"), CpimError),
    ],
    ids=[
        "not-multipart", "multipart-mixed", "other-protocol", "no-boundary", "preamble",
        "bare-lf", "no-closing-delimiter", "boundary-absent", "no-sender", "bad-key-base64",
        "bad-cipher-base64", "duplicate-key-part", "no-cipher-part", "two-cipher-parts",
        "bad-cleartext-cpim",
    ],
)
def test_each_malformed_envelope_has_its_own_error(content_type, body, error):
    """Every shape Linphone drops or crashes on raises its own EnvelopeError subclass."""
    with pytest.raises(error) as info:
        env.parse_envelope(content_type, body)
    assert isinstance(info.value, EnvelopeError) and isinstance(info.value, ValueError)


def test_unknown_or_broken_content_encodings_are_refused():
    """gzip is not Linphone's; raw deflate (no zlib header) gets 415 there; garbage does not inflate."""
    raw_deflate = zlib.compressobj(wbits=-15)
    raw = raw_deflate.compress(GOLDEN_BODY) + raw_deflate.flush()
    for encoding, body in (("gzip", GOLDEN_BODY), ("deflate", raw), ("deflate", b"garbage"),
                           ("deflate", zlib.compress(GOLDEN_BODY)[:-10])):
        with pytest.raises(ContentEncodingError):
            env.parse_envelope(GOLDEN_CT, body, encoding)


def test_inflate_refuses_deflate_bombs():
    """A body that inflates beyond the limit is refused instead of filling memory."""
    with pytest.raises(ContentEncodingError, match="exceeds"):
        env.inflate(zlib.compress(b"\0" * 4096), limit=1024)


def test_parser_is_lenient_where_linphone_is():
    """Header case and order, a quoted boundary, missing protocol and wrapped base64 are accepted."""
    lenient = (GOLDEN_BODY.replace(b"Content-Id:", b"content-id:")
               .replace(DR_BOB_PHONE.encode(), DR_BOB_PHONE[:76].encode() + b"\r\n"
                        + DR_BOB_PHONE[76:].encode()))
    ct = f'Multipart/Encrypted; boundary="{BOUNDARY}"'
    e = env.parse_envelope(ct, lenient)
    assert e == golden_envelope()


def test_builder_refuses_what_would_break_the_receiver():
    """Non-token boundaries, a boundary inside a part, header injection and no key part."""
    with pytest.raises(MalformedMultipartError):
        env.build_envelope(golden_envelope(), boundary="has space")
    clash = env.Envelope(ALICE_PHONE, "--XYZ", golden_envelope().key_parts, b"c")
    with pytest.raises(MalformedMultipartError, match="inside a part"):
        env.build_envelope(clash, boundary="XYZ")
    bad = env.Envelope(ALICE_PHONE + "\r\nX: y", None, golden_envelope().key_parts, b"")
    with pytest.raises(ValueError):
        env.build_envelope(bad)
    with pytest.raises(EnvelopeError):
        env.build_envelope(env.Envelope(ALICE_PHONE, None, (), b"c"))


def test_reprs_show_no_key_material():
    """Envelope, key part and body reprs name devices and sizes only."""
    e = golden_envelope()
    text = repr(e) + repr(e.key_parts[0]) + repr(env.build_envelope(e))
    assert DR_BOB_PHONE[:16] not in text and "cipher_message" not in text
