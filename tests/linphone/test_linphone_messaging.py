"""encrypt_message / decrypt_message on the stand-in lime: the envelope logic, fast."""

from __future__ import annotations

import zlib

import pytest

from pylime import DecryptionError, PeerStatus, Policy
from pylime.linphone import (
    DeviceNotInEnvelopeError,
    Envelope,
    InnerSenderMismatchError,
    InvalidDeviceIdError,
    KeyPart,
    NoRecipientsError,
    NotEncryptedError,
    UnsafeConversationError,
    UnsafeSenderError,
    build_envelope,
    build_text_cpim,
    decrypt_message,
    encrypt_message,
    parse_envelope,
)
from tests.linphone.helpers import (
    ALICE_LAPTOP,
    ALICE_PHONE,
    BOB_DESKTOP,
    BOB_PHONE,
    ROOM,
    ROOM_USER_ID,
    FakeLime,
)

CAROL = "sip:carol@sip.example.org;gr=urn:uuid:cccc5555-0000-4000-8000-000000000005"


def _received(out, room: str = ROOM) -> dict[str, str]:
    """The SIP headers a device sees: the body headers plus From = the chat room."""
    return {**out.headers, "From": f"<{room}>"}


def test_a_text_reaches_every_device_with_its_sender_authenticated(fake_alice, fake_bob):
    """Bob's phone decrypts the text; sender and IMDN id come out of the authenticated CPIM."""
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE, BOB_DESKTOP, ALICE_LAPTOP],
                          "Hello", message_id="7uQ2xVn0LcKa")
    msg = decrypt_message(fake_bob, BOB_PHONE, out.body.body, _received(out))
    assert (msg.text, msg.sender, msg.message_id) == ("Hello", ALICE_PHONE, "7uQ2xVn0LcKa")
    assert msg.content_type == "text/plain" and msg.status is PeerStatus.UNKNOWN
    assert "Hello" not in repr(msg) and "Hello" not in repr(out)


def test_the_recipient_user_id_is_the_room_without_gr_and_the_policy_cipher_message(fake_alice):
    """lime gets the room address without gr and policy cipherMessage, as Linphone passes."""
    calls = []
    real = fake_alice.encrypt

    def spy(device_id, ruid, recipients, plaintext, policy=Policy.OPTIMIZE_UPLOAD_SIZE):
        calls.append((device_id, ruid, list(recipients), policy))
        return real(device_id, ruid, recipients, plaintext, policy)

    fake_alice.encrypt = spy
    encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "hi")
    assert calls == [(ALICE_PHONE, ROOM_USER_ID, [BOB_PHONE], Policy.CIPHER_MESSAGE)]


def test_the_sender_and_duplicates_are_dropped_and_order_kept(fake_alice):
    """The local device is filtered (lime would build a session with itself); duplicates once."""
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM,
                          [BOB_PHONE, ALICE_PHONE, BOB_PHONE, ALICE_LAPTOP], "hi")
    assert [d for d, _ in out.statuses] == [BOB_PHONE, ALICE_LAPTOP]
    with pytest.raises(NoRecipientsError):
        encrypt_message(fake_alice, ALICE_PHONE, ROOM, [ALICE_PHONE], "hi")


def test_devices_lime_cannot_reach_get_no_key_part(fake_alice):
    """FAIL recipients are left out of the envelope and reported as skipped."""
    fake_alice.unreachable = {BOB_DESKTOP}
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE, BOB_DESKTOP], "hi")
    assert out.skipped == (BOB_DESKTOP,)
    envelope = parse_envelope(out.body.content_type, out.body.body, out.body.content_encoding)
    assert envelope.device_ids == (BOB_PHONE,)


def test_bad_device_ids_are_refused_before_encrypting(fake_alice):
    """A recipient or sender that is not a canonical GRUU raises InvalidDeviceIdError."""
    with pytest.raises(InvalidDeviceIdError):
        encrypt_message(fake_alice, ALICE_PHONE, ROOM, ["sip:bob@sip.example.org"], "hi")
    with pytest.raises(InvalidDeviceIdError):
        encrypt_message(fake_alice, "sip:alice@sip.example.org", ROOM, [BOB_PHONE], "hi")


def test_deflated_and_plain_bodies_both_decrypt(fake_alice, fake_bob):
    """deflate=True sends Content-Encoding: deflate; deflate=False a plain body; both decrypt."""
    packed = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "x" * 300)
    plain = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "x" * 300, deflate=False)
    assert packed.headers.get("Content-Encoding") == "deflate"
    assert "Content-Encoding" not in plain.headers
    assert zlib.decompress(packed.body.body).startswith(b"--")
    for out in (packed, plain):
        assert decrypt_message(fake_bob, BOB_PHONE, out.body.body, _received(out)).text == "x" * 300


