"""ZRTP identity binding: a=Ik / a=lime-Iks, the auxiliary secret, and SAS verdicts → peer status."""

from __future__ import annotations

import base64
import os

import pytest

from pylime import Curve, PeerStatus
from pylime.linphone import (
    AuxSecretStatus,
    IdentityKey,
    IdentityKeyChanged,
    InvalidSdpAttributeError,
    ManInTheMiddleDetected,
    PeerStatusChanged,
    SdpIdentity,
    SecurityEvent,
    SecurityEvents,
    SecurityLevelDowngraded,
    apply_sas_verdict,
    aux_secret,
    parse_sdp_identity,
    sdp_identity_lines,
)
from pylime.linphone.zrtp import (
    aux_secret_id,
    check_aux_secret,
    encode_lime_iks,
    parse_ik,
    parse_lime_iks,
    peer_identity_keys,
)
from tests.linphone.helpers import BOB_PHONE, FakeLime

# Captured between two Debian liblinphone 5.1.65 cores (linphone-5.1.65.md §3.3).
ALICE_IK_B64 = "AzBplnc7MCtTRux2bCfQYYpK28Cdd3riBKpiBL0o/T4="
BOB_IK_B64 = "7AXCKw51o8+7NG3y+xaPwWEDNHXbU+8uv1kmPxlmrZU="
ALICE_INVITE_SDP = (
    "v=0\r\no=alice 845 5 IN IP4 127.0.0.1\r\ns=Talk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n"
    f"a=Ik:{ALICE_IK_B64}\r\n"
    "m=audio 41034 RTP/AVP 96 97 98 0 8 18 99 100 101\r\na=rtpmap:96 opus/48000/2\r\n"
    "a=zrtp-hash:1.10 6b92379ec74853270e103a977b9dbb20538cd8c08ce3499bc38ce06530e08bfe\r\n"
)
BOB_200_SDP = ALICE_INVITE_SDP.replace("o=alice 845 5", "o=bob 2862 2714").replace(
    ALICE_IK_B64, BOB_IK_B64)
ALICE_IK = base64.b64decode(ALICE_IK_B64)
BOB_IK = base64.b64decode(BOB_IK_B64)


# ---------------------------------------------------------------- SDP attributes


def test_the_captured_5_1_65_sdp_yields_the_raw_ed25519_key():
    """a=Ik is session-level base64 of the 32-byte key; 5.1.65 sends no lime-Iks."""
    alice = parse_sdp_identity(ALICE_INVITE_SDP)
    assert alice.lime_iks is None
    assert alice.ik == ALICE_IK and len(ALICE_IK) == 32
    assert ALICE_IK[:8].hex() == "03306996773b302b"
    assert parse_sdp_identity(BOB_200_SDP).ik[:4].hex().upper() == "EC05C22B"


def test_identity_attributes_below_the_first_media_line_are_ignored():
    """Only session-level attributes count."""
    sdp = ALICE_INVITE_SDP.replace(f"a=Ik:{ALICE_IK_B64}\r\n", "") + f"a=Ik:{ALICE_IK_B64}\r\n"
    assert not parse_sdp_identity(sdp).is_lime_aware


def test_lime_iks_is_ascending_curve_id_with_a_trailing_semicolon():
    """a=lime-Iks:c25519:<b64>;c448:<b64>; whatever order the keys are given in."""
    c448 = IdentityKey(2, bytes(range(57)))
    value = encode_lime_iks([c448, IdentityKey(1, ALICE_IK)])
    assert value == f"c25519:{ALICE_IK_B64};c448:{base64.b64encode(c448.key).decode()};"
    assert parse_lime_iks(value) == [IdentityKey(1, ALICE_IK), c448]


def test_sdp_lines_send_legacy_ik_for_the_configured_curve_and_optionally_lime_iks():
    """Default clients send both; lime_iks=False looks exactly like 5.1.65."""
    keys = [IdentityKey.of(Curve.C25519, ALICE_IK)]
    assert sdp_identity_lines(keys) == [f"a=Ik:{ALICE_IK_B64}", f"a=lime-Iks:c25519:{ALICE_IK_B64};"]
    assert sdp_identity_lines(keys, lime_iks=False) == [f"a=Ik:{ALICE_IK_B64}"]
    parsed = parse_sdp_identity("v=0\r\n" + "\r\n".join(sdp_identity_lines(keys)) + "\r\nm=audio 1 RTP/AVP 0\r\n")
    assert parsed == SdpIdentity.from_keys(keys)


def test_unknown_algorithms_in_lime_iks_are_skipped_like_linphone():
    """An algorithm name lime does not know is ignored; known ones still count."""
    assert parse_lime_iks(f"x9999:AAAA;c25519:{ALICE_IK_B64};") == [IdentityKey(1, ALICE_IK)]


