"""The reference verifies the liblime-produced vectors in tests/vectors (see scripts/make_vectors)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from pylime.reference import ReferenceManager, encoding
from pylime.reference.primitives import SIZES, ed_public, ed_verify
from pylime.reference.storage import Db
from pylime.types import Curve

VECTORS = pathlib.Path(__file__).parent.parent / "vectors"
FILES = sorted(VECTORS.glob("liblime_session_*.json"))


class NoServer:
    """Decryption never talks to the key server."""

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        raise AssertionError("decryption must not reach the key server")


def _load(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _receiver_db(tmp_path: pathlib.Path, v: dict[str, Any]) -> pathlib.Path:
    path = tmp_path / "bob.sqlite3"
    db = Db(str(path))
    rx = v["receiver"]
    with db.transaction() as c:
        c.execute("INSERT INTO lime_LocalUsers(UserId,Ik,server,curveId) VALUES (?,?,?,?)",
                  (v["receiver_device_id"], bytes.fromhex(rx["ik"]), "https://unused",
                   int(Curve[v["curve"]])))
        for k in rx["spks"]:
            c.execute("INSERT INTO X3DH_SPK(SPKid,SPK,Status,Uid) VALUES (?,?,?,1)",
                      (k["id"], bytes.fromhex(k["key"]), k["status"]))
        for k in rx["opks"]:
            c.execute("INSERT INTO X3DH_OPK(OPKid,OPK,Status,Uid) VALUES (?,?,?,1)",
                      (k["id"], bytes.fromhex(k["key"]), k["status"]))
    db.close()
    return path


def test_vector_files_exist_with_provenance() -> None:
    """Both curves have a vector file that records the liblime version it came from."""
    assert {p.name for p in FILES} >= {"liblime_session_c25519.json", "liblime_session_c448.json"}
    for path in FILES:
        prov = _load(path)["provenance"]
        assert prov["packages"]["liblime0"].startswith("5.1.64")


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_liblime_spk_signature_and_keys(path: pathlib.Path) -> None:
    """liblime's registerUser carries the stored Ik and SPk, and its SPk signature verifies."""
    v = _load(path)
    curve = Curve[v["curve"]]
    s = SIZES[curve]
    msg = encoding.parse_request(bytes.fromhex(v["register_user_message"]))
    assert isinstance(msg, encoding.RegisterUser)
    ik = bytes.fromhex(v["receiver"]["ik"])
    assert msg.ik == ik[: s.ed_pub] == ed_public(curve, ik[s.ed_pub:])
    active = next(k for k in v["receiver"]["spks"] if k["status"] == 1)
    assert msg.spk == bytes.fromhex(active["key"])[: s.x_pub] and msg.spk_id == active["id"]
    assert ed_verify(curve, msg.ik, msg.spk, msg.spk_sig)
    assert not ed_verify(curve, msg.ik, msg.spk[::-1], msg.spk_sig)
    assert {o.id for o in msg.opks} == {k["id"] for k in v["receiver"]["opks"]}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reference_decrypts_liblime_vectors(tmp_path: pathlib.Path, path: pathlib.Path) -> None:
    """From the receiver's stored keys the reference decrypts every liblime message exactly."""
    v = _load(path)
    db_path = _receiver_db(tmp_path, v)
    with ReferenceManager(db_path, transport=NoServer()) as bob:
        for i in v["decrypt_order"]:
            m = v["messages"][i]
            _status, plain = bob.decrypt(v["receiver_device_id"], m["recipient_user_id"],
                                        v["sender_device_id"], bytes.fromhex(m["dr_message"]),
                                        bytes.fromhex(m["cipher_message"]))
            assert plain.hex() == m["plaintext"], f"message {i}"
        assert bob.peer_status(v["sender_device_id"]) == 0
    import sqlite3

    with sqlite3.connect(db_path) as c:
        (ik,) = c.execute("SELECT Ik FROM lime_PeerDevices").fetchone()
        assert bytes(ik).hex() == v["sender_identity_key"]
        # the one OPk named by the X3DH init was consumed
        assert c.execute("SELECT count(*) FROM X3DH_OPK").fetchone() == (len(v["receiver"]["opks"]) - 1,)
