"""The envelope shapes that crash Debian's liblinphone 5.1.65 receiver (linphone-5.1.65.md §2.5).

Each variant is derived from an envelope pylime builds, changed in exactly one way.
"""

from __future__ import annotations

from pylime.linphone.envelope import EncryptedBody, Envelope, KeyPart, build_envelope

ALICE = "sip:alice@localhost;gr=urn:uuid:aaaa1111-0000-4000-8000-000000000001"
BOB = "sip:bob@localhost;gr=urn:uuid:bbbb2222-0000-4000-8000-000000000002"


def sample_body() -> EncryptedBody:
    """A small, uncompressed one-to-one envelope (DR-message-shaped bytes, not real ciphertext)."""
    envelope = Envelope(ALICE, "imdn-0001", (KeyPart(BOB, b"\x01\x01\x01" + bytes(161)),), bytes(80))
    return build_envelope(envelope, deflate=False)


def crash_variants() -> dict[str, tuple[str, bytes]]:
    """name → (Content-Type, body) for each shape that kills a 5.1.65 receiver."""
    good = sample_body()
    ct, body = good.content_type, good.body
    boundary = ct.split(";boundary=", 1)[1]
    return {
        "boundary-first": (f'multipart/encrypted;boundary={boundary};protocol="application/lime"', body),
        "boundary-quoted": (f'multipart/encrypted;protocol="application/lime";boundary="{boundary}"', body),
        "lf-line-endings": (ct, body.replace(b"\r\n", b"\n")),
        "preamble": (ct, b"This is a preamble.\r\n" + body),
        "boundary-missing": ('multipart/encrypted;protocol="application/lime"', body),
        # Found by the wire property test: an empty body in the last part (e.g. an empty
        # cipher message, what lime's DR-message policy yields) is a SIGSEGV too.
        "empty-last-part": (ct, _empty_last_body(body, boundary)),
    }


def _empty_last_body(body: bytes, boundary: str) -> bytes:
    """``body`` with the last part's content removed (its headers kept)."""
    closing = b"\r\n--" + boundary.encode() + b"--\r\n"
    last_headers = body[: body.rindex(closing)].rsplit(b"\r\n\r\n", 1)[0]
    return last_headers + b"\r\n\r\n" + closing
