"""The full encrypted group chat between real Linphone 5.1.65 clients and pylime devices (issue 9, part 4).

A third liblinphone core runs in conference-server mode (liblinphone's own ServerGroupChatRoom,
driven the way Flexisip's conference server drives it: it names each room and is told each
participant's devices from our registrar). Real clients register with a conference factory URI;
pylime devices are minimal SIP agents (tests/interop/sipdevice.py) registered with
``+org.linphone.specs="groupchat/1.1,lime"`` and a lime user on our HTTPS key server. A real
client creates an encrypted group room; its messages reach the pylime devices as the conference
server forwards them, and pylime decrypts them from the SIP MESSAGE body; pylime's answers go to
the room, and the real clients decrypt and show them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylime import Curve, PeerStatus, Policy
from pylime.linphone import (
    Envelope,
    KeyPart,
    build_envelope,
    build_text_cpim,
    decrypt_message,
    encrypt_message,
    parse_cpim,
    parse_envelope,
)
from pylime.linphone.address import recipient_user_id
from pylime.linphone.envelope import content_type_for
from pylime.transport.https import HttpsTransport
from tests.interop.accounts import FACTORY, registry, start_clients, start_focus
from tests.interop.harness import PeerProcess, RecordingKeyServer, Transcript
from tests.interop.sipdevice import SipDevice, room_of
from tests.interop.sipproxy import SipProxy

try:
    from pylime.manager import Manager as DeviceManager
except ImportError:  # pragma: no cover - where _lime is not built
    from pylime.reference import ReferenceManager as DeviceManager  # type: ignore[assignment]

MESSAGE_DELIVERED = 2  # LinphoneChatMessageStateDelivered
FIXED_BOUNDARY = "-" * 27 + "14737809831466499882746641449"  # liblinphone 5.1.65 content-manager.h


class PylimeDevice:
    """A pylime device: its SIP agent, its GRUU and its lime manager on our key server."""

    def __init__(self, user: str, proxy: SipProxy, keyserver_url: str, cert: Path, directory: Path) -> None:
        self.sip = SipDevice(user, proxy.port).start()
        self.device_id = self.sip.register()
        self.transport = HttpsTransport(ca_file=cert)
        self.manager = DeviceManager(directory / f"{user}.sqlite3", transport=self.transport)
        self.manager.create_user(self.device_id, keyserver_url, Curve.C25519)
        self.room: str | None = None
        self.decrypted: list[Any] = []
        self.notifications: list[Any] = []
        self.cleartext: list[Any] = []  # SipMessages that came unencrypted
        self.sent_ids: list[str] = []
        self._seen = 0

    def join(self, timeout: float = 15.0) -> str:
        """Wait for the room's INVITE (answered 200 by the agent), then SUBSCRIBE to the room."""
        invite = self.sip.wait_for("INVITE", timeout=timeout)[0]
        self.room = room_of(invite)
        answer = self.sip.subscribe_conference(self.room)
        assert answer.status == 200, answer.start
        self.sip.wait_for("NOTIFY", timeout=timeout)
        return self.room

    def _drain(self) -> None:
        """Decrypt every MESSAGE received since the last call: text, or a notification (IMDN)."""
        received = [r for r in self.sip.received if r.method == "MESSAGE"]
        for item in received[self._seen:]:
            self._seen += 1
            headers = dict(item.message.headers)
            if not (item.message.get("Content-Type") or "").startswith("multipart/encrypted"):
                # 5.1.65 sends the IMDN about a message it could not decrypt in clear.
                self.cleartext.append(item.message)
                continue
            msg = decrypt_message(self.manager, self.device_id, item.message.body, headers)
            (self.decrypted if msg.content_type == "text/plain" else self.notifications).append(msg)

    def read(self, count: int, timeout: float = 15.0) -> list[Any]:
        """The first ``count`` text messages the room forwarded to us, decrypted from the raw bodies."""
        self.wait_until(lambda: len(self.decrypted) >= count, timeout, f"{count} messages")
        return self.decrypted[:count]

    def wait_notifications(self, count: int, timeout: float = 15.0) -> list[Any]:
        """The first ``count`` decrypted non-text messages (IMDNs)."""
        self.wait_until(lambda: len(self.notifications) >= count, timeout, f"{count} notifications")
        return self.notifications[:count]

    def wait_until(self, done: Any, timeout: float, what: str) -> None:
        """Decrypt what arrives until ``done()``; raise TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.sip.user}: no {what} within {timeout} s")
            time.sleep(0.02)

    def say(self, text: str, devices: list[str]) -> int:
        """Encrypt ``text`` to every other device of the room and send it to the room."""
        assert self.room is not None
        out = encrypt_message(self.manager, self.device_id, self.room, devices, text)
        self.sent_ids.append(out.message_id)
        return self.sip.send_message(self.room, out.body.body, out.headers)

    def close(self) -> None:
        """Stop the agent and close the manager."""
        self.sip.close()
        self.manager.close()
        self.transport.close()


@pytest.fixture
def make_device(proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any], tls_cert: tuple[Path, Path],
                tmp_path: Path) -> Iterator[Any]:
    """A factory of pylime devices on the test's proxy and key server, closed after the test."""
    devices: list[PylimeDevice] = []
    url = f"https://localhost:{keyserver[1].port}/lime-server"

    def make(user: str) -> PylimeDevice:
        device = PylimeDevice(user, proxy, url, tls_cert[0], tmp_path)
        devices.append(device)
        return device

    yield make
    for device in devices:
        device.close()