def test_a_deflated_plaintext_is_inflated_after_decryption(fake_alice, fake_bob):
    """Content-Encoding: deflate on the cipher part means: inflate the decrypted CPIM."""
    cpim = build_text_cpim(ALICE_PHONE, ROOM, "compressed inside").to_bytes()
    result = fake_alice.encrypt(ALICE_PHONE, ROOM_USER_ID, [BOB_PHONE], zlib.compress(cpim))
    body = build_envelope(Envelope(ALICE_PHONE, None, (KeyPart(BOB_PHONE, result.recipients[0].dr_message),),
                                   result.cipher_message, cipher_deflated=True))
    msg = decrypt_message(fake_bob, BOB_PHONE, body.body, body.headers, room=ROOM)
    assert msg.text == "compressed inside"


def test_a_body_whose_inner_from_is_not_the_sender_is_rejected(fake_alice, fake_bob):
    """Envelope says Alice, the decrypted CPIM says Carol: InnerSenderMismatchError."""
    forged = build_text_cpim(CAROL, ROOM, "it was me").to_bytes()
    result = fake_alice.encrypt(ALICE_PHONE, ROOM_USER_ID, [BOB_PHONE], forged)
    body = build_envelope(Envelope(ALICE_PHONE, "abc", (KeyPart(BOB_PHONE, result.recipients[0].dr_message),),
                                   result.cipher_message))
    with pytest.raises(InnerSenderMismatchError):
        decrypt_message(fake_bob, BOB_PHONE, body.body, body.headers, room=ROOM)


def test_sending_a_cpim_from_someone_else_is_refused(fake_alice):
    """encrypt_message checks a given CPIM's From against the sender."""
    with pytest.raises(InnerSenderMismatchError):
        encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE],
                        build_text_cpim(CAROL, ROOM, "x").to_bytes())
    own = build_text_cpim(ALICE_PHONE, ROOM, "mine", message_id="m1")
    assert encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], own).message_id == "m1"


def test_a_device_missing_from_the_envelope_gets_a_clear_error(fake_alice):
    """Carol was not a recipient: DeviceNotInEnvelopeError names her device."""
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "not for carol")
    carol = FakeLime(CAROL)
    with pytest.raises(DeviceNotInEnvelopeError, match="cccc5555"):
        decrypt_message(carol, CAROL, out.body.body, _received(out))


def test_a_message_for_another_room_does_not_decrypt(fake_alice, fake_bob):
    """The recipient user id is authenticated: the wrong room fails in lime."""
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "hi")
    other = "sip:chatroom-other@sip.example.org;gr=urn:uuid:5b1c0000-0000-4000-8000-0000000000ff"
    with pytest.raises(DecryptionError):
        decrypt_message(fake_bob, BOB_PHONE, out.body.body, _received(out, other))


def test_unsafe_devices_block_sending_and_receiving_unless_allowed(fake_alice, fake_bob):
    """Linphone refuses to send to or accept from unsafe devices by default."""
    fake_alice.peers[BOB_PHONE] = (b"k", PeerStatus.UNSAFE)
    with pytest.raises(UnsafeConversationError):
        encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "hi")
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "hi", allow_unsafe=True)
    fake_bob.peers[ALICE_PHONE] = (b"k", PeerStatus.UNSAFE)
    with pytest.raises(UnsafeSenderError):
        decrypt_message(fake_bob, BOB_PHONE, out.body.body, _received(out))
    msg = decrypt_message(fake_bob, BOB_PHONE, out.body.body, _received(out), allow_unsafe=True)
    assert msg.status is PeerStatus.UNSAFE


def test_missing_headers_are_reported(fake_alice, fake_bob):
    """No Content-Type: NotEncryptedError; no room and no From: InvalidDeviceIdError."""
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "hi")
    with pytest.raises(NotEncryptedError):
        decrypt_message(fake_bob, BOB_PHONE, out.body.body, {"From": ROOM})
    with pytest.raises(InvalidDeviceIdError):
        decrypt_message(fake_bob, BOB_PHONE, out.body.body, out.headers)


def test_header_names_are_case_insensitive(fake_alice, fake_bob):
    """SIP header names may arrive in any case."""
    out = encrypt_message(fake_alice, ALICE_PHONE, ROOM, [BOB_PHONE], "hi")
    headers = {k.lower(): v for k, v in _received(out).items()}
    assert decrypt_message(fake_bob, BOB_PHONE, out.body.body, headers).text == "hi"