@pytest.mark.parametrize(
    "value", ["", "c25519", f"c25519:{ALICE_IK_B64[:-4]};", "c25519:***;", "x9999:AAAA;"],
)
def test_malformed_lime_iks_values_raise(value):
    """No entry, no colon, a short key, bad base64 or nothing known: InvalidSdpAttributeError."""
    with pytest.raises(InvalidSdpAttributeError):
        parse_lime_iks(value)


def test_malformed_ik_values_raise():
    """a=Ik must be base64 of 32 or 57 bytes."""
    for value in ("***", base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidSdpAttributeError):
            parse_ik(value)


def test_identity_key_reprs_hide_the_key():
    """An IdentityKey shows its algorithm only."""
    assert ALICE_IK_B64 not in repr(IdentityKey(1, ALICE_IK)) and ALICE_IK.hex() not in repr(IdentityKey(1, ALICE_IK))


# ---------------------------------------------------------------- the auxiliary secret


def test_legacy_aux_secret_is_caller_ik_then_callee_ik_on_both_sides():
    """5.1.65: raw Ik_caller ‖ Ik_callee, 64 bytes, identical for caller and callee."""
    alice, bob = parse_sdp_identity(ALICE_INVITE_SDP), parse_sdp_identity(BOB_200_SDP)
    at_alice = aux_secret(alice, bob, outgoing=True)
    at_bob = aux_secret(bob, alice, outgoing=False)
    assert at_alice == at_bob == ALICE_IK + BOB_IK
    assert len(at_alice) == 64


def test_lime_iks_aux_secret_prefixes_each_key_with_its_curve_id():
    """With lime-Iks on both sides: (0x01 ‖ Ik) per entry, caller part first: 66 bytes."""
    alice = SdpIdentity.from_keys([IdentityKey(1, ALICE_IK)])
    bob = SdpIdentity.from_keys([IdentityKey(1, BOB_IK)])
    secret = aux_secret(bob, alice, outgoing=False)
    assert secret == b"\x01" + ALICE_IK + b"\x01" + BOB_IK and len(secret) == 66


def test_lime_iks_on_one_side_only_falls_back_to_legacy_ik():
    """A 5.1.65 peer (a=Ik only) against a 5.4 client (both attributes): the legacy form."""
    new = SdpIdentity.from_keys([IdentityKey(1, ALICE_IK)])
    old = parse_sdp_identity(BOB_200_SDP)
    assert aux_secret(new, old, outgoing=True) == ALICE_IK + BOB_IK


def test_no_aux_secret_without_keys_on_both_sides():
    """A peer that is not lime-aware gets no aux secret (the call is not lime-bound)."""
    assert aux_secret(parse_sdp_identity(ALICE_INVITE_SDP), SdpIdentity(), outgoing=True) is None


def test_bzrtp_style_comparison_matches_equal_secrets_and_flags_different_ones():
    """HMAC(aux, H3)[:8] sent by the peer: same secret → MATCH, other → MISMATCH, none → UNSET."""
    h3 = os.urandom(32)
    good = ALICE_IK + BOB_IK
    peer_id = aux_secret_id(good, h3)
    assert len(peer_id) == 8
    assert check_aux_secret(good, h3, peer_id) is AuxSecretStatus.MATCH
    assert check_aux_secret(ALICE_IK + bytes(32), h3, peer_id) is AuxSecretStatus.MISMATCH
    assert check_aux_secret(None, h3, peer_id) is AuxSecretStatus.UNSET


# ---------------------------------------------------------------- SAS verdicts


@pytest.fixture
def events() -> SecurityEvents:
    """An observer hub."""
    return SecurityEvents()


def _verdict(lime: FakeLime, events: SecurityEvents, *, verified: bool,
             aux: AuxSecretStatus = AuxSecretStatus.MATCH, key: bytes = BOB_IK,
             **kw: bool) -> PeerStatus:
    contact = f"<{BOB_PHONE.replace('sip.example.org', 'sip.example.org:5060')}>;expires=600"
    return apply_sas_verdict(lime, contact, verified=verified, aux_status=aux,
                             peer_keys=[IdentityKey(1, key)], events=events, **kw)


def test_verified_sas_with_matching_aux_secret_trusts_the_normalised_device(fake_alice, events):
    """The Contact is normalised (port dropped) and the device becomes TRUSTED with its key."""
    with events.recording() as seen:
        assert _verdict(fake_alice, events, verified=True) is PeerStatus.TRUSTED
    assert fake_alice.stored_key(BOB_PHONE) == BOB_IK
    assert seen == [PeerStatusChanged(BOB_PHONE, PeerStatus.UNKNOWN, PeerStatus.TRUSTED)]