def _record(transcript: Transcript, peer: PeerProcess, proxy: SipProxy,
            keyserver: RecordingKeyServer, devices: list[PylimeDevice]) -> None:
    transcript.add("sip", proxy.transcript)
    transcript.add("keyserver", keyserver.log)
    transcript.add("pylime_devices", {d.sip.user: d.sip.log for d in devices})
    transcript.add("conference_server", peer("server_log"))
    transcript.add("lime", peer("lime_dbs"))
    peer.close()  # before the key server stops: it would wait for the clients' keep-alive HTTPS


def _sent_by(proxy: SipProxy, user: str) -> list[dict[str, Any]]:
    """MESSAGE requests that ``user``'s device sent to a room, as the proxy received them."""
    return [e for e in proxy.requests("MESSAGE")
            if f"sip:{user}@" in {k.lower(): v for k, v in e["headers"]}.get("from", "")
            and "chatroom-" in e["start"]]


def test_real_client_and_pylime_device_exchange_encrypted_group_messages(
    peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
    tls_cert: tuple[Path, Path], make_device: Any, transcript: Transcript,
) -> None:
    """Alice (5.1.65) → carol (pylime) decrypted by pylime; carol's answer shown by alice's client."""
    start_focus(peer, proxy)
    clients = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice"],
                            account={"conference_factory_uri": FACTORY})
    carol = make_device("carol")
    alice_id = clients.device_id("alice")
    assert sorted(keyserver[0].device_ids()) == sorted([alice_id, carol.device_id])
    try:
        peer("set_registry", registry=registry(proxy))
        room = peer("create_room", name="alice", participants=["sip:carol@localhost"])
        assert room["state"] == 3  # Created
        assert carol.join() == room["address"]

        sent = peer("send_text", name="alice", text="Hello carol, from liblinphone 5.1.65", settle=0.5)
        (msg,) = carol.read(1)
        assert msg.text == "Hello carol, from liblinphone 5.1.65"
        assert msg.sender == alice_id and msg.status is PeerStatus.UNKNOWN
        assert sent["state"] in (1, MESSAGE_DELIVERED)  # InProgress until the room's 200 OK
        _wait(lambda: peer("message_states")["states"] == [MESSAGE_DELIVERED], "alice's message Delivered")

        assert carol.say("Hi alice, pylime here", [alice_id]) == 200
        (shown,) = peer("messages", name="alice", count=1, timeout=15)["messages"]
        assert shown["text"] == "Hi alice, pylime here"
        assert shown["sender"] == carol.device_id and shown["room"] == room["address"]
        assert shown["content_type"] == "text/plain"
        # alice's client acknowledges with an encrypted IMDN (deflated by 5.1.65): pylime reads it.
        (imdn,) = carol.wait_notifications(1)
        transcript.add("imdn", {"content_type": imdn.content_type, "text": imdn.text})
        assert imdn.sender == alice_id and imdn.content_type == "message/imdn+xml"
        assert carol.sent_ids[0] in imdn.text and "<delivered/>" in imdn.text
        # What alice's client sent: its Content-Type and Content-Encoding, and the envelope pylime
        # parsed (forwarded by the server unchanged) addresses carol's device by exact Content-Id.
        wire, imdn_wire = _sent_by(proxy, "alice")[:2]
        headers = {k: v for k, v in wire["headers"] if k.lower() in ("content-type", "content-encoding")}
        imdn_headers = {k: v for k, v in imdn_wire["headers"] if k.lower() in ("content-type", "content-encoding")}
        transcript.add("alice_message_headers", {"text": headers, "imdn": imdn_headers})
        assert imdn_headers["Content-Encoding"] == "deflate"
        forwarded = carol.sip.wait_for("MESSAGE")[0].message
        envelope = parse_envelope(forwarded.get("Content-Type") or "", forwarded.body,
                                  forwarded.get("Content-Encoding"))
        assert envelope.device_ids == (carol.device_id,) and envelope.sender == alice_id
        # 5.1.65 frames chat messages with a fixed boundary and does not compress them (only its
        # IMDN notifications are deflated); rebuilt with that boundary, ours is byte-identical.
        assert headers == {"Content-Type": content_type_for(FIXED_BOUNDARY)}
        assert proxy.raw_bodies[wire["raw"]] == forwarded.body
        rebuilt = build_envelope(envelope, boundary=FIXED_BOUNDARY, deflate=False)
        assert (rebuilt.content_type, rebuilt.body) == (headers["Content-Type"], forwarded.body)
        assert _sent_by(proxy, "carol")
    finally:
        _record(transcript, peer, proxy, keyserver[0], [carol])


