"""Every input the fuzzers kept (tests/reliability/regressions/) still behaves as recorded.

Crash cases of liblime replay in a child process and stay expected failures (strict) until
pylime refuses them; everything else replays in-process against its target's invariant.
"""

from __future__ import annotations

import json
from pathlib import Path

import fuzzlib as F
import pytest
from test_low_order_points import replay_in_child

from pylime.reference import ReferenceManager

CASES = Path(__file__).parent / "regressions"
LIME_CRASHES = sorted((CASES / "lime-decrypt").glob("*.json"))
REF_CASES = sorted((CASES / "ref-decrypt").glob("*.json"))
BYTE_CASES = sorted(p for t in ("ref-parsers", "keyserver-handle", "envelope")
                    for p in (CASES / t).glob("*.bin"))


def test_the_regression_corpus_is_not_empty():
    """The fuzzers' findings are kept: at least the liblime crash class is there."""
    assert LIME_CRASHES


@pytest.mark.parametrize("path", LIME_CRASHES, ids=[p.stem for p in LIME_CRASHES])
def test_a_kept_lime_crash_no_longer_kills_the_process(path):
    """The recorded input is refused with a typed error and the session survives."""
    case = json.loads(path.read_text())
    child = replay_in_child(case)
    assert child.returncode == 0, f"the process died: {child.returncode}"
    assert child.stdout.strip() in ("refused", "consumed", "identity", "junk-accepted")


@pytest.mark.parametrize("path", LIME_CRASHES + REF_CASES,
                         ids=[f"ref-{p.stem}" for p in LIME_CRASHES + REF_CASES])
def test_the_reference_handles_every_kept_decrypt_case(path):
    """The reference meets the invariant on every kept decrypt case (same recipe, fresh pair)."""
    case = json.loads(path.read_text())
    assert F.replay_decrypt_case(ReferenceManager, case) in (
        "refused", "consumed", "identity", "junk-accepted")


@pytest.mark.parametrize("path", BYTE_CASES, ids=[f"{p.parent.name}-{p.stem}" for p in BYTE_CASES])
def test_a_kept_byte_input_meets_its_invariant(path):
    """A kept parser, key-server or envelope input is refused typed or handled faithfully."""
    data = path.read_bytes()
    target = path.parent.name
    if target == "ref-parsers":
        F.check_reference_parsers(data)
    elif target == "envelope":
        F.check_envelope(data)
    else:
        F.KeyServerTarget().check(data, verify_victim=True)
