"""Low-order public keys in a message or a bundle: the heap corruption fuzzing found in liblime.

A DR header whose ratchet key (DHs), or an X3DH init whose ephemeral key (Ek) or identity
key (Ik, after lime's Ed→X conversion) is a low-order point makes the X25519/X448 result
all-zero. decaf reports that as a failure, and bctoolbox 5.1.64's bctbx_ECDHComputeSecret
then frees the shared-secret buffer and memsets it (a use-after-free write): glibc aborts
the process, on any session, before any authentication. Anyone who can send a message to
a device can crash it. liblime runs in a child process here, so the crash is a test
result. The reference refuses the same messages with a typed error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import fuzzlib as F
import pytest

from pylime import errors
from pylime.keyserver import protocol as proto
from pylime.reference import ReferenceManager
from pylime.types import Curve, Policy

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

# (curve, stage, field, index of the point in fuzzlib.BAD_POINTS) that crash liblime
CASES = [
    (Curve.C25519, "chain", "dhs", 0),
    (Curve.C25519, "x3dh", "x3dh.ek", 1),
    (Curve.C25519, "x3dh", "x3dh.ik", 0),
    (Curve.C448, "chain", "dhs", 0),
    (Curve.C448, "x3dh", "dhs", 1),
]
IDS = [f"{c.name.lower()}-{stage}-{field}" for c, stage, field, _ in CASES]


def _case(curve: Curve, stage: str, field: str, point: int) -> dict:
    return {"target": "lime-decrypt", "curve": int(curve), "policy": int(Policy.DR_MESSAGE),
            "stage": stage, "size": 20, "recipe": [["point", field, point]]}


def replay_in_child(case: dict, backend: str = "lime") -> subprocess.CompletedProcess:
    """Replay a decrypt case on a fresh pair in a fresh interpreter."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import fuzzlib as F\n"
        "from pylime.manager import Manager\n"
        "from pylime.reference import ReferenceManager\n"
        "factory = Manager if sys.argv[3] == 'lime' else ReferenceManager\n"
        "print(F.replay_decrypt_case(factory, json.loads(sys.argv[2])))\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(HERE), json.dumps(case), backend],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize(("curve", "stage", "field", "point"), CASES, ids=IDS)
def test_the_reference_refuses_a_low_order_point_typed(curve, stage, field, point):
    """The reference raises a DecryptionError and the genuine message still decrypts."""
    assert F.replay_decrypt_case(ReferenceManager, _case(curve, stage, field, point)) == \
        "refused"


@pytest.mark.parametrize(("curve", "stage", "field", "point"), CASES, ids=IDS)
def test_lime_decrypt_survives_a_low_order_point(curve, stage, field, point):
    """Manager.decrypt refuses a low-order key with DecryptionError instead of crashing.

    Fix (Manager.decrypt, before calling lime): parse the header as
    pylime.reference.encoding.parse_dr_header does and raise MalformedMessageError when
    DHs, the X3DH init's Ek, or its Ik converted to X is a low-order point (an X25519/X448
    exchange with it gives all zeros: fuzzlib.is_low_order shows the check).
    """
    child = replay_in_child(_case(curve, stage, field, point))
    assert child.returncode == 0, f"the process died: {child.returncode} {child.stderr[-200:]}"
    assert child.stdout.strip() == "refused"


class LowOrderOPkServer:
    """A malicious key server: real answers, but every OPk in a bundle is the zero point."""

    def __init__(self, server):
        self.server = server

    def post(self, url, sender, body):
        code, answer = self.server.post(url, sender, body)
        if len(answer) > 1 and answer[1] == proto.MessageType.PEER_BUNDLE:
            bundle = proto.parse_response(answer)
            forged = tuple(
                b if b.opk is None else
                proto.Bundle(b.device_id, b.ik, b.spk, b.spk_id, b.spk_sig,
                             proto.OPk(bytes(len(b.opk.public)), b.opk.id))
                for b in bundle.bundles)
            answer = proto.PeerBundle(bundle.curve, forged).to_bytes()
        return code, answer


