"""The reference's primitives: Ed25519ctx against published vectors, conversions, KDFs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pylime.reference import primitives as p
from pylime.types import CLASSIC_CURVES, Curve

VECTORS = Path(__file__).parent.parent / "vectors"

# RFC 8032 section 7.2, "Test Vectors for Ed25519ctx" (all four cases, contexts "foo" and
# "bar"), transcribed from the RFC; the same values appear in Go's crypto/ed25519 tests.
# Fields: secret key, public key, message, context, signature.
RFC8032_ED25519CTX = [
    (
        "0305334e381af78f141cb666f6199f57bc3495335a256a95bd2a55bf546663f6",
        "dfc9425e4f968f7f0c29f0259cf5f9aed6851c2bb4ad8bfb860cfee0ab248292",
        "f726936d19c800494e3fdaff20b276a8",
        "666f6f",
        (
            "55a4cc2f70a54e04288c5f4cd1e45a7bb520b36292911876cada7323198dd87a"
            "8b36950b95130022907a7fb7c4e9b2d5f6cca685a587b4b21f4b888e4e7edb0d"
        ),
    ),
    (
        "0305334e381af78f141cb666f6199f57bc3495335a256a95bd2a55bf546663f6",
        "dfc9425e4f968f7f0c29f0259cf5f9aed6851c2bb4ad8bfb860cfee0ab248292",
        "f726936d19c800494e3fdaff20b276a8",
        "626172",
        (
            "fc60d5872fc46b3aa69f8b5b4351d5808f92bcc044606db097abab6dbcb1aee3"
            "216c48e8b3b66431b5b186d1d28f8ee15a5ca2df6668346291c2043d4eb3e90d"
        ),
    ),
    (
        "0305334e381af78f141cb666f6199f57bc3495335a256a95bd2a55bf546663f6",
        "dfc9425e4f968f7f0c29f0259cf5f9aed6851c2bb4ad8bfb860cfee0ab248292",
        "508e9e6882b979fea900f62adceaca35",
        "666f6f",
        (
            "8b70c1cc8310e1de20ac53ce28ae6e7207f33c3295e03bb5c0732a1d20dc6490"
            "8922a8b052cf99b7c4fe107a5abb5b2c4085ae75890d02df26269d8945f84b0b"
        ),
    ),
    (
        "ab9c2853ce297ddab85c993b3ae14bcad39b2c682beabc27d6d4eb20711d6560",
        "0f1d1274943b91415889152e893d80e93275a1fc0b65fd71b4b0dda10ad7d772",
        "f726936d19c800494e3fdaff20b276a8",
        "666f6f",
        (
            "21655b5f1aa965996b3f97b3c849eafba922a0a62992f73b3d1b73106a84ad85"
            "e9b86a7b6005ea868337ff2d20a7f5fbd4cd10b0be49a68da2b2e0dc0ad8960f"
        ),
    ),
]


@pytest.mark.parametrize("sk,pk,msg,ctx,sig", RFC8032_ED25519CTX)
def test_ed25519ctx_rfc8032_vectors(sk: str, pk: str, msg: str, ctx: str, sig: str) -> None:
    """Ed25519ctx reproduces RFC 8032's public keys and signatures and verifies them."""
    seed = bytes.fromhex(sk)
    assert p.ed25519ctx_public(seed).hex() == pk
    assert p.ed25519ctx_sign(seed, bytes.fromhex(msg), bytes.fromhex(ctx)).hex() == sig
    assert p.ed25519ctx_verify(bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig), bytes.fromhex(ctx))


def _lime_vectors() -> list[dict[str, str]]:
    data = json.loads((VECTORS / "lime_tester_ed25519ctx.json").read_text())
    return list(data["vectors"])


@pytest.mark.parametrize("vector", _lime_vectors())
def test_ed25519ctx_lime_tester_vectors(vector: dict[str, str]) -> None:
    """lime's own 8 curve25519 signature vectors reproduce with the empty-context scheme."""
    seed = bytes.fromhex(vector["secret_key"])
    msg = bytes.fromhex(vector["message"])
    assert p.ed_public(Curve.C25519, seed).hex() == vector["public_key"]
    assert p.ed_sign(Curve.C25519, seed, msg).hex() == vector["signature"]
    assert p.ed_verify(Curve.C25519, bytes.fromhex(vector["public_key"]), msg, bytes.fromhex(vector["signature"]))


