"""Our envelopes on the wire to Debian's liblinphone 5.1.65 (issue 9, part 2).

A core without account or lime (a basic chat room: the multipart modifier splits the body into
contents, the lime engine skips it) receives raw SIP MESSAGEs on 127.0.0.1. Well-formed envelopes
share one receiving process per module; each crash variant gets a fresh one, so that a SIGSEGV
is recorded as the result it is.
"""

from __future__ import annotations

import base64
import itertools
import os
import signal
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylime import Curve
from pylime.keyserver import KeyServer
from pylime.linphone import EncryptedBody, Envelope, KeyPart, build_envelope, encrypt_message
from pylime.linphone.envelope import DEFLATE_THRESHOLD
from tests.interop.harness import PeerCrashed, PeerProcess, Transcript, send_message
from tests.interop.liblinphone import LINPHONE_MISSING
from tests.interop.variants import ALICE, crash_variants

_uuids = itertools.count(1)
UDP_LIMIT = 60_000  # larger bodies go over TCP: a UDP datagram holds at most 65507 bytes


def device(user: str = "bob") -> str:
    """A fresh Flexisip-style GRUU."""
    return f"sip:{user}@localhost;gr=urn:uuid:{next(_uuids):08x}-0000-4000-8000-{os.urandom(6).hex()}"


def dr_message(size: int = 164) -> bytes:
    """Bytes shaped like a lime DR message (header 01 01 01 for an X3DH init)."""
    return b"\x01\x01\x01" + os.urandom(max(0, size - 3))


def envelope(devices: int, cipher: bytes, *, dr_size: int = 164) -> Envelope:
    """An envelope from alice to ``devices`` fresh devices."""
    keys = tuple(KeyPart(device(), dr_message(dr_size)) for _ in range(devices))
    return Envelope(ALICE, f"imdn-{next(_uuids)}", keys, cipher)


@dataclass
class Receiver:
    """One receiving core in a child process, and what it has delivered so far."""

    peer: PeerProcess
    udp: int
    tcp: int
    delivered: int = 0

    def deliver(self, body: EncryptedBody) -> tuple[int | None, dict[str, Any] | None]:
        """Send ``body`` in a MESSAGE; return the SIP status and the delivered message (if any)."""
        tcp = len(body.body) > UDP_LIMIT
        status = send_message(self.tcp if tcp else self.udp, body.body, body.headers, tcp=tcp, timeout=10)
        if status != 200:
            return status, None
        got = self.peer("messages", name="rx", count=self.delivered + 1, timeout=10)["messages"]
        self.delivered = len(got)
        return status, got[-1]


def start_receiver(directory: Path) -> Receiver:
    """A fresh child process with one plain core listening on 127.0.0.1 (UDP and TCP)."""
    child = PeerProcess(directory)
    ports = child("core", name="rx")
    return Receiver(child, ports["udp"], ports["tcp"])


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A 5.1.65 core shared by the well-formed cases of this module."""
    if LINPHONE_MISSING:
        pytest.skip(LINPHONE_MISSING)
    rx = start_receiver(tmp_path_factory.mktemp("rx"))
    try:
        yield rx
    finally:
        rx.peer.close()


def check_delivery(sent: Envelope, body: EncryptedBody, message: dict[str, Any]) -> None:
    """liblinphone's contents are our parts: each key part by exact Content-Id, one cipher part."""
    parts = message["contents"]
    kinds = [p["type"] for p in parts]
    expected = ["message/cpim", "message/sipfrag"] + ["application/lime"] * len(sent.key_parts) \
        + ["application/octet-stream"]
    assert kinds == expected
    assert kinds.count("application/octet-stream") == 1
    by_id = {p["content_id"]: p for p in parts if p["type"] == "application/lime"}
    assert len(by_id) == len(sent.key_parts)
    for key in sent.key_parts:
        part = by_id[key.device_id]  # exact string match, as the 5.1 engine looks it up
        assert part["description"] == "Cipher key"
        assert base64.b64decode(part["body"]) == base64.b64encode(key.dr_message)
    (cipher,) = [p for p in parts if p["type"] == "application/octet-stream"]
    assert cipher["description"] == "Encrypted message"
    assert base64.b64decode(cipher["body"]) == base64.b64encode(sent.cipher_message)


