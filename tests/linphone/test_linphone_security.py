"""Conversation security level: the lowest over every device, own other devices included."""

from __future__ import annotations

from pylime import PeerStatus
from pylime.linphone import SecurityLevel, conversation_security_level
from pylime.linphone.security import level_of_status
from tests.linphone.helpers import ALICE_LAPTOP, ALICE_PHONE, BOB_DESKTOP, BOB_PHONE, FakeLime


def _alice(**statuses: PeerStatus) -> FakeLime:
    lime = FakeLime(ALICE_PHONE)
    names = {"bob_phone": BOB_PHONE, "bob_desktop": BOB_DESKTOP, "alice_laptop": ALICE_LAPTOP}
    for name, status in statuses.items():
        lime.peers[names[name]] = (b"k", status)
    return lime


def test_linphones_c_enum_values():
    """Unsafe=0, ClearText=1, Encrypted=2, Safe=3."""
    assert [int(x) for x in SecurityLevel] == [0, 1, 2, 3]


def test_each_lime_status_maps_like_limestatus2chatroomseclevel():
    """unsafe → Unsafe, unknown/untrusted → Encrypted, trusted → Safe."""
    assert level_of_status(PeerStatus.UNSAFE) is SecurityLevel.UNSAFE
    assert level_of_status(PeerStatus.UNKNOWN) is SecurityLevel.ENCRYPTED
    assert level_of_status(PeerStatus.UNTRUSTED) is SecurityLevel.ENCRYPTED
    assert level_of_status(PeerStatus.TRUSTED) is SecurityLevel.SAFE


def test_a_cleartext_conversation_is_cleartext_whatever_the_devices():
    """Not encrypted → ClearText."""
    level = conversation_security_level(_alice(), ALICE_PHONE, [BOB_PHONE], encrypted=False)
    assert level is SecurityLevel.CLEAR_TEXT


def test_an_encrypted_conversation_with_no_device_known_yet_is_encrypted():
    """No participants and no own devices → Encrypted."""
    assert conversation_security_level(_alice(), ALICE_PHONE, []) is SecurityLevel.ENCRYPTED


def test_all_devices_trusted_is_safe():
    """Every peer device and own other device trusted → Safe."""
    lime = _alice(bob_phone=PeerStatus.TRUSTED, bob_desktop=PeerStatus.TRUSTED,
                  alice_laptop=PeerStatus.TRUSTED)
    level = conversation_security_level(lime, ALICE_PHONE, [BOB_PHONE, BOB_DESKTOP],
                                        [ALICE_PHONE, ALICE_LAPTOP])
    assert level is SecurityLevel.SAFE


def test_an_unverified_own_other_device_keeps_the_conversation_at_encrypted():
    """Own other devices count: an unknown laptop holds the level at Encrypted."""
    lime = _alice(bob_phone=PeerStatus.TRUSTED)
    assert conversation_security_level(lime, ALICE_PHONE, [BOB_PHONE]) is SecurityLevel.SAFE
    assert conversation_security_level(lime, ALICE_PHONE, [BOB_PHONE],
                                       [ALICE_PHONE, ALICE_LAPTOP]) is SecurityLevel.ENCRYPTED


def test_one_unsafe_device_makes_the_conversation_unsafe():
    """Unsafe beats everything, even when other devices are trusted or unknown."""
    lime = _alice(bob_phone=PeerStatus.TRUSTED, bob_desktop=PeerStatus.UNSAFE)
    level = conversation_security_level(lime, ALICE_PHONE, [BOB_PHONE, BOB_DESKTOP], [ALICE_LAPTOP])
    assert level is SecurityLevel.UNSAFE


def test_the_local_device_and_local_lime_users_count_as_trusted():
    """Only the local device is in the list: nothing left to doubt → Safe."""
    assert conversation_security_level(_alice(), ALICE_PHONE, [], [ALICE_PHONE]) is SecurityLevel.SAFE
    assert conversation_security_level(_alice(), BOB_PHONE, [ALICE_PHONE]) is SecurityLevel.SAFE