def test_verified_sas_with_another_stored_key_replaces_the_device(fake_alice, events):
    """Stored key differs: IdentityKeyChanged, the device is deleted and trusted with the new key."""
    fake_alice.peers[BOB_PHONE] = (b"M" * 32, PeerStatus.UNTRUSTED)
    with events.recording(IdentityKeyChanged) as seen:
        assert _verdict(fake_alice, events, verified=True) is PeerStatus.TRUSTED
    assert seen == [IdentityKeyChanged(BOB_PHONE, PeerStatus.UNTRUSTED)]
    assert fake_alice.stored_key(BOB_PHONE) == BOB_IK


def test_replacing_an_unsafe_device_raises_no_key_changed_event(fake_alice, events):
    """Linphone only warns when the replaced device was unsafe; it still ends TRUSTED."""
    fake_alice.peers[BOB_PHONE] = (b"M" * 32, PeerStatus.UNSAFE)
    with events.recording(IdentityKeyChanged) as seen:
        assert _verdict(fake_alice, events, verified=True) is PeerStatus.TRUSTED
    assert seen == []


def test_aux_secret_mismatch_makes_the_device_unsafe_and_reports_a_mitm(fake_alice, events):
    """SAS verified but aux secrets differ: UNSAFE and ManInTheMiddleDetected."""
    with events.recording(ManInTheMiddleDetected) as seen:
        status = _verdict(fake_alice, events, verified=True, aux=AuxSecretStatus.MISMATCH)
    assert status is PeerStatus.UNSAFE
    assert [e.peer_device_id for e in seen] == [BOB_PHONE]
    assert seen[0].type == 4


def test_unset_aux_secret_changes_nothing(fake_alice, events):
    """No aux secret exchanged: the verdict is not applied to lime at all."""
    with events.recording() as seen:
        assert _verdict(fake_alice, events, verified=True, aux=AuxSecretStatus.UNSET) is PeerStatus.UNKNOWN
    assert seen == [] and fake_alice.peers == {}


def test_refused_sas_makes_a_trusted_device_untrusted_with_a_downgrade_event(fake_alice, events):
    """SAS refused: UNTRUSTED, and SecurityLevelDowngraded because it was trusted."""
    fake_alice.peers[BOB_PHONE] = (BOB_IK, PeerStatus.TRUSTED)
    with events.recording() as seen:
        assert _verdict(fake_alice, events, verified=False) is PeerStatus.UNTRUSTED
    assert [type(e) for e in seen] == [SecurityLevelDowngraded, PeerStatusChanged]


def test_refused_sas_on_an_unknown_device_is_ignored_like_lime(fake_alice, events):
    """lime ignores UNTRUSTED for devices it never met."""
    assert _verdict(fake_alice, events, verified=False) is PeerStatus.UNKNOWN


def test_refused_sas_with_unsafe_if_sas_refused_reports_a_mitm(fake_alice, events):
    """[lime] unsafe_if_sas_refused=1: UNSAFE and ManInTheMiddleDetected."""
    with events.recording(ManInTheMiddleDetected) as seen:
        status = _verdict(fake_alice, events, verified=False, unsafe_if_sas_refused=True)
    assert status is PeerStatus.UNSAFE and len(seen) == 1


def test_a_parsed_sdp_can_be_given_as_the_peer_keys(fake_alice, events):
    """peer_keys accepts the peer's SdpIdentity; a legacy a=Ik counts for our curve."""
    bob = parse_sdp_identity(BOB_200_SDP)
    assert peer_identity_keys(bob) == [IdentityKey(1, BOB_IK)]
    status = apply_sas_verdict(fake_alice, BOB_PHONE, verified=True,
                               aux_status=AuxSecretStatus.MATCH, peer_keys=bob)
    assert status is PeerStatus.TRUSTED


def test_events_reach_only_subscribers_of_their_kind_until_cancelled(fake_alice, events):
    """subscribe filters by class; cancel stops delivery."""
    everything: list[SecurityEvent] = []
    mitm: list[ManInTheMiddleDetected] = []
    events.subscribe(everything.append)
    sub = events.subscribe(mitm.append, ManInTheMiddleDetected)
    _verdict(fake_alice, events, verified=True, aux=AuxSecretStatus.MISMATCH)
    sub.cancel()
    sub.cancel()
    fake_alice.peers.clear()
    _verdict(fake_alice, events, verified=True, aux=AuxSecretStatus.MISMATCH)
    assert len(mitm) == 1 and len(everything) == 4