def test_ed25519ctx_rejects_altered_message_and_signature() -> None:
    """A flipped bit in the message, the signature or the context fails verification."""
    pub, seed = p.ed_keypair(Curve.C25519)
    sig = p.ed_sign(Curve.C25519, seed, b"spk")
    assert not p.ed25519ctx_verify(pub, b"spk!", sig)
    assert not p.ed25519ctx_verify(pub, b"spk", bytes([sig[0] ^ 1]) + sig[1:])
    assert not p.ed25519ctx_verify(pub, b"spk", sig, b"x")
    assert not p.ed25519ctx_verify(pub, b"spk", sig[:32] + (2**255).to_bytes(32, "little"))


def test_ed25519ctx_is_not_plain_ed25519() -> None:
    """lime's empty-context signatures differ from pure Ed25519 ones for the same key."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    seed = bytes(range(32))
    plain = ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(b"m")
    assert p.ed25519ctx_sign(seed, b"m") != plain
    assert p.ed25519ctx_public(seed) == ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


@pytest.mark.parametrize("curve", list(CLASSIC_CURVES))
def test_ed_to_x_conversions_agree(curve: Curve) -> None:
    """X(public of seed) equals the converted Ed public key, so DH with converted keys agrees."""
    for _ in range(4):
        pub, seed = p.ed_keypair(curve)
        xpriv = p.ed_to_x_private(curve, seed)
        assert p.x_public(curve, xpriv) == p.ed_to_x_public(curve, pub)
        opub, opriv = p.x_keypair(curve)
        assert p.dh(curve, xpriv, opub) == p.dh(curve, opriv, p.ed_to_x_public(curve, pub))


@pytest.mark.parametrize("curve", list(CLASSIC_CURVES))
def test_ed448_and_ed25519ctx_sign_verify(curve: Curve) -> None:
    """Signatures have lime's sizes and verify only with the signer's key."""
    pub, seed = p.ed_keypair(curve)
    other, _ = p.ed_keypair(curve)
    sig = p.ed_sign(curve, seed, b"x" * p.SIZES[curve].x_pub)
    assert len(sig) == p.SIZES[curve].sig
    assert p.ed_verify(curve, pub, b"x" * p.SIZES[curve].x_pub, sig)
    assert not p.ed_verify(curve, other, b"x" * p.SIZES[curve].x_pub, sig)


@pytest.mark.parametrize("length", [32, 48, 64])
@pytest.mark.parametrize("salt", [b"", bytes(64), b"salt"])
def test_hkdf_matches_cryptography(length: int, salt: bytes) -> None:
    """HKDF-SHA512 equals cryptography's HKDF, an empty salt included."""
    ref = HKDF(hashes.SHA512(), length, salt or None, b"Lime").derive(b"ikm")
    assert bytes(p.hkdf_sha512(salt, b"ikm", b"Lime", length)) == ref


def test_hmac_truncation_and_aead_roundtrip() -> None:
    """Truncated HMAC is a prefix of the full one; AES-GCM with a 16-byte IV round-trips."""
    assert p.hmac_sha512(b"k", b"\x01", 48) == p.hmac_sha512(b"k", b"\x01")[:48]
    ct = p.aead_encrypt(bytes(32), bytes(16), b"hello", b"ad")
    assert len(ct) == 5 + 16
    assert p.aead_decrypt(bytes(32), bytes(16), ct, b"ad") == b"hello"
    with pytest.raises(p.InvalidTag):
        p.aead_decrypt(bytes(32), bytes(16), ct, b"AD")


def test_dh_rejects_low_order_point() -> None:
    """An all-zero X25519 result (low-order peer key) is an error, not a shared secret."""
    with pytest.raises(ValueError):
        p.dh(Curve.C25519, bytes(range(32)), bytes(32))


def test_random_ids_are_31_bit() -> None:
    """SPk/OPk ids never set the most significant bit."""
    assert all(0 <= p.random_id() < 2**31 for _ in range(200))
