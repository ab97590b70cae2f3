"""Identity and trust against two real liblinphone 5.1.65 clients (issue 9, part 3).

Two lime + ZRTP clients register on our registrar/GRUU proxy; lime creates their users on our
key server (HTTPS on 127.0.0.1, self-signed). Alice calls Bob's GRUU; the proxy relays the audio
and keeps the ZRTP packets. pylime then reads the real ``a=Ik`` from the SDP on the wire,
recomputes the ZRTP auxiliary secret and checks it against the ``auxsecretID`` each 5.1.65 party
put in its DHPart message, and replays every SAS verdict on a pylime manager to compare the
status with the one the real client wrote in its lime database.
"""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pylime import Curve, PeerStatus
from pylime.keyserver import KeyServer
from pylime.linphone import (
    AuxSecretStatus,
    SdpIdentity,
    apply_sas_verdict,
    aux_secret,
    normalize_device_id,
    parse_sdp_identity,
)
from pylime.linphone.address import uri_only
from pylime.linphone.zrtp import check_aux_secret
from tests.interop.accounts import Clients, start_clients
from tests.interop.harness import PeerProcess, RecordingKeyServer, Transcript
from tests.interop.sipproxy import SipProxy

try:
    from pylime.manager import Manager as MirrorManager
except ImportError:  # pragma: no cover - where _lime is not built
    from pylime.reference import ReferenceManager as MirrorManager  # type: ignore[assignment]

# ZRTP message layout (RFC 6189 §5.2, §5.5/§5.6): offsets inside the message, after the
# 12-byte packet header: preamble 2, length 2, type 8; Hello: version 4, client id 16, H3 32;
# DHPart: H1 32, rs1ID 8, rs2ID 8, auxsecretID 8.
HELLO_H3 = slice(32, 64)
DHPART_AUX_ID = slice(60, 68)


def sip_bodies(proxy: SipProxy) -> tuple[str, str]:
    """The INVITE's and the 200 OK's SDP as the clients sent them (before the relay rewrote ports)."""
    invite = next(e for e in proxy.transcript if e["dir"] == "in" and e["request"] and e["method"] == "INVITE")
    ok = next(e for e in proxy.transcript if e["dir"] == "in" and not e["request"]
              and e["method"] == "INVITE" and e["start"].startswith("SIP/2.0 200"))
    return invite["body"], ok["body"]


def zrtp_checks(proxy: SipProxy, secret: bytes) -> list[tuple[str, str, AuxSecretStatus]]:
    """For each DHPart on the wire: who sent it and what bzrtp concludes with ``secret``."""
    h3 = {}
    for packet in proxy.zrtp:
        if packet.type == "Hello":
            h3[packet.leg] = packet.message[HELLO_H3]
    out = []
    for packet in proxy.zrtp:
        if packet.type in ("DHPart1", "DHPart2"):
            out.append((packet.leg, packet.type,
                        check_aux_secret(secret, h3[packet.leg], packet.message[DHPART_AUX_ID])))
    return out


def mirror(tmp_path: Path, name: str) -> Any:
    """A pylime manager standing in for one real client's lime, to replay its SAS verdicts on."""
    manager = MirrorManager(tmp_path / f"{name}-mirror.sqlite3", transport=KeyServer())
    manager.create_user(f"sip:{name}-mirror@localhost;gr=urn:uuid:00000000-0000-4000-8000-00000000000{len(name)}",
                        "https://localhost/lime", Curve.C25519)
    return manager


def db_status(dbs: dict[str, Any], owner: str, device: str) -> tuple[PeerStatus, str | None]:
    """The status (UNKNOWN if absent) and Ik (hex) of ``device`` in ``owner``'s lime database."""
    for row in dbs[owner]["peers"]:
        if row["device_id"] == device:
            return PeerStatus(row["status"]), row["ik"]
    return PeerStatus.UNKNOWN, None


def verify_and_read(clients: Clients, who: str, verified: bool, device: str,
                    expected: PeerStatus, timeout: float = 3.0) -> tuple[PeerStatus, str | None]:
    """Give ``who``'s SAS verdict, then read its lime database until it shows ``expected`` (bounded).

    lime writes asynchronously to the API call; when the expected status never shows, the last
    one read is returned and the caller's assertion reports it.
    """
    dbs = clients.peer("verify", name=who, verified=verified, settle=0.2)
    deadline = time.monotonic() + timeout
    status, ik = db_status(dbs, who, device)
    while status is not expected and time.monotonic() < deadline:
        time.sleep(0.1)
        status, ik = db_status(clients.lime_dbs(), who, device)
    return status, ik


