"""Byte-level: every message liblime emits parses and re-serialises to the identical bytes."""

from __future__ import annotations

import sqlite3
from typing import Any

from pylime.reference import encoding
from pylime.types import Curve, Policy

from .conftest import Net


class Recorder:
    """A transport that forwards to the key server and keeps every request and answer."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.exchanges: list[tuple[bytes, bytes]] = []

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        status, answer = self.server.post(url, sender, body)
        self.exchanges.append((bytes(body), bytes(answer)))
        return status, answer


def _sizes(curve: Curve) -> tuple[int, int, int]:
    return (32, 32, 64) if curve == Curve.C25519 else (56, 57, 114)


def test_every_liblime_message_round_trips(net: Net) -> None:
    """Key-server requests/answers and DR messages from liblime parse then serialise identically."""
    rec = Recorder(net.server)
    original, net.server = net.server, rec  # type: ignore[assignment]
    try:
        a = net.dev("alice", "lime", opk_batch=2)
        b = net.dev("bob", "lime", opk_batch=1)
        c = net.dev("carol", "ref", opk_batch=0)
    finally:
        net.server = original
    for d in (a, b):
        d.manager.close()
        d.reopen("lime", rec)
    messages: list[bytes] = []
    for policy in Policy:
        out = a.send("sip:room@example.org", [b, c], b"m" * 100, policy)
        messages += [r.dr_message for r in out.recipients]
        if out.cipher_message:
            ct, tag = encoding.parse_cipher_message(out.cipher_message)
            assert ct + tag == out.cipher_message
    out = a.send(b.user, [b, c] + [type(b)("sip:ghost@example.org;gr=x", "", "", None, b.path)],
                 b"partly")
    assert out.recipients[2].status == 3
    assert b.open(b.user, a, out).plaintext == b"partly"
    reply = b.send(a.user, [a], b"back", Policy.CIPHER_MESSAGE)
    messages.append(reply.recipients[0].dr_message)
    with sqlite3.connect(b.path) as db:
        db.execute("UPDATE X3DH_SPK SET timeStamp = datetime(timeStamp, '-9 day')")
    b.manager.update(opk_low_limit=3, opk_batch=2)
    a.manager.delete_user(a.device_id)

    kinds = set()
    x, e, s = _sizes(net.curve)
    for request, answer in rec.exchanges:
        req = encoding.parse_request(request)
        assert req.to_bytes() == request
        resp = encoding.parse_response(answer)
        assert resp.to_bytes() == answer
        kinds.add(type(req).__name__)
        kinds.add(type(resp).__name__)
        if isinstance(req, encoding.RegisterUser):
            assert len(request) == 3 + e + x + s + 4 + 2 + len(req.opks) * (x + 4)
        if isinstance(resp, encoding.PeerBundle):
            kinds.update(f"flag{bd.flag}" for bd in resp.bundles)
    assert {"RegisterUser", "GetPeerBundle", "PeerBundle", "GetSelfOPks", "SelfOPks",
            "PostOPks", "PostSPk", "DeleteUser", "Ack", "flag0", "flag1", "flag2"} <= kinds
    headers = set()
    for m in messages:
        parsed = encoding.parse_dr_message(m, net.curve)
        assert parsed.to_bytes() == m
        headers.add((parsed.header.x3dh_init is not None, parsed.header.payload_direct))
        if parsed.header.x3dh_init is not None:
            init = parsed.header.x3dh_init
            assert init.to_bytes() == m[3:3 + len(init.to_bytes())]
    assert headers == {(True, True), (True, False), (False, False)}


def test_parse_keeps_bytes_lime_ignores(net: Net) -> None:
    """Unused type bits and odd OPk-flag values survive a round trip (lime ignores them)."""
    a, b = net.dev("alice", "lime"), net.dev("bob", "ref")
    dr = a.send(b.user, [b], b"x", Policy.DR_MESSAGE).recipients[0].dr_message
    odd = dr[:1] + bytes([dr[1] | 0xF0]) + dr[2:]
    assert encoding.parse_dr_message(odd, net.curve).to_bytes() == odd
    header, size = encoding.parse_dr_header(dr, net.curve)
    assert header.to_bytes() == dr[:size]
    assert header.x3dh_init is not None and header.x3dh_init.opk_id is not None
