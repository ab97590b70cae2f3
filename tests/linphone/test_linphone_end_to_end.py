"""End to end on real lime (binding and reference): chat envelopes, and a man in the middle.

The man in the middle controls the key server Alice uses: a transport that forwards to the
honest server but answers getPeerBundle for Bob's device with a bundle from Mallory's own
server, where Mallory registered Bob's device id with her keys. She also sits on the call
signalling, so the Ik Alice sees in Bob's SDP is hers. ZRTP's auxiliary secrets then differ,
the device goes UNSAFE and the conversation Unsafe; a genuine verification with Bob's real key
replaces the device and brings the conversation to Safe.
"""

from __future__ import annotations

import os

import pytest

from pylime import DecryptionError, EncryptionError, PeerStatus, Policy
from pylime.keyserver import KeyServer
from pylime.keyserver.protocol import GetPeerBundle, PeerBundle, parse_request, parse_response
from pylime.linphone import (
    AuxSecretStatus,
    DeviceNotInEnvelopeError,
    Envelope,
    IdentityKey,
    IdentityKeyChanged,
    InnerSenderMismatchError,
    KeyPart,
    ManInTheMiddleDetected,
    SdpIdentity,
    SecurityEvents,
    SecurityLevel,
    SecurityLevelDowngraded,
    UnsafeConversationError,
    apply_sas_verdict,
    aux_secret,
    build_envelope,
    build_text_cpim,
    conversation_security_level,
    decrypt_message,
    encrypt_message,
    fingerprint,
    parse_envelope,
    parse_qr_payload,
    qr_payload,
    recipient_user_id,
    trust_scanned,
)
from pylime.linphone.zrtp import aux_secret_id, check_aux_secret
from tests.conftest import SERVER_URL

ROOM = "sip:chatroom-Qm9F3kP1sT7wXz2a@example.org;gr=urn:uuid:5b1c0000-0000-4000-8000-00000000007e"


def _received(out) -> dict[str, str]:
    """What the conference server delivers: the body headers, From = the room."""
    return {**out.headers, "From": f"<{ROOM}>"}


def test_a_group_message_reaches_peers_and_own_other_devices(world):
    """Alice's phone writes to Bob's two devices and her laptop; each reads it, sender checked."""
    alice1, alice2 = world.device("alice"), world.device("alice")
    bob1, bob2 = world.device("bob"), world.device("bob")
    devices = [bob1.device_id, bob2.device_id, alice2.device_id, alice1.device_id]
    out = encrypt_message(alice1.manager, alice1.device_id, ROOM, devices, "Hello group")
    envelope = parse_envelope(out.body.content_type, out.body.body, out.body.content_encoding)
    assert envelope.device_ids == tuple(devices[:3]), "the sender itself is left out"
    first = envelope.dr_message_for(bob1.device_id)
    assert first[:3] == bytes((1, 1, int(world.curve))), "first message: X3DH init, our curve"
    for dev in (bob1, bob2, alice2):
        msg = decrypt_message(dev.manager, dev.device_id, out.body.body, _received(out))
        assert (msg.text, msg.sender, msg.message_id) == ("Hello group", alice1.device_id, out.message_id)
        assert msg.status is PeerStatus.UNKNOWN


def test_replies_flow_back_and_plain_bodies_work_too(world):
    """Bob answers with an undeflated body; Alice reads it; the session is established."""
    alice, bob = world.device("alice"), world.device("bob")
    out = encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "ping")
    assert out.headers["Content-Encoding"] == "deflate"
    decrypt_message(bob.manager, bob.device_id, out.body.body, _received(out))
    reply = encrypt_message(bob.manager, bob.device_id, ROOM, [alice.device_id], "pong",
                            deflate=False)
    assert "Content-Encoding" not in reply.headers
    msg = decrypt_message(alice.manager, alice.device_id, reply.body.body, _received(reply))
    assert msg.text == "pong" and msg.status is PeerStatus.UNTRUSTED


def test_real_lime_rejects_a_forged_inner_from_and_reports_a_missing_device(world):
    """Inner CPIM from Carol in an envelope from Alice is refused; Carol has no key part."""
    alice, bob, carol = world.device("alice"), world.device("bob"), world.device("carol")
    forged = build_text_cpim(carol.device_id, ROOM, "carol says hi").to_bytes()
    result = alice.manager.encrypt(alice.device_id, recipient_user_id(ROOM), [bob.device_id], forged,
                                   Policy.CIPHER_MESSAGE)
    (mine,) = result.recipients
    body = build_envelope(Envelope(alice.device_id, "m", (KeyPart(bob.device_id, mine.dr_message),),
                                   result.cipher_message))
    with pytest.raises(InnerSenderMismatchError):
        decrypt_message(bob.manager, bob.device_id, body.body, body.headers, room=ROOM)
    with pytest.raises(DeviceNotInEnvelopeError):
        decrypt_message(carol.manager, carol.device_id, body.body, body.headers, room=ROOM)


