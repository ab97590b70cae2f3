"""Device ids (GRUUs) and conversation user ids, as Linphone spells them."""

from __future__ import annotations

import pytest

from pylime.linphone import (
    DeviceId,
    InvalidDeviceIdError,
    normalize_device_id,
    parse_device_id,
    recipient_user_id,
)
from tests.linphone.helpers import BOB_PHONE, ROOM, ROOM_USER_ID

UUID = "eabf800f-e4d5-00f7-9311-4cd8a8c6cdec"
GRUU = f"sip:bob@localhost;gr=urn:uuid:{UUID}"


def test_a_canonical_gruu_parses_into_its_parts():
    """scheme, user, host and gr; the address of record is the GRUU without gr."""
    device = parse_device_id(GRUU)
    assert device == DeviceId("sip", "bob", "localhost", f"urn:uuid:{UUID}")
    assert str(device) == GRUU
    assert device.aor == "sip:bob@localhost"
    assert device.instance == UUID


def test_sips_and_ip_hosts_are_device_ids_too():
    """sips: GRUUs and IPv4/IPv6 hosts parse."""
    for text in (f"sips:bob@example.org;gr=urn:uuid:{UUID}",
                 f"sip:bob@127.0.0.1;gr=urn:uuid:{UUID}",
                 f"sip:bob@[::1];gr=urn:uuid:{UUID}"):
        assert str(parse_device_id(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "sip:bob@localhost",                                   # no gr: an AoR, not a device
        f"sip:localhost;gr=urn:uuid:{UUID}",                   # no user
        "sip:bob@localhost;gr=abc",                            # gr is not urn:uuid
        f"sip:bob@localhost;gr=urn:uuid:{UUID[:-1]}",          # truncated uuid
        f"tel:+331234;gr=urn:uuid:{UUID}",                     # not sip
        f"<{GRUU}>",                                           # brackets: normalise first
        f"sip:bob@localhost:5060;gr=urn:uuid:{UUID}",          # port: normalise first
        f"sip:bob@localhost;transport=udp;gr=urn:uuid:{UUID}", # extra parameter
        f" {GRUU}",                                            # whitespace
        "",
    ],
)
def test_anything_but_a_canonical_gruu_is_refused_with_a_clear_error(text):
    """parse_device_id raises InvalidDeviceIdError (a ValueError) naming the problem."""
    with pytest.raises(InvalidDeviceIdError) as info:
        parse_device_id(text)
    assert isinstance(info.value, ValueError)


def test_a_remote_contact_is_normalised_like_linphones_identity_address():
    """Display name, brackets, port and every parameter but gr go (linphone-5.1.65.md §3.5)."""
    contact = f'"Bob" <sip:bob@127.0.0.1:43455;transport=udp;gr=urn:uuid:{UUID}>;+sip.instance="x"'
    assert normalize_device_id(contact) == f"sip:bob@127.0.0.1;gr=urn:uuid:{UUID}"
    assert normalize_device_id(GRUU) == GRUU


def test_normalising_never_changes_case():
    """Linphone compares device ids as strings, so the uuid and host keep their case."""
    mixed = f"sip:Bob@LocalHost;gr=urn:uuid:{UUID.upper()}"
    assert normalize_device_id(mixed) == mixed


def test_normalising_an_address_without_gr_fails_clearly():
    """A Contact without a GRUU cannot be a lime device id here."""
    with pytest.raises(InvalidDeviceIdError, match="gr=urn:uuid"):
        normalize_device_id("<sip:bob@127.0.0.1:39926;transport=udp>")
    with pytest.raises(InvalidDeviceIdError, match="angle brackets"):
        normalize_device_id("<sip:bob@example.org")


def test_the_recipient_user_id_is_the_room_address_without_gr():
    """sip:chatroom-…@domain;gr=… → sip:chatroom-…@domain (linphone.md §2.4)."""
    assert recipient_user_id(ROOM) == ROOM_USER_ID
    assert recipient_user_id(f"<{ROOM}>") == ROOM_USER_ID
    assert recipient_user_id(BOB_PHONE) == "sip:bob@sip.example.org"


def test_the_recipient_user_id_keeps_other_uri_parameters():
    """Only gr is removed, as liblinphone's getUriWithoutGruu does."""
    room = "sip:conference-factory@example.org;conf-id=abc;gr=urn:uuid:" + UUID
    assert recipient_user_id(room) == "sip:conference-factory@example.org;conf-id=abc"


def test_a_non_sip_conversation_address_is_refused():
    """A conversation address must be a SIP URI."""
    with pytest.raises(InvalidDeviceIdError):
        recipient_user_id("mailto:bob@example.org")
