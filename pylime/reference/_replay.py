"""Internal: rebuild reference sessions from recorded lime 5.4 state, for vector tests.

Not part of pylime's API. The lime 5.4 vectors (tests/vectors/lime54_*.json, schema in
their README) record each device's keys and its ``DR_sessions`` rows after every step; this
module turns those records into :class:`~pylime.reference.hybrid.HybridSession` objects
and back, and replays recorded randomness so an encryption can be redone byte for byte.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pylime.reference import kem
from pylime.reference.hybrid import Entropy, HybridSession, PreKey
from pylime.reference.primitives import SIZES
from pylime.types import Curve

__all__ = ["ReplayEntropy", "prekey", "session_from_state", "state_of"]


def _b(value: str | None) -> bytes:
    return bytes.fromhex(value) if value else b""


def session_from_state(curve: Curve, state: Mapping[str, Any], uid: int = 1,
                       did: int = 1, last_kem: int | None = None) -> HybridSession:
    """A session from one recorded ``DR_sessions`` row (hex fields as in the vectors).

    ``last_kem``: when the last KEM step happened (lime keeps it as the row's timeStamp,
    which the vectors do not carry); now by default.
    """
    return HybridSession.from_row(
        curve, uid, did, _b(state["RK"]), _b(state["CKs"]), _b(state["CKr"]),
        _b(state["DHs"]), _b(state["DHr"]), _b(state["AD"]), int(state["Ns"]),
        int(state["Nr"]), int(state["PN"]), int(state["Status"]) == 1,
        _b(state.get("X3DHInit")) or None, int(state["sessionId"]), int(state["DHrStatus"]),
        int(time.time()) if last_kem is None else last_kem)


def state_of(session: HybridSession) -> dict[str, Any]:
    """The recorded-row fields of a session, in the vectors' spelling."""
    return {
        "Ns": session.ns, "Nr": session.nr, "PN": session.pn, "DHr": session.dhr.hex(),
        "DHrStatus": session.status, "DHs": (session.dhs_pub + session.dhs_priv).hex(),
        "RK": bytes(session.rk).hex(), "CKs": bytes(session.cks).hex(),
        "CKr": bytes(session.ckr).hex(), "AD": session.ad.hex(),
        "X3DHInit": session.x3dh_init.hex() if session.x3dh_init else None,
    }


def prekey(curve: Curve, blob_hex: str) -> PreKey:
    """A recorded ``X3DH_SPK.SPK`` / ``X3DH_OPK.OPK`` blob as a PreKey."""
    return PreKey.from_blob(curve, _b(blob_hex))


class ReplayEntropy(Entropy):
    """Entropy that hands out recorded values: the next EC key pair, KEM key pair, and
    encapsulation (ciphertext, with its secret recovered by ``decapsulate``)."""

    def __init__(self, curve: Curve, decapsulate: Callable[[bytes], bytes]) -> None:
        self.curve = curve
        self.ec: deque[tuple[bytes, bytearray]] = deque()
        self.kem_pairs: deque[tuple[bytes, bytearray]] = deque()
        self.cts: deque[bytes] = deque()
        self._decapsulate = decapsulate

    def expect_dhs(self, dhs_hex: str) -> None:
        """Queue the key pairs and ciphertext of a recorded DHs blob (EC ‖ EC priv ‖ KEM ‖
        KEM priv ‖ ct): what the session will draw at its next ratchet step."""
        blob = _b(dhs_hex)
        k = kem.SIZES[kem.KEM_OF[self.curve]]
        x = SIZES[self.curve].x_pub
        self.ec.append((blob[:x], bytearray(blob[x:2 * x])))
        self.kem_pairs.append((blob[2 * x:2 * x + k.pk], bytearray(blob[2 * x + k.pk:-k.ct])))
        self.cts.append(blob[-k.ct:])

    def x_keypair(self, curve: Curve) -> tuple[bytes, bytearray]:
        """The next recorded EC key pair."""
        return self.ec.popleft()

    def kem_keypair(self, k: kem.Kem) -> tuple[bytes, bytearray]:
        """The next recorded KEM key pair."""
        return self.kem_pairs.popleft()

    def encaps(self, k: kem.Kem, public: bytes) -> tuple[bytes, bytes]:
        """The next recorded ciphertext and the secret the peer's private key finds in it."""
        ct = self.cts.popleft()
        return ct, self._decapsulate(ct)
