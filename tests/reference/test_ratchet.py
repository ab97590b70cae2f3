"""The reference Double Ratchet on in-memory sessions: KDFs, ratchet steps, limits, replays."""

from __future__ import annotations

import pytest

from pylime import errors
from pylime.reference import ratchet
from pylime.reference.manager import x3dh_ad, x3dh_sk
from pylime.reference.primitives import SIZES, hkdf_sha512, hmac_sha512, x_keypair
from pylime.types import CLASSIC_CURVES, Curve


def _pair(curve: Curve) -> tuple[ratchet.Session, ratchet.Session]:
    """Alice (sender) and Bob (receiver) sharing SK and AD, Bob's SPk as first DHr."""
    sk = bytearray(b"K" * 32)
    ad = b"A" * 32
    spk_pub, spk_priv = x_keypair(curve)
    alice = ratchet.Session.as_sender(curve, 1, 1, sk, ad, spk_pub, b"", "bob", b"")
    alice.x3dh_init = None
    bob = ratchet.Session.as_receiver(curve, 1, 1, sk, ad, spk_pub, spk_priv, 0, "alice", b"")
    return alice, bob


def _no_skipped(dhr: bytes, nr: int) -> None:
    return None


def _recv(s: ratchet.Session, msg: bytes, ad: bytes = b"ad") -> bytes:
    return s.decrypt(msg, ad, True, _no_skipped, lambda d: False)


def test_kdf_definitions() -> None:
    """KDF_CK uses HMAC(CK, 01)[:48] and HMAC(CK, 02)[:32]; KDF_RK is HKDF with RK as salt."""
    ck = bytearray(b"c" * 32)
    nxt, mk = ratchet.kdf_ck(ck)
    assert mk == hmac_sha512(ck, b"\x01", 48) and nxt == hmac_sha512(ck, b"\x02", 32)
    rk, ck2 = ratchet.kdf_rk(bytearray(b"r" * 32), b"d" * 32)
    full = hkdf_sha512(b"r" * 32, b"d" * 32, b"DR Root Chain Key Derivation", 64)
    assert rk + ck2 == full


def test_x3dh_helpers() -> None:
    """SK prefixes F = 0xFF * Ed-public-size; the AD orders initiator then responder."""
    ikm = b"\xff" * 57 + b"1" * 56 + b"2" * 56 + b"3" * 56
    assert x3dh_sk(Curve.C448, [b"1" * 56, b"2" * 56, b"3" * 56]) == hkdf_sha512(
        bytes(64), ikm, b"Lime", 32)
    assert x3dh_ad(b"I", b"R", "i", "r") != x3dh_ad(b"R", b"I", "r", "i")


@pytest.mark.parametrize("curve", list(CLASSIC_CURVES))
def test_round_trips_and_ratchet_steps(curve: Curve) -> None:
    """Messages flow both ways; each reply turns the DH ratchet and resets the counters."""
    alice, bob = _pair(curve)
    for rnd in range(3):
        m = alice.encrypt(b"a%d" % rnd, b"ad", True)
        assert len(m) == 7 + SIZES[curve].x_pub + 2 + 16
        assert _recv(bob, m) == b"a%d" % rnd
        r = bob.encrypt(b"b%d" % rnd, b"ad", True)
        assert _recv(alice, r) == b"b%d" % rnd
        assert alice.ns == 0 and alice.nr == 1


def test_associated_data_is_authenticated() -> None:
    """A different AD prefix (recipient user id, device ids) fails with BadTagError."""
    alice, bob = _pair(Curve.C25519)
    m = alice.encrypt(b"x", b"ad", True)
    with pytest.raises(errors.BadTagError):
        _recv(bob, m, b"other ad")


def test_skipped_keys_are_kept_for_later() -> None:
    """Skipping Ns 0..2 stores their keys for the current peer ratchet key."""
    alice, bob = _pair(Curve.C25519)
    msgs = [alice.encrypt(b"%d" % i, b"ad", True) for i in range(4)]
    assert _recv(bob, msgs[3]) == b"3"
    ((dhr, keys),) = bob.new_skipped
    assert dhr == alice.dhs_pub and sorted(keys) == [0, 1, 2]
    mk = keys[1]
    assert bob.decrypt(msgs[1], b"ad", True, lambda d, n: (7, mk) if n == 1 else None,
                       lambda d: True) == b"1"
    assert bob.used_skipped == (7, 1)


def test_replay_on_the_current_chain() -> None:
    """A message whose index is behind the chain and has no stored key is a replay."""
    alice, bob = _pair(Curve.C25519)
    m0 = alice.encrypt(b"0", b"ad", True)
    _recv(bob, m0)
    _recv(bob, alice.encrypt(b"1", b"ad", True))
    with pytest.raises(errors.ReplayError):
        _recv(bob, m0)


def _advance(s: ratchet.Session, n: int) -> None:
    """Move a sending chain n messages forward without sending them."""
    for _ in range(n):
        s.cks, _mk = ratchet.kdf_ck(s.cks)
    s.ns += n


def test_skip_limit_boundary_in_one_chain() -> None:
    """Exactly 1024 derivations in one go are allowed; the check is Nr + limit < target."""
    alice, bob = _pair(Curve.C25519)
    _advance(alice, 1024)
    m = alice.encrypt(b"far", b"ad", True)
    assert _recv(bob, m) == b"far"
    alice2, bob2 = _pair(Curve.C25519)
    _advance(alice2, 1025)
    with pytest.raises(errors.TooManySkippedError):
        _recv(bob2, alice2.encrypt(b"too far", b"ad", True))


def test_sending_chain_limit_marks_inactive() -> None:
    """The encryption that brings Ns to 1000 still happens, and the session goes inactive."""
    alice, _ = _pair(Curve.C25519)
    alice.ns = 998
    alice.encrypt(b"x", b"ad", True)
    assert alice.active
    alice.encrypt(b"y", b"ad", True)
    assert alice.ns == ratchet.MAX_SENDING_CHAIN and not alice.active


def test_mode_flag_must_match() -> None:
    """A direct-payload message given with a cipher message (or the reverse) is malformed."""
    alice, bob = _pair(Curve.C25519)
    m = alice.encrypt(b"x" * 32, b"ad", False)
    with pytest.raises(errors.MalformedMessageError):
        _recv(bob, m)
