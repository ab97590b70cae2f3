"""SPk signatures in peer bundles: what liblime accepts and what the reference accepts.

Each edge case of tests/ed25519_cases.py is published on the key server as a device's
identity key, SPk and signature; a liblime device and a reference device then encrypt to
it. Keys made as lime makes them pass on both; the reference refuses the small-order,
mixed-order and cofactored-only cases that liblime's decaf accepts (the documented
difference, see ``pylime.reference.primitives.ed25519ctx_verify``).
"""

from __future__ import annotations

import pytest

from pylime import errors
from pylime.keycheck import is_low_order_identity
from pylime.keyserver import protocol as proto
from pylime.reference import primitives as p
from pylime.types import Curve
from tests import ed25519_cases as ec

from .conftest import URL, Net

SPK_CASES = [c for c in ec.cases() if len(c.message) == 32]
PEER = "sip:crafted@example.org;gr=urn:uuid:00000000-0000-4000-8000-0000000c0fee"


def _publish(net: Net, ik: bytes, spk: bytes, sig: bytes) -> None:
    body = proto.RegisterUser(Curve.C25519, ik, spk, sig, 7).to_bytes()
    status, answer = net.server.post(URL, PEER, body)
    assert status == 200 and answer[1] == proto.MessageType.REGISTER_USER


def _outcome(net: Net, kind: str) -> str:
    sender = net.dev(f"sender-{kind}", kind)
    try:
        sender.manager.encrypt(sender.device_id, "sip:crafted@example.org", [PEER], b"hi")
    except errors.LimeError as exc:
        return type(exc).__name__
    return "ok"


@pytest.mark.parametrize("curve", [Curve.C25519], ids=["c25519"])
@pytest.mark.parametrize("case", SPK_CASES, ids=[c.name for c in SPK_CASES])
def test_crafted_bundle_signatures(net: Net, case: ec.Case) -> None:
    """liblime accepts what decaf accepts, the reference what it documents; low-order keys fail both."""
    _publish(net, case.public, case.message, case.signature)
    if is_low_order_identity(Curve.C25519, case.public):  # refused before any signature check
        expected = {"lime": "KeyServerError", "ref": "KeyServerError"}
    else:
        expected = {"lime": "ok" if case.decaf else "EncryptionError",
                    "ref": "ok" if case.reference else "EncryptionError"}
    assert {kind: _outcome(net, kind) for kind in ("lime", "ref")} == expected


def test_reference_signed_bundle_verifies_in_liblime(net: Net, curve: Curve) -> None:
    """A bundle signed by the reference's Ed25519ctx/Ed448 is accepted by liblime, and back."""
    ik, seed = p.ed_keypair(curve)
    spk, _ = p.x_keypair(curve)
    body = proto.RegisterUser(curve, ik, spk, p.ed_sign(curve, seed, spk), 7).to_bytes()
    assert net.server.post(URL, PEER, body)[1][1] == proto.MessageType.REGISTER_USER
    assert _outcome(net, "lime") == "ok"
    lime_user = net.dev("signed-by-lime", "lime")
    ref = net.dev("verifier", "ref")
    out = ref.send(lime_user.user, [lime_user], b"hello")  # the reference verifies lime's SPk
    assert lime_user.open(lime_user.user, ref, out).plaintext == b"hello"