def test_a_message_for_another_room_fails_in_lime(world):
    """The room address (without gr) is lime's associated data."""
    alice, bob = world.device("alice"), world.device("bob")
    out = encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "hi")
    with pytest.raises(DecryptionError):
        decrypt_message(bob.manager, bob.device_id, out.body.body, out.headers,
                        room="sip:chatroom-other@example.org")


class SwappingKeyServer:
    """Mallory's key server: honest, except that Bob's bundle comes from Mallory's server."""

    def __init__(self, honest: KeyServer, mallory: KeyServer, victim: str) -> None:
        self.honest, self.mallory, self.victim = honest, mallory, victim
        self.active = True
        self.swapped = 0

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        status, answer = self.honest.post(url, sender, body)
        request = parse_request(body)
        if not self.active or not isinstance(request, GetPeerBundle) \
                or self.victim not in request.device_ids:
            return status, answer
        honest = parse_response(answer)
        assert isinstance(honest, PeerBundle)
        _, raw = self.mallory.post(url, self.victim,
                                   GetPeerBundle(request.curve, (self.victim,)).to_bytes())
        forged = parse_response(raw)
        assert isinstance(forged, PeerBundle) and forged.bundles[0].ik is not None
        self.swapped += 1
        bundles = tuple(forged.bundles[0] if b.device_id == self.victim else b
                        for b in honest.bundles)
        return status, PeerBundle(honest.curve, bundles).to_bytes()


def _zrtp_aux_status(mine: bytes | None, theirs: bytes | None) -> AuxSecretStatus:
    """What bzrtp tells us after the peer sent HMAC(its aux secret, its H3)[:8]."""
    h3 = os.urandom(32)
    return check_aux_secret(mine, h3, aux_secret_id(theirs or b"", h3))


