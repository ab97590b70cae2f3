"""The reference's Ed25519ctx verification rules, case by case, beside libdecaf's (lime's).

The reference verifies as libsodium does (canonical encodings, prime-order key, S < L,
cofactorless equation); decaf, which liblime 5.1.64 calls, also accepts small-order and
mixed-order keys and signatures valid only under the cofactored equation. Keys and
signatures made as lime makes them are accepted by both, byte for byte the same.
"""

from __future__ import annotations

import os

import pytest

from pylime.reference import primitives as p
from tests import ed25519_cases as ec

CASES = ec.cases()
needs_decaf = pytest.mark.skipif(ec.DECAF is None, reason="libdecaf (liblime's) is not installed")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_verification_rules(case: ec.Case) -> None:
    """The reference accepts or refuses each edge case as its docstring says."""
    assert p.ed25519ctx_verify(case.public, case.message, case.signature) is case.reference


@needs_decaf
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decaf_verification_rules(case: ec.Case) -> None:
    """libdecaf accepts or refuses each edge case as the reference's docstring says it does."""
    assert ec.decaf_verify(case.public, case.message, case.signature) is case.decaf


def test_reference_accepts_nothing_decaf_refuses() -> None:
    """Every signature the reference accepts, decaf accepts: the reference is the stricter."""
    assert all(c.decaf for c in CASES if c.reference)


@needs_decaf
def test_signatures_identical_to_decaf_both_ways() -> None:
    """Random keys and messages: same public keys, byte-identical signatures, each verifies the other's."""
    for n in range(40):
        seed, message = os.urandom(32), os.urandom(n * 3)
        public = p.ed25519ctx_public(seed)
        theirs = ec.decaf_sign(seed, public, message)
        assert p.ed25519ctx_sign(seed, message) == theirs
        assert p.ed25519ctx_verify(public, message, theirs)
        assert ec.decaf_verify(public, message, p.ed25519ctx_sign(seed, message))


def test_zero_scalars_are_handled() -> None:
    """[0]B is the identity (libsodium refuses the zero scalar): S = 0 is checked, not crashed on."""
    assert p._base_mul(bytes(32)) == ec.IDENTITY
    pub = p.ed25519ctx_public(bytes(32))
    assert not p.ed25519ctx_verify(pub, b"m", ec.base(7) + bytes(32))


def test_malformed_inputs_are_refused() -> None:
    """Wrong lengths and a 33-byte key are refused without an exception."""
    pub = p.ed25519ctx_public(bytes(32))
    sig = p.ed25519ctx_sign(bytes(32), b"m")
    assert not p.ed25519ctx_verify(pub + b"\x00", b"m", sig)
    assert not p.ed25519ctx_verify(pub, b"m", sig[:63])
    with pytest.raises(ValueError):
        p.ed25519ctx_sign(bytes(31), b"m")
    with pytest.raises(ValueError):
        p.ed25519ctx_sign(bytes(32), b"m", b"x" * 256)