def call(clients: Clients, transcript: Transcript) -> dict[str, Any]:
    """Alice calls Bob's GRUU through the proxy; both sides reach StreamsRunning with a SAS."""
    bob = clients.proxy.binding_for("bob")
    assert bob is not None
    info: dict[str, Any] = clients.peer("call", caller="alice", callee="bob", target=bob.gruu, timeout=30)
    transcript.add("call", info)
    return info


@pytest.fixture
def clients(peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
            tls_cert: tuple[Path, Path], request: pytest.FixtureRequest,
            transcript: Transcript) -> Any:
    """Alice and Bob registered, with lime users on our key server; options from the test's mark."""
    mark = request.node.get_closest_marker("lime_options")
    lime = mark.args[0] if mark else None
    started = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice", "bob"], lime=lime)
    yield started
    peer.close()  # before the key server stops: it would wait for the clients' keep-alive HTTPS
    transcript.add("sip", proxy.transcript)
    transcript.add("keyserver", keyserver[0].log)
    transcript.add("zrtp", [(p.leg, p.type) for p in proxy.zrtp])
    transcript.add("proxy_errors", proxy.errors)


def test_registered_clients_have_their_lime_users_on_our_key_server(
    clients: Clients, transcript: Transcript
) -> None:
    """REGISTER 200 with a Flexisip-style GRUU → lime registers that GRUU on our HTTPS key server."""
    ids = [clients.device_id(n) for n in clients.names]
    for name, device in zip(clients.names, ids):
        assert device.startswith(f"sip:{name}@localhost;gr=urn:uuid:")
        assert normalize_device_id(device) == device
        assert clients.registered[name]["lime_users"] == [[True, device, ""]]
    assert sorted(clients.keyserver.device_ids()) == sorted(ids)
    registers = [e for e in clients.keyserver.log if e["request"] == "RegisterUser"]
    assert sorted(e["from"] for e in registers) == sorted(ids)
    assert all(e["request_bytes"] == 3 + 32 + 32 + 64 + 4 + 2 + 100 * 36 for e in registers)  # 100 OPks
    dbs = clients.lime_dbs()
    transcript.add("lime", dbs)
    for name, device in zip(clients.names, ids):
        (user,) = dbs[name]["users"]
        assert user["user_id"] == device
        assert bytes.fromhex(user["ik"]) == clients.keyserver.identity_key(device)


def test_real_a_ik_matches_our_key_server_and_the_aux_secret_is_the_one_5165_uses(
    clients: Clients, transcript: Transcript
) -> None:
    """a=Ik on the wire = the Ik our key server holds; pylime's aux secret matches both DHParts."""
    alice, bob = clients.device_id("alice"), clients.device_id("bob")
    info = call(clients, transcript)
    offer, answer = sip_bodies(clients.proxy)
    mine, theirs = parse_sdp_identity(offer), parse_sdp_identity(answer)
    transcript.add("sdp", {"offer": offer, "answer": answer})
    # 5.1.65 sends only the legacy attribute, session level.
    assert mine.lime_iks is None and theirs.lime_iks is None
    assert mine.ik is not None and theirs.ik is not None
    assert mine.ik == clients.keyserver.identity_key(alice)
    assert theirs.ik == clients.keyserver.identity_key(bob)
    # liblinphone's own view of the remote attribute agrees.
    assert info["bob"]["remote_ik"] == {"Ik": base64.b64encode(mine.ik).decode(), "lime-Ik": None, "lime-Iks": None}
    assert info["alice"]["remote_ik"]["Ik"] == base64.b64encode(theirs.ik).decode()
    # Contacts are the GRUUs (no port, no transport): trust lands on the lime device ids.
    assert normalize_device_id(info["alice"]["remote_contact"]) == bob
    assert uri_only(info["alice"]["remote_contact"]) == bob and uri_only(info["bob"]["remote_contact"]) == alice
    assert info["alice"]["sas"] == info["bob"]["sas"]
    assert info["alice"]["media_encryption"] == info["bob"]["media_encryption"] == 2  # ZRTP

    secret = aux_secret(mine, theirs, outgoing=True)
    assert secret is not None
    assert secret == aux_secret(theirs, mine, outgoing=False) == mine.ik + theirs.ik
    checks = zrtp_checks(clients.proxy, secret)
    transcript.add("aux_secret_checks", [(leg, kind, status.name) for leg, kind, status in checks])
    assert sorted(kind for _, kind, _ in checks)[:2] == ["DHPart1", "DHPart2"]
    assert {leg for leg, _, _ in checks} == {"caller", "callee"}
    assert all(status is AuxSecretStatus.MATCH for _, _, status in checks)
    # The order matters: callee first would be another secret, and bzrtp would see a mismatch.
    wrong = zrtp_checks(clients.proxy, theirs.ik + mine.ik)
    assert all(status is AuxSecretStatus.MISMATCH for _, _, status in wrong)
    clients.peer("hangup")


