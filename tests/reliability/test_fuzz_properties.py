"""Short property-based fuzzing runs; scripts/soak_fuzz runs the same checks 100,000 times.

Decrypt, on both backends and both curves: a mutated genuine message (header fields, X3DH
init, DR payload and tag, cipher message, truncations, extensions) is refused with a typed
error, leaves the database byte-for-byte as it was, and the genuine message still decrypts.
The known liblime heap corruption on low-order points (test_low_order_points.py) is kept out
of these in-process runs with ``assume``: it would kill the test process.
"""

from __future__ import annotations

import random

import fuzzlib as F
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pylime.types import Curve, Policy

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """One Alice→Bob pair per (backend, curve), renewed when a test asks for a fresh one."""
    cache: dict[tuple[str, Curve], F.Pair] = {}
    directory = str(tmp_path_factory.mktemp("pairs"))

    def get(factory, curve: Curve, fresh: bool) -> F.Pair:
        key = (factory.__name__, curve)
        if fresh or key not in cache:
            if key in cache:
                cache[key].close()
            cache[key] = F.Pair(factory, curve, directory)
        return cache[key]

    yield get
    for pair in cache.values():
        pair.close()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), fresh=st.integers(0, 9),
       policy=st.sampled_from([Policy.DR_MESSAGE, Policy.CIPHER_MESSAGE]),
       size=st.sampled_from([1, 31, 32, 33, 300]))
def test_a_mutated_message_is_refused_without_a_trace(backend, curve, pairs, seed, fresh,
                                                     policy, size):
    """Typed error, database unchanged, and the genuine message still decrypts."""
    # The recipe depends on the message's layout (X3DH init or not), which depends on the
    # pair's history: draw a seed, not the recipe, so hypothesis sees consistent draws.
    rng = random.Random(seed)
    pair = pairs(backend, curve, fresh == 0)
    msg = pair.next_message(policy, size)
    recipe = F.random_recipe(rng, msg.dr, msg.cipher, curve)
    mutated, _ = F.apply_recipe(recipe, msg.dr, msg.cipher, curve)
    if backend.__name__ == "Manager":
        assume(not F.low_order_fields(mutated, curve))
    outcome = F.check_mutated_decrypt(pair, msg, recipe, compare_db=True)
    F.check_genuine(pair, msg, consumed=outcome in ("consumed", "junk-accepted"))


_GENUINE: list[bytes] = []


def _genuine_dr_messages() -> list[bytes]:
    """A few genuine DR messages and cipher messages of both curves, made once."""
    if not _GENUINE:
        import tempfile

        from pylime.reference import ReferenceManager

        with tempfile.TemporaryDirectory() as directory:
            for curve in (Curve.C25519, Curve.C448):
                pair = F.Pair(ReferenceManager, curve, directory)
                for i in range(5):
                    msg = pair.next_message(Policy.CIPHER_MESSAGE if i % 2 else
                                            Policy.DR_MESSAGE)
                    _GENUINE.extend([msg.dr, msg.cipher] if msg.cipher else [msg.dr])
                    pair.decrypt(msg.dr, msg.cipher)
                pair.close()
    return _GENUINE


@settings(max_examples=400, deadline=None, database=None)
@given(selector=st.integers(0, 255), data=st.binary(max_size=300))
def test_reference_parsers_refuse_arbitrary_bytes_typed(selector, data):
    """Every reference parser raises a LimeError on garbage, or parses faithfully."""
    F.check_reference_parsers(bytes([selector]) + data)


@settings(max_examples=400, deadline=None, database=None)
@given(selector=st.integers(0, 255), index=st.integers(0, 19), cut=st.integers(0, 300),
       flip=st.integers(0, 2400), junk=st.binary(max_size=20))
def test_reference_parsers_on_damaged_genuine_messages(selector, index, cut, flip, junk):
    """Truncated, flipped and extended genuine messages: typed refusal or faithful parse."""
    genuine = _genuine_dr_messages()
    data = bytearray(genuine[index % len(genuine)])
    if data:
        data[flip % len(data)] ^= 1 << (flip % 8)
    data = data[:cut] + junk if cut < len(data) else data + junk
    F.check_reference_parsers(bytes([selector]) + bytes(data))


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=400))
def test_the_key_server_answers_anything_and_protects_other_devices(data):
    """KeyServer.handle never raises, always answers well-formed, never damages another device."""
    target = _keyserver()
    target.check(data, verify_victim=True)


_KS: list[F.KeyServerTarget] = []


def _keyserver() -> F.KeyServerTarget:
    if not _KS:
        _KS.append(F.KeyServerTarget())
    return _KS[0]


@settings(max_examples=300, deadline=None, database=None)
@given(seed=st.integers(0, 2), cut=st.integers(0, 2000), flip=st.integers(0, 20000),
       selector=st.integers(0, 255))
def test_a_damaged_envelope_fails_only_with_linphone_errors(seed, cut, flip, selector):
    """parse_envelope on damaged genuine envelopes: a LinphoneError or a consistent Envelope."""
    seeds = list(F.envelope_seeds())
    data = bytearray(seeds[seed % len(seeds)])
    data[0] = data[0] if selector % 2 else selector
    if len(data) > 1:
        data[1 + flip % (len(data) - 1)] ^= 1 << (flip % 8)
    F.check_envelope(bytes(data[: max(cut, 1)]) if cut < len(data) else bytes(data))
