"""pylime.sip agents on loopback: our registrar/proxy and key server, no liblinphone needed.

Two agents talk directly (pylime to pylime) over UDP, TCP and TLS, through a registrar that
challenges with Digest; hostile input gets a clear answer and a typed event, and the agent
keeps working.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylime.keyserver import KeyServer
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.service import ServerThread
from pylime.keyserver.tls import generate_self_signed
from pylime.linphone.envelope import Envelope, KeyPart, build_envelope
from pylime.sip import MessageReceived, Refusal, Registered, RegistrationError, RequestRefused
from pylime.types import Curve
from tests.interop.agents import AgentThread, agent_config
from tests.interop.sipproxy import SipProxy, _status_line_of

ACCOUNTS = {"carol": "carol-secret", "dave": "dave-secret"}


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (key server and proxy TLS)."""
    directory = tmp_path_factory.mktemp("sip-tls")
    c, k = directory / "cert.pem", directory / "key.pem"
    generate_self_signed(c, k, ("localhost", "127.0.0.1"))
    return c, k


@pytest.fixture
def keyserver(tmp_path: Path, cert: tuple[Path, Path]) -> Iterator[tuple[KeyServer, ServerThread]]:
    """pylime's key server on 127.0.0.1 (HTTPS, port 0)."""
    server = KeyServer(tmp_path / "keys.sqlite3")
    try:
        with ServerThread(ServerConfig(open=True), server=server, cert=cert[0], key=cert[1]) as thread:
            yield server, thread
    finally:
        server.close()


def _start(proxy: SipProxy, keyserver: Any, cert: tuple[Path, Path], tmp_path: Path, user: str,
           transport: str = "udp", **kw: Any) -> AgentThread:
    port = proxy.tls_port if transport == "tls" else proxy.port
    config = agent_config(user, port, keyserver[1].port, tmp_path, password=ACCOUNTS.get(user), **kw)
    config.proxy = f"sip:127.0.0.1:{port};transport={transport}"
    config.ca_file = cert[0]
    config.tls_server_name = "localhost"
    return AgentThread(config, cert[0], tmp_path / f"{user}.lime.sqlite3")


@pytest.mark.parametrize(("transport", "proxy_auth"), [("udp", False), ("udp", True), ("tcp", False), ("tls", False)],
                         ids=["udp-401", "udp-407", "tcp-401", "tls-401"])
def test_two_agents_register_with_digest_and_exchange_messages(
    transport: str, proxy_auth: bool, keyserver: Any, cert: tuple[Path, Path], tmp_path: Path,
) -> None:
    """REGISTER answers 401/407, the GRUU becomes the lime device id, messages go both ways."""
    with SipProxy("localhost", tls=(str(cert[0]), str(cert[1])), accounts=ACCOUNTS, proxy_auth=proxy_auth) as proxy:
        carol = _start(proxy, keyserver, cert, tmp_path, "carol", transport)
        dave = _start(proxy, keyserver, cert, tmp_path, "dave", transport)
        try:
            assert carol.device_id.startswith("sip:carol@localhost;gr=urn:uuid:")
            assert keyserver[0].storage.opk_ids(Curve.C25519, carol.device_id)  # lime user on the first 200
            carol.call(carol.agent.send_direct(dave.device_id, f"hello over {transport}"))
            (msg,) = dave.wait_for(MessageReceived)
            assert (msg.text, msg.sender) == (f"hello over {transport}", carol.device_id)
            dave.call(dave.agent.send_direct(carol.device_id, "and back"))
            assert carol.wait_for(MessageReceived)[0].text == "and back"
        finally:
            carol.close()
            dave.close()