def _replay(
    clients: Clients, transcript: Transcript, tmp_path: Path, steps: list[tuple[str, bool]],
    *, unsafe_if_sas_refused: bool,
) -> list[dict[str, Any]]:
    """Run SAS verdicts on the real clients and on pylime mirrors; return one record per step."""
    info = call(clients, transcript)
    offer, answer = sip_bodies(clients.proxy)
    sdp = {"alice": parse_sdp_identity(answer), "bob": parse_sdp_identity(offer)}  # the peer's SDP
    mirrors = {"alice": mirror(tmp_path, "alice"), "bob": mirror(tmp_path, "bob")}
    records = []
    try:
        assert clients.lime_dbs()["alice"]["peers"] == clients.lime_dbs()["bob"]["peers"] == []
        for who, verified in steps:
            peer_contact = info[who]["remote_contact"]
            expected = apply_sas_verdict(
                mirrors[who], peer_contact, verified=verified, aux_status=AuxSecretStatus.MATCH,
                peer_keys=sdp[who], unsafe_if_sas_refused=unsafe_if_sas_refused,
            )
            device = normalize_device_id(peer_contact)
            status, ik = verify_and_read(clients, who, verified, device, expected)
            record = {"side": who, "verified": verified, "peer": device, "pylime": expected.name,
                      "linphone_db": status.name, "ik": ik}
            records.append(record)
            transcript.add("lime_statuses", records)
            assert status is expected, record
            if status is PeerStatus.TRUSTED:
                assert bytes.fromhex(ik or "") == clients.keyserver.identity_key(device) == _key(sdp[who])
    finally:
        for manager in mirrors.values():
            manager.close()
        clients.peer("hangup")
    return records


def _key(identity: SdpIdentity) -> bytes | None:
    return identity.ik


def test_sas_verdicts_give_the_lime_status_pylime_predicts(
    clients: Clients, transcript: Transcript, tmp_path: Path
) -> None:
    """verified → trusted; refused on an unknown device → nothing; refused after trust → untrusted."""
    records = _replay(clients, transcript, tmp_path, [
        ("alice", True), ("bob", False), ("bob", True), ("bob", False), ("alice", False),
    ], unsafe_if_sas_refused=False)
    assert [r["linphone_db"] for r in records] == ["TRUSTED", "UNKNOWN", "TRUSTED", "UNTRUSTED", "UNTRUSTED"]
    logs = clients.peer("log_grep", needle="SAS verified and Ik exchange successful")["lines"]
    assert len(logs) >= 2  # bzrtp reported the aux secret as MATCH on both sides


@pytest.mark.lime_options({"unsafe_if_sas_refused": 1})
def test_sas_verdicts_with_unsafe_if_sas_refused(
    clients: Clients, transcript: Transcript, tmp_path: Path
) -> None:
    """unsafe_if_sas_refused: refused → unsafe even for an unknown device; verified → trusted again."""
    records = _replay(clients, transcript, tmp_path, [
        ("bob", False), ("bob", True), ("bob", False), ("alice", True), ("alice", False),
    ], unsafe_if_sas_refused=True)
    assert [r["linphone_db"] for r in records] == ["UNSAFE", "TRUSTED", "UNSAFE", "TRUSTED", "UNSAFE"]