_BUNDLE_CHILD = """
import sys, tempfile, os
sys.path.insert(0, sys.argv[1])
from test_low_order_points import LowOrderOPkServer
from pylime import errors
from pylime.keyserver import KeyServer
from pylime.manager import Manager
from pylime.types import Curve
curve = Curve(int(sys.argv[2]))
server = KeyServer()
d = tempfile.mkdtemp()
bob = Manager(os.path.join(d, "b"), transport=server)
alice = Manager(os.path.join(d, "a"), transport=LowOrderOPkServer(server))
bob.create_user("sip:bob@example.org;gr=1", "https://k", curve)
alice.create_user("sip:alice@example.org;gr=1", "https://k", curve)
try:
    alice.encrypt("sip:alice@example.org;gr=1", "sip:bob@example.org",
                  ["sip:bob@example.org;gr=1"], b"hello")
except errors.KeyServerError:
    outcome = "refused"
else:
    outcome = "accepted"
# keep using the heap: a corrupted one aborts here
for i in range(20):
    carol = Manager(os.path.join(d, f"c{i}"), transport=server)
    carol.create_user(f"sip:carol@example.org;gr={i}", "https://k", curve)
    carol.encrypt(f"sip:carol@example.org;gr={i}", "sip:bob@example.org",
                  ["sip:bob@example.org;gr=1"], b"x" * i)
    carol.close()
alice.close(); bob.close()
print(outcome)
"""


def test_lime_refuses_a_bundle_with_a_low_order_opk_typed(curve):
    """A low-order OPk forged by the key server fails the encrypt with KeyServerError.

    Unchecked, lime would report EncryptionError after the use-after-free had already
    corrupted the heap (the process then aborts a few allocations later). The driver checks
    every peerBundle answer first and answers a bundle with a low-order key as failed.
    """
    child = subprocess.run([sys.executable, "-c", _BUNDLE_CHILD, str(HERE), str(int(curve))],
                           capture_output=True, text=True, timeout=120, cwd=ROOT,
                           check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, f"the process died: {child.returncode} {child.stderr[-200:]}"
    assert child.stdout.strip() == "refused"


class ValidatingTransport:
    """The bundle-side fix, as a transport wrapper: refuse a peerBundle with a low-order key."""

    def __init__(self, inner):
        self.inner = inner

    def post(self, url, sender, body):
        from pylime.reference.primitives import ed_to_x_public

        code, answer = self.inner.post(url, sender, body)
        if code == 200 and len(answer) > 2 and answer[1] == proto.MessageType.PEER_BUNDLE:
            bundle = proto.parse_response(answer)
            for b in bundle.bundles:
                if b.ik is None:
                    continue
                keys = [b.spk, ed_to_x_public(bundle.curve, b.ik)] + ([b.opk.public] if b.opk
                                                                        else [])
                if any(F.is_low_order(bundle.curve, k) for k in keys):
                    raise ValueError("the peerBundle carries a low-order key")
        return code, answer


def test_a_validating_transport_keeps_a_forged_bundle_away_from_lime(curve):
    """Checking bundles before lime sees them turns the crash into a typed error (a mitigation)."""
    code = _BUNDLE_CHILD.replace(
        "from test_low_order_points import LowOrderOPkServer",
        "from test_low_order_points import LowOrderOPkServer, ValidatingTransport").replace(
        "transport=LowOrderOPkServer(server))",
        "transport=ValidatingTransport(LowOrderOPkServer(server)))").replace(
        "except errors.EncryptionError:", "except errors.TransportError:")
    child = subprocess.run([sys.executable, "-c", code, str(HERE), str(int(curve))],
                           capture_output=True, text=True, timeout=120, cwd=ROOT,
                           check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, f"the process died: {child.returncode} {child.stderr[-200:]}"
    assert child.stdout.strip() == "refused"


def test_the_reference_refuses_a_bundle_with_a_low_order_opk_typed(tmp_path, server, curve):
    """ReferenceManager.encrypt refuses the forged bundle with KeyServerError, as the binding does."""
    bob = ReferenceManager(tmp_path / "bob.sqlite3", transport=server)
    alice = ReferenceManager(tmp_path / "alice.sqlite3", transport=LowOrderOPkServer(server))
    try:
        bob.create_user("sip:bob@example.org;gr=1", F.URL, curve)
        alice.create_user("sip:alice@example.org;gr=1", F.URL, curve)
        with pytest.raises(errors.KeyServerError):
            alice.encrypt("sip:alice@example.org;gr=1", "sip:bob@example.org",
                          ["sip:bob@example.org;gr=1"], b"hello")
    finally:
        alice.close()
        bob.close()


def test_the_low_order_predicate_matches_what_crashes(curve):
    """fuzzlib's predicate flags the zero point and leaves genuine keys alone."""
    with tempfile.TemporaryDirectory() as directory:
        pair = F.Pair(ReferenceManager, curve, directory)
        msg = pair.next_message(Policy.DR_MESSAGE)
        assert F.low_order_fields(msg.dr, curve) == []
        bad, _ = F.apply_recipe([["point", "dhs", 0]], msg.dr, b"", curve)
        assert F.low_order_fields(bad, curve) == ["dhs"]
        pair.close()
