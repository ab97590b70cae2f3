"""The reference against a real lime 5.4.24 on its three post-quantum algorithms.

tests/vectors/lime54_<algo>.json (made by pq-oracle's out-of-repo lime 5.4 build; schema
and provenance in tests/vectors/README.md) records four devices through 129 steps: first
messages with and without OPk, the forced KEM ratchet, EC ratchets with KEM-index headers,
skipped keys, both payload policies, a 44-message chain followed by a KEM step, and each
device's session rows after each step.

The test replays it step by step with the reference's own sessions:

- every decryption (the receiver side of the hybrid X3DH from the recorded prekeys, then
  the KEM and EC ratchet steps) gives lime's plaintext and leaves exactly the session row
  lime stored (RK, chain keys, counters, DHr, DHs, DHrStatus, skipped keys);
- every encryption on an established session, with lime's recorded fresh keys and
  ciphertexts replayed, gives lime's DR message byte for byte and lime's session row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pylime.reference import _replay, encoding, hybrid, kem
from pylime.reference.hybrid import HybridSession
from pylime.reference.manager import x3dh_ad
from pylime.reference.primitives import SIZES, aead_decrypt, hkdf_sha512
from pylime.reference.ratchet import RANDOM_SEED_INFO
from pylime.types import Curve

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ALGOS = ["c25519k512", "c25519mlk512", "c448mlk1024"]
#: row fields compared after each step (sessionId/peerDeviceId/Status are the manager's)
FIELDS = ("Ns", "Nr", "PN", "DHr", "DHrStatus", "DHs", "RK", "CKs", "CKr", "AD")


def _load(algo: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"lime54_{algo}.json").read_text())  # type: ignore[no-any-return]


def _active(state: dict[str, Any], peer: str) -> dict[str, Any]:
    rows = [s for s in state["sessions"] if s["peerDeviceId"] == peer and s["Status"] == 1]
    assert len(rows) == 1, f"one active session with {peer}"
    return rows[0]  # type: ignore[no-any-return]


class Replay:
    """The reference's sessions of every device, driven through the recorded steps."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.curve = Curve(data["curve_id"])
        self.devices = data["devices"]
        self.ids = {name: d["device_id"] for name, d in self.devices.items()}
        self.names = {v: k for k, v in self.ids.items()}
        # (device, peer device id) -> session; (device, peer) -> chain index -> {Nr: MK}
        self.sessions: dict[tuple[str, str], HybridSession] = {}
        self.skipped: dict[tuple[str, str], dict[bytes, dict[int, bytes]]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        # KEM chain counter as lime last wrote it: its plain encryptions (no ratchet step)
        # update Ns and CKs only, so the stored DHrStatus lags the in-memory counter
        self.written: dict[tuple[str, str], int] = {}
        self.checked = {"decrypt": 0, "x3dh": 0, "encrypt-bytes": 0, "rows": 0}

    # ------------------------------------------------------------------ recorded state

    def adopt(self, device: str, state: dict[str, Any], peers: set[str]) -> None:
        """Take a device's recorded rows with ``peers`` as its sessions (after steps we
        cannot redo)."""
        for row in state["sessions"]:
            if row["Status"] != 1 or row["peerDeviceId"] not in peers:
                continue
            key = (device, row["peerDeviceId"])
            self.sessions[key] = _replay.session_from_state(self.curve, row)
            chains: dict[bytes, dict[int, bytes]] = {}
            for sk in state["skipped_keys"]:
                if sk["sessionId"] == row["sessionId"]:
                    chains.setdefault(bytes.fromhex(sk["chainIndex"]), {})[sk["Nr"]] = \
                        bytes.fromhex(sk["MK"])
            self.skipped[key] = chains
            self.written[key] = self.sessions[key].kem_chain

    def compare(self, device: str, peer: str, state: dict[str, Any], step: int) -> None:
        """The reference's session equals lime's stored row, skipped keys included.

        DHrStatus: the flags always; the KEM chain counter as lime last stored it.
        """
        session = self.sessions[(device, peer)]
        mine = _replay.state_of(session)
        row = _active(state, peer)
        chain = self.written[(device, peer)]
        mine["DHrStatus"] = (mine["DHrStatus"] & 0xFF) | (chain << 8)
        for f in FIELDS:
            assert mine[f] == row[f], f"step {step}: {device}'s {f} with {self.names[peer]}"
        if row.get("X3DHInit"):
            assert mine["X3DHInit"] == row["X3DHInit"], f"step {step}: X3DHInit"
        lime_skipped = {(bytes.fromhex(s["chainIndex"]), s["Nr"], bytes.fromhex(s["MK"]))
                        for s in state["skipped_keys"] if s["sessionId"] == row["sessionId"]}
        ours = {(c, n, mk) for c, keys in self.skipped.get((device, peer), {}).items()
                for n, mk in keys.items()}
        assert ours == lime_skipped, f"step {step}: {device}'s skipped keys"
        self.checked["rows"] += 1

    # ------------------------------------------------------------------ steps

    def decrypt(self, step: dict[str, Any]) -> None:
        me, sender = step["recipient"], self.ids[step["sender"]]
        sent = self.messages[step["message_step"]]
        (msg,) = [m for m in sent["messages"] if m["recipient"] == me]
        dr, cipher = bytes.fromhex(msg["dr"]), bytes.fromhex(sent["cipher"])
        header, _ = encoding.parse_dr_header(dr, self.curve)
        key = (me, sender)
        session = self.sessions.get(key)
        if session is None:  # first contact: the hybrid X3DH, receiver side
            assert header.x3dh_init is not None
            session = self._respond(me, sender, header.x3dh_init)
            self.sessions[key] = session
            self.skipped[key] = {}
            self.written[key] = 0
            self.checked["x3dh"] += 1
        me_id, ruid = self.ids[me], sent["recipient_user_id"]
        direct = not cipher
        prefix = ((ruid.encode() if direct else cipher[-16:]) + sender.encode()
                  + me_id.encode())
        chains = self.skipped[key]

        def lookup(index: bytes, nr: int) -> tuple[int, bytes] | None:
            mk = chains.get(index, {}).get(nr)
            return None if mk is None else (1, mk)

        payload = session.decrypt(dr, prefix, direct, lookup, lambda i: i in chains)
        if session.used_skipped is not None:
            index = header.chain_index
            del chains[index][header.ns]
            if not chains[index]:
                del chains[index]
            session.used_skipped = None
        for index, keys in session.new_skipped:
            chains.setdefault(index, {}).update(keys)
        session.new_skipped = []
        self.written[key] = session.kem_chain  # every decryption stores DHrStatus
        if not direct:
            k = hkdf_sha512(b"", payload, RANDOM_SEED_INFO, 48)
            payload = aead_decrypt(k[:32], k[32:], cipher, sender.encode() + ruid.encode())
        assert payload.hex() == step["expected_plaintext"] == step["plaintext"], \
            f"step {step['n']}: plaintext"
        self.checked["decrypt"] += 1
        if "recipient_state_after" in step:
            self.compare(me, sender, step["recipient_state_after"], step["n"])

    def _respond(self, me: str, sender: str, init: encoding.X3DHInit) -> HybridSession:
        keys = self.devices[me]["keys_after_create"]
        (user,) = keys["local_users"]
        ik = bytes.fromhex(user["Ik"])
        e = SIZES[self.curve].ed_pub
        ik_pub, ik_seed = ik[:e], ik[e:]
        spk = _replay.prekey(self.curve, next(
            s["SPK"] for s in keys["spk"] if s["SPKid"] == init.spk_id))
        opk = None
        if init.opk_id is not None:
            opk = _replay.prekey(self.curve, next(
                o["OPK"] for o in keys["opk"] if o["OPKid"] == init.opk_id))
        sk = hybrid.respond(self.curve, ik_pub, ik_seed, spk, opk, init)
        ad = x3dh_ad(init.ik, ik_pub, sender, self.ids[me])
        return HybridSession.as_receiver(self.curve, 1, 1, sk, ad, spk, init.opk_id or 0,
                                         sender, init.ik)

    def encrypt(self, step: dict[str, Any]) -> None:
        self.messages[step["n"]] = step
        me = step["sender"]
        after = step.get("sender_state_after")
        take: set[str] = set()
        for msg in step["messages"]:
            peer = self.ids[msg["recipient"]]
            session = self.sessions.get((me, peer))
            if session is None or step["policy"] != "DRMessage":
                # a new X3DH (its ephemeral key is not recorded) or a random seed as the
                # payload: take lime's row; the receivers' decryptions check the message
                take.add(peer)
                continue
            self._redo(session, me, peer, step, msg, after)
        if take:
            assert after is not None
            self.adopt(me, after, take)

    def _redo(self, session: HybridSession, me: str, peer: str, step: dict[str, Any],
              msg: dict[str, Any], after: dict[str, Any] | None) -> None:
        """Encrypt again with lime's recorded fresh keys: the same bytes, the same row."""
        peer_session = self.sessions[(self.names[peer], self.ids[me])]
        k = kem.KEM_OF[self.curve]
        entropy = _replay.ReplayEntropy(
            self.curve, lambda ct: bytes(kem.decaps(k, peer_session.kem_priv, ct)))
        if after is not None:
            entropy.expect_dhs(_active(after, peer)["DHs"])
        session.entropy = entropy
        prefix = (step["recipient_user_id"].encode() + self.ids[me].encode() + peer.encode())
        session.dirty = "clean"
        dr = session.encrypt(bytes.fromhex(step["plaintext"]), prefix, True)
        session.entropy = hybrid.DEFAULT_ENTROPY
        if session.dirty == "ratchet":  # a ratchet step: lime stores DHrStatus too
            self.written[(me, peer)] = session.kem_chain
        assert dr.hex() == msg["dr"], f"step {step['n']}: DR message bytes"
        self.checked["encrypt-bytes"] += 1
        if after is not None:
            self.compare(me, peer, after, step["n"])


@pytest.mark.parametrize("algo", ALGOS)
def test_reference_replays_lime54(algo: str) -> None:
    """Every recorded decryption and every redone encryption agrees with lime 5.4.24."""
    data = _load(algo)
    assert data["schema"] == "pylime-lime54-vectors/1" and data["algo"] == algo
    replay = Replay(data)
    for step in data["steps"]:
        if step["op"] == "encrypt":
            replay.encrypt(step)
        elif step["op"] == "decrypt":
            replay.decrypt(step)
        elif step["op"] == "checkpoint":
            for peer in {s["peerDeviceId"] for s in step["state"]["sessions"]
                         if s["Status"] == 1 and (step["device"], s["peerDeviceId"])
                         in replay.sessions}:
                replay.compare(step["device"], peer, step["state"], step["n"])
    c = replay.checked
    assert c["decrypt"] == 63 and c["x3dh"] == 5
    # the 57 encryptions on established sessions minus the cipher-message one; 33 stored rows
    assert c["encrypt-bytes"] == 56 and c["rows"] == 33, c


@pytest.mark.parametrize("algo", ALGOS)
def test_lime54_first_message_sizes_and_kem_headers(algo: str) -> None:
    """lime 5.4's first message carries the X3DH init with its ciphertext and the full
    ratchet keys; its later messages use the KEM-index form the reference parses."""
    data = _load(algo)
    curve = Curve(data["curve_id"])
    first = next(s for s in data["steps"] if s["op"] == "encrypt")
    header, size = encoding.parse_dr_header(bytes.fromhex(first["messages"][0]["dr"]), curve)
    assert header.x3dh_init is not None and header.x3dh_init.opk_id is not None
    assert len(header.x3dh_init.ct) == kem.SIZES[kem.KEM_OF[curve]].ct
    assert size == encoding.header_size(curve, header.x3dh_init)
    forms = set()
    for step in data["steps"]:
        for m in step.get("messages", []):
            raw = bytes.fromhex(m["dr"])
            h, n = encoding.parse_dr_header(raw, curve)
            assert h.to_bytes() == raw[:n]  # parse then serialise: lime's exact bytes
            forms.add(h.kem_indexes is not None)
    assert forms == {True, False}