def test_a_wrong_password_is_a_registration_error(keyserver: Any, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """The registrar refusing our digest answer fails start() with RegistrationError (403)."""
    with SipProxy("localhost", accounts={"carol": "other"}) as proxy, \
            pytest.raises(RegistrationError) as info:
        _start(proxy, keyserver, cert, tmp_path, "carol")
    assert info.value.status == 403


def test_registration_is_refreshed_before_it_expires(keyserver: Any, cert: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    """With a 2 s lifetime the agent registers again by itself, keeping its GRUU."""
    with SipProxy("localhost") as proxy:
        carol = _start(proxy, keyserver, cert, tmp_path, "carol", expires=2)
        try:
            events = carol.wait_for(Registered, 3, timeout=10)
            assert {e.device_id for e in events} == {carol.device_id}
        finally:
            carol.close()


def _udp(port: int, data: bytes, timeout: float = 3.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recvfrom(65536)[0]
        except TimeoutError:
            return None


def _message(to: str, sender: str, body: bytes, headers: dict[str, str], via_port: int = 9) -> bytes:
    lines = [f"MESSAGE {to} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{uuid.uuid4().hex};rport",
             f"From: <{sender}>;tag=x1", f"To: <{to}>", f"Call-ID: {uuid.uuid4().hex}", "CSeq: 1 MESSAGE",
             "Max-Forwards: 70", *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_hostile_requests_get_clear_answers_and_typed_events(keyserver: Any, cert: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """Malformed, oversized, untrusted, unknown-room and spoofed requests: 400/413/403/488, events, still up."""
    with SipProxy("localhost") as proxy:
        carol = _start(proxy, keyserver, cert, tmp_path, "carol", max_body=4000)
        dave = _start(proxy, keyserver, cert, tmp_path, "dave")
        try:
            port = carol.agent.transport.local[1]  # type: ignore[union-attr]
            # 1. From anyone but the proxy: 403, before anything else is looked at.
            answer = _udp(port, _message(carol.device_id, dave.device_id, b"x", {"Content-Type": "text/plain"}))
            assert answer is not None and _status_line_of(answer) == 403
            # The rest arrive from a trusted source (the test stands in for the proxy).
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                probe.settimeout(3)
                carol.agent._trusted.add(probe.getsockname())
                probe_port = probe.getsockname()[1]

                def ask(data: bytes) -> int | None:
                    probe.sendto(data, ("127.0.0.1", port))
                    try:
                        return _status_line_of(probe.recvfrom(65536)[0])
                    except TimeoutError:
                        return None

                # 2. Malformed: a header without a colon (answerable: 400).
                bad = _message(carol.device_id, dave.device_id, b"", {}, probe_port).replace(
                    b"Max-Forwards: 70", b"Max-Forwards 70")
                assert ask(bad) == 400
                # 3. Unanswerable garbage: dropped, still an event.
                probe.sendto(b"\x00\xffnot sip at all\r\n\r\n", ("127.0.0.1", port))
                # 4. Oversized body: 413.
                big = _message(carol.device_id, dave.device_id, b"A" * 5000,
                               {"Content-Type": "multipart/encrypted"}, probe_port)
                assert ask(big) == 413
                # 5. Session-mode message from a room we are not in: 488.
                room = "sip:chatroom-nobody@localhost;gr=urn:uuid:5e4ee4e4-0000-4000-8000-000000000009"
                assert ask(_message(carol.device_id, room, b"x", {"Content-Type": "multipart/encrypted",
                                                                   "Session-mode": "true"}, probe_port)) == 488
                # 6. Spoofed: the envelope says dave, the SIP From says someone else.
                body = build_envelope(Envelope(dave.device_id, "spoof-0001",
                                               (KeyPart(carol.device_id, b"\x01" * 40),), b"\x02" * 40))
                liar = "sip:mallory@localhost;gr=urn:uuid:00000000-0000-4000-8000-000000000666"
                assert ask(_message(carol.device_id, liar, body.body, body.headers, probe_port)) == 488
                # 7. Undecryptable: right sender, garbage key part.
                assert ask(_message(carol.device_id, dave.device_id, body.body, body.headers, probe_port)) == 488
            reasons = [e.reason for e in carol.wait_for(RequestRefused, 7, timeout=5)]
            assert reasons == [Refusal.UNTRUSTED_SOURCE, Refusal.MALFORMED, Refusal.MALFORMED, Refusal.TOO_LARGE,
                               Refusal.UNKNOWN_ROOM, Refusal.SPOOFED_SENDER, Refusal.UNDECRYPTABLE]
            # Still up: a genuine message goes through.
            dave.call(dave.agent.send_direct(carol.device_id, "still there?"))
            assert carol.wait_for(MessageReceived)[0].text == "still there?"
        finally:
            carol.close()
            dave.close()


def test_a_retransmitted_message_is_answered_again_and_handed_over_once(
    keyserver: Any, cert: tuple[Path, Path], tmp_path: Path,
) -> None:
    """The same MESSAGE (same transaction) sent three times: three 200s, one event."""
    with SipProxy("localhost") as proxy:
        carol = _start(proxy, keyserver, cert, tmp_path, "carol")
        dave = _start(proxy, keyserver, cert, tmp_path, "dave")
        try:
            from pylime.linphone import encrypt_message

            out = dave.call(dave.agent._run(encrypt_message, dave.agent.manager, dave.device_id,
                                            carol.device_id, [carol.device_id], "once"))
            port = carol.agent.transport.local[1]  # type: ignore[union-attr]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                probe.settimeout(3)
                carol.agent._trusted.add(probe.getsockname())
                data = _message(carol.device_id, dave.device_id, out.body.body, out.headers,
                                probe.getsockname()[1])
                codes = []
                for _ in range(3):
                    probe.sendto(data, ("127.0.0.1", port))
                    codes.append(_status_line_of(probe.recvfrom(65536)[0]))
                    time.sleep(0.1)
            assert codes == [200, 200, 200]
            time.sleep(0.3)
            assert [e.text for e in carol.events if isinstance(e, MessageReceived)] == ["once"]
        finally:
            carol.close()
            dave.close()