def test_a_swapped_a_ik_is_caught_by_the_aux_secret_and_a_verified_sas_marks_the_peer_unsafe(
    clients: Clients, transcript: Transcript, tmp_path: Path
) -> None:
    """A proxy swapping alice's a=Ik: each side's DHPart shows a mismatch; SAS verified → unsafe, as pylime says."""
    fake = os.urandom(32)

    def swap_alice_ik(body: bytes, offer: bool) -> bytes:
        if not offer:
            return body
        return re.sub(rb"^a=Ik:[A-Za-z0-9+/=]+", b"a=Ik:" + base64.b64encode(fake), body, flags=re.MULTILINE)

    clients.proxy.sdp_filter = swap_alice_ik
    info = call(clients, transcript)
    offer, answer = sip_bodies(clients.proxy)  # as the clients sent them
    alice_sdp, bob_sdp = parse_sdp_identity(offer), parse_sdp_identity(answer)
    seen_by_bob = SdpIdentity(None, fake)
    assert info["bob"]["remote_ik"]["Ik"] == base64.b64encode(fake).decode()
    assert info["alice"]["sas"] == info["bob"]["sas"]  # the DH is untouched: only the identity lies

    alice_secret = aux_secret(alice_sdp, bob_sdp, outgoing=True)
    bob_secret = aux_secret(bob_sdp, seen_by_bob, outgoing=False)
    assert alice_secret is not None and bob_secret is not None
    with_alice = {leg: status for leg, _, status in zrtp_checks(clients.proxy, alice_secret)}
    with_bob = {leg: status for leg, _, status in zrtp_checks(clients.proxy, bob_secret)}
    transcript.add("aux_secret_checks", {"alice_secret": {k: v.name for k, v in with_alice.items()},
                                         "bob_secret": {k: v.name for k, v in with_bob.items()}})
    # Each DHPart carries its sender's own secret: pylime predicts both, and each side sees a mismatch.
    assert with_alice == {"caller": AuxSecretStatus.MATCH, "callee": AuxSecretStatus.MISMATCH}
    assert with_bob == {"caller": AuxSecretStatus.MISMATCH, "callee": AuxSecretStatus.MATCH}

    mirrors = {"alice": mirror(tmp_path, "alice"), "bob": mirror(tmp_path, "bob")}
    records = []
    try:
        for who, peer_sdp in (("bob", seen_by_bob), ("alice", bob_sdp)):
            peer_contact = info[who]["remote_contact"]
            expected = apply_sas_verdict(mirrors[who], peer_contact, verified=True,
                                         aux_status=AuxSecretStatus.MISMATCH, peer_keys=peer_sdp)
            status, ik = verify_and_read(clients, who, True, normalize_device_id(peer_contact), expected)
            records.append({"side": who, "pylime": expected.name, "linphone_db": status.name, "ik": ik})
            transcript.add("lime_statuses", records)
            assert status is expected is PeerStatus.UNSAFE
    finally:
        for manager in mirrors.values():
            manager.close()
        clients.peer("hangup")
    lines = clients.peer("log_grep", needle="SAS is verified but the auxiliary secret mismatches")["lines"]
    assert len(lines) == 2


def test_a_second_call_finds_the_sas_verified_in_the_zrtp_cache_and_trust_kept(
    clients: Clients, transcript: Transcript
) -> None:
    """After both sides verified, the next call is verified from the ZRTP cache; lime keeps both trusted."""
    first = call(clients, transcript)
    assert not first["alice"]["sas_verified"] and not first["bob"]["sas_verified"]
    for who in ("alice", "bob"):
        device = normalize_device_id(first[who]["remote_contact"])
        assert verify_and_read(clients, who, True, device, PeerStatus.TRUSTED)[0] is PeerStatus.TRUSTED
    dbs = clients.lime_dbs()
    clients.peer("hangup")
    clients.proxy.zrtp.clear()
    second = clients.peer("call", caller="alice", callee="bob",
                          target=clients.proxy.binding_for("bob").gruu, timeout=30)  # type: ignore[union-attr]
    transcript.add("second_call", second)
    assert second["alice"]["sas_verified"] and second["bob"]["sas_verified"]
    assert second["alice"]["sas"] != first["alice"]["sas"]  # a new key agreement, remembered trust
    after = clients.lime_dbs()
    transcript.add("lime", {"after_first_call": dbs, "after_second_call": after})
    for side in ("alice", "bob"):
        assert [p["status"] for p in after[side]["peers"]] == [int(PeerStatus.TRUSTED)]
        assert after[side]["peers"] == dbs[side]["peers"]
    clients.peer("hangup")