def test_two_real_clients_and_two_pylime_devices_in_one_room(
    peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
    tls_cert: tuple[Path, Path], make_device: Any, transcript: Transcript,
) -> None:
    """alice, bob (5.1.65) and carol, dave (pylime): every message reaches and decrypts on every other device."""
    start_focus(peer, proxy)
    clients = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice", "bob"],
                            account={"conference_factory_uri": FACTORY})
    carol, dave = make_device("carol"), make_device("dave")
    alice_id, bob_id = clients.device_id("alice"), clients.device_id("bob")
    try:
        peer("set_registry", registry=registry(proxy))
        room = peer("create_room", name="alice",
                    participants=["sip:bob@localhost", "sip:carol@localhost", "sip:dave@localhost"])
        assert room["state"] == 3
        assert carol.join() == dave.join() == room["address"]

        peer("send_text", name="alice", text="Hello everyone", settle=0.5)
        for device in (carol, dave):
            (msg,) = device.read(1)
            assert (msg.text, msg.sender) == ("Hello everyone", alice_id)
        bob_got = peer("messages", name="bob", count=1, timeout=15)["messages"]
        assert [(m["text"], m["sender"]) for m in bob_got] == [("Hello everyone", alice_id)]

        assert carol.say("pylime carol to the room", [alice_id, bob_id, dave.device_id]) == 200
        for name, count in (("alice", 1), ("bob", 2)):
            got = peer("messages", name=name, count=count, timeout=15)["messages"]
            assert (got[-1]["text"], got[-1]["sender"]) == ("pylime carol to the room", carol.device_id)
        assert [m.text for m in dave.read(2)] == ["Hello everyone", "pylime carol to the room"]

        peer("send_text", name="bob", text="bob agrees", settle=0.5)
        for device, count in ((carol, 2), (dave, 3)):
            last = device.read(count)[-1]
            assert (last.text, last.sender) == ("bob agrees", bob_id)
        assert peer("messages", name="alice", count=2, timeout=15)["messages"][-1]["text"] == "bob agrees"
    finally:
        _record(transcript, peer, proxy, keyserver[0], [carol, dave])


