"""The canonical device id: one rule for the key server's door and for pylime.linphone."""

from __future__ import annotations

import pytest

from pylime import deviceid
from pylime.deviceid import device_owner, is_canonical_device_id, split_device_id
from pylime.keyserver import auth
from pylime.linphone import InvalidDeviceIdError, normalize_device_id, parse_device_id

UUID = "00000000-0000-4000-8000-00000000a11c"

CANONICAL = [
    ("sip:alice@example.org", ("alice", "example.org")),
    (f"sip:alice@example.org;gr=urn:uuid:{UUID}", ("alice", "example.org")),
    ("sips:alice@Example.ORG;gr=x", ("alice", "example.org")),
    ("sip:al%69ce@example.org;gr=1", ("alice", "example.org")),
    ("sip:+33123456789@example.org;gr=1", ("+33123456789", "example.org")),
    ("sip:zoë@example.org;gr=urn:uuid:1", ("zoë", "example.org")),
    ("sip:a@192.0.2.1;gr=1", ("a", "192.0.2.1")),
    ("sip:a@[2001:db8::1];gr=1", ("a", "[2001:db8::1]")),
]

# The shapes issue 17 found stored, and their relatives: each one refused.
ODD = [
    "sip:alice:x@bob@example.org",  # a password part and two @: bob's, to a parser splitting on the last
    "sip:alice@bob@example.org",  # more than one @
    "sip:alice:secret@example.org;gr=1",  # a password part
    "<sip:alice@example.org;gr=1>",  # angle brackets
    "sip:alice@example.org;gr=<x>",
    "sip:alice>@example.org",
    "sip:alice?x=y@example.org",  # a header part
    "sip:alice@example.org?subject=x",
    "sip:alice@example.org;gr=1?x",
    "sip:alice@example.org:5060;gr=1",  # a port
    "sip:alice@example.org;transport=tcp",  # another parameter
    "sip:alice@example.org;gr=1;gr=2",
    "sip:alice@example.org;GR=1",
    "sip:alice@example.org;gr=",
    " sip:alice@example.org",  # surrounding space
    "sip:alice@example.org\n",
    "sip:ali ce@example.org",
    "sip:alice%00@example.org",  # an escaped control character
    "sip:alice%ff@example.org",  # an escape that is not UTF-8
    "sip:alice\udcff@example.org",  # a raw byte that was not UTF-8
    "sip:@example.org",
    "sip:alice@",
    "sip:example.org;gr=1",  # no user part
    "tel:+33123456789",
    "alice@example.org",
    "",
]


@pytest.mark.parametrize(("text", "owner"), CANONICAL)
def test_canonical_ids_are_accepted_with_their_owner(text: str, owner: tuple[str, str]) -> None:
    """sip[s]:user@host with an optional gr: accepted; the owner is the decoded user and domain."""
    assert is_canonical_device_id(text)
    assert device_owner(text) == owner
    assert str(split_device_id(text)) == text


@pytest.mark.parametrize("text", ODD)
def test_odd_shapes_are_refused_with_a_reason(text: str) -> None:
    """More than one @, a password, <, >, ?, a port, other parameters, bad escapes: refused."""
    assert not is_canonical_device_id(text)
    assert device_owner(text) is None
    with pytest.raises(ValueError, match="not a canonical device id"):
        split_device_id(text)


@pytest.mark.parametrize("text", ODD)
def test_linphone_refuses_what_the_key_server_refuses(text: str) -> None:
    """pylime.linphone.address parses device ids with the same rule (plus gr=urn:uuid:)."""
    with pytest.raises(InvalidDeviceIdError):
        parse_device_id(text)


def test_a_normalised_contact_is_canonical() -> None:
    """normalize_device_id gives a canonical id, and refuses a user part the rule refuses."""
    text = normalize_device_id(f'"Alice" <sip:alice@example.org:5061;transport=tls;gr=urn:uuid:{UUID}>')
    assert is_canonical_device_id(text)
    with pytest.raises(InvalidDeviceIdError):
        normalize_device_id(f"<sip:al?ce@example.org;gr=urn:uuid:{UUID}>")


def test_the_key_server_uses_the_shared_rule() -> None:
    """keyserver.auth.device_owner is pylime.deviceid's (one function, imported one way)."""
    assert auth.device_owner is deviceid.device_owner