def test_man_in_the_middle_is_detected_then_cleared_by_a_genuine_verification(world, tmp_path):
    """Swapped bundle → aux secrets disagree → UNSAFE, Unsafe; real keys verified → Safe."""
    events = SecurityEvents()
    mallory_server = KeyServer()
    bob = world.device("bob")
    evil = SwappingKeyServer(world.transport, mallory_server, bob.device_id)
    alice = world.device("alice", transport=evil)
    mallory = world.factory(tmp_path / "mallory.sqlite3", transport=mallory_server)
    try:
        mallory.create_user(bob.device_id, SERVER_URL, world.curve)
        ik = {"alice": alice.manager.identity_key(alice.device_id),
              "bob": bob.manager.identity_key(bob.device_id),
              "mallory": mallory.identity_key(bob.device_id)}
        assert ik["mallory"] != ik["bob"]

        # 1. Alice writes to "Bob": the key server hands her Mallory's keys.
        out = encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "for Bob only")
        assert evil.swapped == 1
        stolen = decrypt_message(mallory, bob.device_id, out.body.body, _received(out))
        assert stolen.text == "for Bob only", "Mallory reads it"
        with pytest.raises(DecryptionError):
            decrypt_message(bob.manager, bob.device_id, out.body.body, _received(out))
        level = conversation_security_level(alice.manager, alice.device_id, [bob.device_id])
        assert level is SecurityLevel.ENCRYPTED, "nothing looks wrong yet"

        # 2. Alice calls Bob; Mallory relays the signalling with her own Ik in Bob's SDP.
        def sdp(key: bytes) -> SdpIdentity:
            return SdpIdentity.from_keys([IdentityKey(int(world.curve), key)], legacy_algo=world.curve)

        at_alice = aux_secret(sdp(ik["alice"]), sdp(ik["mallory"]), outgoing=True)
        at_bob = aux_secret(sdp(ik["bob"]), sdp(ik["alice"]), outgoing=False)
        assert at_alice != at_bob
        with events.recording(ManInTheMiddleDetected) as mitm:
            status = apply_sas_verdict(
                alice.manager, bob.device_id, verified=True,
                aux_status=_zrtp_aux_status(at_alice, at_bob),
                peer_keys=[IdentityKey(int(world.curve), ik["mallory"])],
                curve=world.curve, events=events)
        assert status is PeerStatus.UNSAFE and alice.manager.peer_status(bob.device_id) is PeerStatus.UNSAFE
        assert [e.peer_device_id for e in mitm] == [bob.device_id]
        level = conversation_security_level(alice.manager, alice.device_id, [bob.device_id])
        assert level is SecurityLevel.UNSAFE
        with pytest.raises(UnsafeConversationError):
            encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "again")

        # 3. A genuine call (Mallory out of the path): the aux secrets agree on both sides.
        at_alice = aux_secret(sdp(ik["alice"]), sdp(ik["bob"]), outgoing=True)
        at_bob = aux_secret(sdp(ik["bob"]), sdp(ik["alice"]), outgoing=False)
        assert at_alice == at_bob
        with events.recording(IdentityKeyChanged) as changed:
            status = apply_sas_verdict(
                alice.manager, bob.device_id, verified=True,
                aux_status=_zrtp_aux_status(at_alice, at_bob),
                peer_keys=[IdentityKey(int(world.curve), ik["bob"])],
                curve=world.curve, events=events)
        assert status is PeerStatus.TRUSTED
        assert changed == [], "Linphone raises no key-changed event for a device that was unsafe"
        apply_sas_verdict(bob.manager, alice.device_id, verified=True,
                          aux_status=_zrtp_aux_status(at_bob, at_alice),
                          peer_keys=[IdentityKey(int(world.curve), ik["alice"])],
                          curve=world.curve, events=events)
        for me, peer in ((alice, bob), (bob, alice)):
            level = conversation_security_level(me.manager, me.device_id, [peer.device_id])
            assert level is SecurityLevel.SAFE

        # 4. The trusted key now protects Alice: Mallory's bundle is refused by lime itself.
        with pytest.raises(EncryptionError):
            encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "still there?")
        evil.active = False
        out = encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "safe now")
        msg = decrypt_message(bob.manager, bob.device_id, out.body.body, _received(out))
        assert msg.text == "safe now" and msg.status is PeerStatus.TRUSTED
    finally:
        mallory.close()
        mallory_server.close()


def test_scanning_a_peers_qr_code_makes_the_conversation_safe(world):
    """Alice scans Bob's QR and Bob scans Alice's: both devices TRUSTED, the conversation Safe."""
    alice, bob = world.device("alice"), world.device("bob")
    out = encrypt_message(alice.manager, alice.device_id, ROOM, [bob.device_id], "hi")
    decrypt_message(bob.manager, bob.device_id, out.body.body, _received(out))
    for me, peer in ((alice, bob), (bob, alice)):
        key = peer.manager.identity_key(peer.device_id)
        payload = qr_payload(peer.device_id, key, world.curve)
        assert parse_qr_payload(payload).fingerprint == fingerprint(key, world.curve)
        assert trust_scanned(me.manager, payload) is PeerStatus.TRUSTED
        level = conversation_security_level(me.manager, me.device_id, [peer.device_id])
        assert level is SecurityLevel.SAFE


def test_refusing_the_sas_downgrades_a_trusted_peer_and_never_clears_unsafe(world):
    """Refused SAS: TRUSTED → UNTRUSTED with a downgrade event; UNSAFE stays UNSAFE (lime's rule)."""
    alice, bob = world.device("alice"), world.device("bob")
    key = IdentityKey(int(world.curve), bob.manager.identity_key(bob.device_id))
    events = SecurityEvents()
    apply_sas_verdict(alice.manager, bob.device_id, verified=True,
                      aux_status=AuxSecretStatus.MATCH, peer_keys=[key], curve=world.curve)
    with events.recording(SecurityLevelDowngraded) as seen:
        status = apply_sas_verdict(alice.manager, bob.device_id, verified=False,
                                   aux_status=AuxSecretStatus.MATCH, peer_keys=[key],
                                   curve=world.curve, events=events)
    assert status is PeerStatus.UNTRUSTED and len(seen) == 1
    apply_sas_verdict(alice.manager, bob.device_id, verified=True,
                      aux_status=AuxSecretStatus.MISMATCH, peer_keys=[key], curve=world.curve)
    status = apply_sas_verdict(alice.manager, bob.device_id, verified=False,
                               aux_status=AuxSecretStatus.MATCH, peer_keys=[key], curve=world.curve)
    assert status is PeerStatus.UNSAFE