CASES = {
    "one-to-one": lambda: envelope(1, os.urandom(120)),
    "group-8": lambda: envelope(8, os.urandom(300)),
    "deflated": lambda: envelope(3, b"A compressible chat message. " * 40),
    "largest-udp-150-devices": lambda: envelope(150, os.urandom(2000)),
    "largest-tcp-600-devices": lambda: envelope(600, os.urandom(4000)),
    "largest-tcp-256k-cipher": lambda: envelope(2, os.urandom(256 * 1024)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_envelope_we_build_gets_200_and_the_right_parts(
    case: str, receiver: Receiver, transcript: Transcript
) -> None:
    """One-to-one, group, deflated and the largest envelopes: 200 OK, parts seen as we built them."""
    sent = CASES[case]()
    body = build_envelope(sent)
    if case == "deflated":
        assert body.content_encoding == "deflate"
    status, message = receiver.deliver(body)
    transcript.add("sent", {"case": case, "headers": body.headers, "bytes": len(body.body),
                            "devices": len(sent.key_parts)})
    transcript.add("response", status)
    assert status == 200
    assert message is not None
    transcript.add("delivered", [{k: v for k, v in p.items() if k != "body"} for p in message["contents"]])
    check_delivery(sent, body, message)


def test_a_real_lime_group_message_from_encrypt_message_is_seen_whole(
    receiver: Receiver, tmp_path: Path, transcript: Transcript
) -> None:
    """encrypt_message (lime 5.1.64 binding) to 4 devices: 200, and each device's own part."""
    from pylime.manager import Manager

    with KeyServer() as server:
        managers = [Manager(tmp_path / f"d{i}.sqlite3", transport=server) for i in range(5)]
        try:
            ids = [device("alice")] + [device("bob") for _ in range(4)]
            for manager, dev in zip(managers, ids):
                manager.create_user(dev, "https://localhost/lime", Curve.C25519)
            out = encrypt_message(managers[0], ids[0], "sip:chatroom-1@localhost;gr=urn:uuid:1", ids[1:],
                                  "Hello from pylime " * 20)
        finally:
            for manager in managers:
                manager.close()
    status, message = receiver.deliver(out.body)
    transcript.add("sent", {"headers": out.headers, "bytes": len(out.body.body)})
    transcript.add("response", status)
    assert status == 200 and message is not None
    ids_seen = [p["content_id"] for p in message["contents"] if p["type"] == "application/lime"]
    assert ids_seen == ids[1:]
    assert [p["type"] for p in message["contents"]].count("application/octet-stream") == 1


# --------------------------------------------------------------------------- invariants

def channel_view(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a body the way belle-sip 5.1.64's SIP channel does, written from the spec (§2.4 quirks).

    The boundary is everything after ``;boundary=``; the body must start with ``--b CRLF``
    (no preamble), parts end at ``CRLF --b``, header names are taken as written.
    """
    boundary = content_type.split(";boundary=", 1)[1]
    dash = b"--" + boundary.encode()
    assert body.startswith(dash + b"\r\n")
    assert body.endswith(b"\r\n" + dash + b"--\r\n")
    inner = body[len(dash) + 2 : -(len(dash) + 6)]
    parts = []
    for raw in inner.split(b"\r\n" + dash + b"\r\n"):
        head, sep, payload = raw.partition(b"\r\n\r\n")
        assert sep
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers, payload))
    return parts


def assert_survives_5165(body: EncryptedBody, sent: Envelope) -> None:
    """The invariants that keep a 5.1.65 receiver alive and make it find each part."""
    ct = body.content_type
    prefix = 'multipart/encrypted;protocol="application/lime";boundary='
    assert ct.startswith(prefix)
    boundary = ct[len(prefix):]
    assert boundary and '"' not in boundary and ";" not in boundary and " " not in boundary
    raw = zlib.decompress(body.body) if body.content_encoding == "deflate" else body.body
    if body.content_encoding is not None:
        assert body.content_encoding == "deflate" and body.body[:1] == b"\x78"  # zlib format
        assert len(raw) >= DEFLATE_THRESHOLD
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert b"\r" not in raw.replace(b"\r\n", b"")
    parts = channel_view(ct, raw)
    octet = [p for p in parts if p[0].get("Content-Type") == "application/octet-stream"]
    assert len(octet) == 1
    lime = [p for p in parts if p[0].get("Content-Type") == "application/lime"]
    assert [h["Content-Id"] for h, _ in lime] == [k.device_id for k in sent.key_parts]
    for headers, payload in lime + octet:
        assert not any(name.lower() == "content-id" and name != "Content-Id" for name in headers)
        assert b"\r" not in payload and b"\n" not in payload  # unwrapped base64
        base64.b64decode(payload, validate=True)
    assert base64.b64decode(octet[0][1]) == sent.cipher_message


GROUPS = st.builds(
    lambda n, sizes, cipher, user: Envelope(
        f"sip:{user}@localhost;gr=urn:uuid:aaaa1111-0000-4000-8000-000000000001", "imdn",
        tuple(KeyPart(f"sip:u{i}@localhost;gr=urn:uuid:{i:08x}-0000-4000-8000-000000000000",
                      b"\x01" * s) for i, s in enumerate(sizes[:n])),
        cipher),
    st.integers(1, 40),
    st.lists(st.integers(3, 400), min_size=40, max_size=40),
    st.one_of(st.binary(min_size=1, max_size=3000), st.text(min_size=1, max_size=2000).map(str.encode)),
    st.sampled_from(["alice", "bob.smith", "x-y_z"]),
)


@settings(max_examples=200, deadline=None)
@given(GROUPS)
def test_property_our_envelopes_keep_the_invariants_that_keep_5165_alive(sent: Envelope) -> None:
    """Random groups and sizes: boundary last and unquoted, CRLF, no preamble, exact Content-Id, ..."""
    assert_survives_5165(build_envelope(sent), sent)
    assert_survives_5165(build_envelope(sent, deflate=False), sent)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=GROUPS)
def test_property_random_envelopes_on_the_wire_get_200(sent: Envelope, receiver: Receiver) -> None:
    """A sample of the random envelopes, sent to the real core: 200 and the right parts, no crash."""
    body = build_envelope(sent)
    status, message = receiver.deliver(body)
    assert status == 200 and message is not None
    check_delivery(sent, body, message)


# --------------------------------------------------------------------------- crash variants

@pytest.mark.parametrize("name", sorted(crash_variants()))
def test_crash_variants_kill_a_5165_receiver_in_its_own_process(
    name: str, tmp_path: Path, transcript: Transcript
) -> None:
    """Each shape our builder never emits makes the real receiver die with SIGSEGV (spec §2.5)."""
    if LINPHONE_MISSING:
        pytest.skip(LINPHONE_MISSING)
    content_type, body = crash_variants()[name]
    rx = start_receiver(tmp_path / "rx")
    try:
        status = send_message(rx.udp, body, {"Content-Type": content_type}, timeout=1)
        code = rx.peer.wait_exit(5)
        try:
            delivered = rx.peer("messages", name="rx")["messages"] if code is None else None
        except PeerCrashed as exc:
            code = exc.returncode
            delivered = None
    finally:
        rx.peer.close()
    transcript.add("variant", {"name": name, "content_type": content_type, "status": status,
                               "returncode": code, "delivered": delivered is not None and len(delivered)})
    assert status is None
    assert code == -signal.SIGSEGV