def _wait(done: Any, what: str, timeout: float = 10.0) -> None:
    """Poll ``done()`` until true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def _answers(proxy: SipProxy, user: str) -> list[int]:
    """Statuses ``user``'s client answered to MESSAGEs the room forwarded to it."""
    out = []
    for e in proxy.transcript:
        headers = {k.lower(): v for k, v in e["headers"]}
        if e["dir"] == "in" and not e["request"] and e["method"] == "MESSAGE" \
                and f"sip:{user}@" in headers.get("to", "") and "chatroom-" in headers.get("from", ""):
            out.append(int(e["start"].split()[1]))
    return out


def _wait_answers(proxy: SipProxy, user: str, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(_answers(proxy, user)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{user} answered {len(_answers(proxy, user))} of {count} MESSAGEs")
        time.sleep(0.02)
    return _answers(proxy, user)


def test_real_client_refuses_a_forged_sender_and_a_message_without_its_key_part(
    peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
    tls_cert: tuple[Path, Path], make_device: Any, transcript: Transcript,
) -> None:
    """Inner CPIM From is not the sender, or no key part for the device: 5.1.65 answers 488, shows nothing."""
    start_focus(peer, proxy)
    clients = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice"],
                            account={"conference_factory_uri": FACTORY})
    carol = make_device("carol")
    alice_id = clients.device_id("alice")
    try:
        peer("set_registry", registry=registry(proxy))
        room = peer("create_room", name="alice", participants=["sip:carol@localhost"])["address"]
        carol.join()
        ruid = recipient_user_id(room)

        # carol's device claims, inside the encryption, to be alice (pylime's encrypt_message refuses this).
        forged = build_text_cpim(alice_id, room, "forged by carol").to_bytes()
        result = carol.manager.encrypt(carol.device_id, ruid, [alice_id], forged, Policy.CIPHER_MESSAGE)
        body = build_envelope(Envelope(carol.device_id, "forged-0001",
                                       (KeyPart(alice_id, result.recipients[0].dr_message),),
                                       result.cipher_message))
        assert carol.sip.send_message(room, body.body, body.headers) == 200  # the server forwards it
        assert _wait_answers(proxy, "alice", 1) == [488]

        # A genuine message whose key part is labelled for another device.
        plain = build_text_cpim(carol.device_id, room, "not for you").to_bytes()
        result = carol.manager.encrypt(carol.device_id, ruid, [alice_id], plain, Policy.CIPHER_MESSAGE)
        other = "sip:zed@localhost;gr=urn:uuid:00000000-0000-4000-8000-000000000099"
        body = build_envelope(Envelope(carol.device_id, "nokey-0001",
                                       (KeyPart(other, result.recipients[0].dr_message),),
                                       result.cipher_message))
        assert carol.sip.send_message(room, body.body, body.headers) == 200
        assert _wait_answers(proxy, "alice", 2) == [488, 488]

        # Then a good one: shown, so the refused ones were dropped, not queued.
        assert carol.say("a genuine one", [alice_id]) == 200
        (shown,) = peer("messages", name="alice", count=1, timeout=15)["messages"]
        assert (shown["text"], shown["sender"]) == ("a genuine one", carol.device_id)
        assert _wait_answers(proxy, "alice", 3) == [488, 488, 200]
        notes = carol.wait_notifications(1)
        transcript.add("imdns", [n.text for n in carol.notifications])
        # For the message it could not decrypt, 5.1.65 sends the sender an IMDN in clear: failed,
        # reason 488, naming the Message-ID of our cleartext CPIM part (none for the forged sender).
        carol.wait_until(lambda: any(b"nokey-0001" in m.body for m in carol.cleartext), 15, "the 488 IMDN")
        transcript.add("cleartext", [{"headers": m.headers, "body": m.body.decode("utf-8", "replace")}
                                     for m in carol.cleartext])
        (failed,) = [m for m in carol.cleartext if b"nokey-0001" in m.body]
        assert failed.get("Content-Type") == "message/cpim"
        cpim = parse_cpim(failed.body)
        assert cpim.sender == alice_id and cpim.content_type == "message/imdn+xml"
        assert "<failed/>" in cpim.text and 'code="488"' in cpim.text
        assert any(carol.sent_ids[0] in n.text for n in notes)
    finally:
        _record(transcript, peer, proxy, keyserver[0], [carol])
