"""Manual verification: pylime's fingerprint of an identity key and its QR payload."""

from __future__ import annotations

import hashlib
import io

import pytest

from pylime import Curve, PeerStatus
from pylime.linphone import (
    IdentityKeyChanged,
    InvalidFingerprintError,
    SecurityEvents,
    fingerprint,
    fingerprints_match,
    format_fingerprint,
    parse_qr_payload,
    qr_payload,
    qr_terminal,
    save_qr,
    trust_scanned,
)
from tests.linphone.helpers import BOB_PHONE, FakeLime

KEY = bytes(range(32))


def test_fingerprint_follows_the_documented_derivation():
    """SHA-512(domain ‖ curve id ‖ Ik); twelve 5-byte chunks mod 100000, zero-padded."""
    digest = hashlib.sha512(b"pylime-ik-fingerprint-v1" + b"\x01" + KEY).digest()
    expected = " ".join(f"{int.from_bytes(digest[i:i + 5], 'big') % 100000:05d}"
                        for i in range(0, 60, 5))
    assert fingerprint(KEY) == expected
    groups = expected.split()
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)


def test_the_curve_is_part_of_the_fingerprint():
    """Same bytes on another curve id give another fingerprint; Ed448 keys have 57 bytes."""
    key448 = bytes(range(57))
    assert fingerprint(key448, Curve.C448) != fingerprint(key448[:32], Curve.C25519)
    with pytest.raises(InvalidFingerprintError):
        fingerprint(KEY, Curve.C448)
    with pytest.raises(InvalidFingerprintError):
        fingerprint(KEY, 7)


def test_formatted_fingerprint_reads_as_three_lines_of_four_groups():
    """Curve label, then four groups per line, aligned."""
    lines = format_fingerprint(KEY).splitlines()
    assert len(lines) == 3 and lines[0].startswith("c25519  ")
    assert [len(line.split()) for line in lines] == [5, 4, 4]
    assert fingerprints_match(format_fingerprint(KEY), fingerprint(KEY))


def test_fingerprints_compare_ignoring_layout_and_detect_a_difference():
    """Spacing and line breaks do not matter; one digit does; garbage is an error."""
    other = bytes(31) + b"\x01"
    assert fingerprints_match(fingerprint(KEY).replace(" ", ""), fingerprint(KEY))
    assert not fingerprints_match(fingerprint(KEY), fingerprint(other))
    with pytest.raises(InvalidFingerprintError):
        fingerprints_match("12345", fingerprint(KEY))


def test_qr_payload_round_trips_device_curve_and_key():
    """pylime:ik:1:<curve>:<b64url>:<device id>, device id normalised from a Contact."""
    payload = qr_payload(f"<{BOB_PHONE}>", KEY)
    assert payload.startswith("pylime:ik:1:1:") and payload.endswith(":" + BOB_PHONE)
    scanned = parse_qr_payload(payload)
    assert (scanned.device_id, scanned.curve, scanned.key) == (BOB_PHONE, Curve.C25519, KEY)
    assert scanned.fingerprint == fingerprint(KEY)
    assert KEY.hex() not in repr(scanned)


@pytest.mark.parametrize("payload", [
    "hello", "pylime:ik:1:1:AAAA", "pylime:ik:1:x:AAAA:" + BOB_PHONE,
    "pylime:ik:1:9:AAAA:" + BOB_PHONE, "pylime:ik:1:1:AAAA:" + BOB_PHONE,
    "pylime:ik:1:1:" + "A" * 43 + ":sip:bob@example.org",
])
def test_bad_qr_payloads_raise(payload):
    """Wrong prefix, missing fields, bad curve, short key or a device id without gr."""
    with pytest.raises(InvalidFingerprintError):
        parse_qr_payload(payload)


def test_qr_renders_to_terminal_text_png_and_svg(tmp_path):
    """Half-block text without ANSI escapes; PNG and SVG through segno, to paths or streams."""
    payload = qr_payload(BOB_PHONE, KEY)
    text = qr_terminal(payload)
    assert "\x1b" not in text and set(text) <= set("\u2588\u2580\u2584 \n")
    assert len(text.splitlines()) >= 15
    save_qr(payload, tmp_path / "id.png")
    assert (tmp_path / "id.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    stream = io.BytesIO()
    save_qr(payload, stream, kind="svg")
    assert b"<svg" in stream.getvalue()
    with pytest.raises(ValueError):
        save_qr(payload, stream, kind="gif")


def test_a_scanned_qr_trusts_the_device_like_a_verified_sas():
    """trust_scanned stores the key as TRUSTED; another stored key is replaced with an event."""
    lime = FakeLime("sip:alice@example.org;gr=urn:uuid:aaaa1111-0000-4000-8000-000000000001")
    lime.peers[BOB_PHONE] = (b"M" * 32, PeerStatus.UNTRUSTED)
    events = SecurityEvents()
    with events.recording(IdentityKeyChanged) as seen:
        assert trust_scanned(lime, qr_payload(BOB_PHONE, KEY), events=events) is PeerStatus.TRUSTED
    assert lime.stored_key(BOB_PHONE) == KEY and len(seen) == 1
