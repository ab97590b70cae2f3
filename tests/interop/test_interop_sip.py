"""pylime.sip agents against real liblinphone 5.1.65 clients through a conference-server core (issue 13).

The agents are the product (pylime.sip.Agent: REGISTER, GRUU, lime user on the first 200,
room INVITE/SUBSCRIBE/NOTIFY, encrypted MESSAGE, IMDN) — not test scaffolding: each runs on
its own loop (tests/interop/agents.py) against the same registrar/proxy and conference-server
core as test_interop_chat.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylime.linphone.imdn import ImdnStatus
from pylime.sip import ImdnReceived, MessageReceived, RoomJoined, RoomUpdated
from tests.interop.accounts import FACTORY, registry, start_clients, start_focus
from tests.interop.agents import AgentThread, agent_config
from tests.interop.harness import PeerProcess, RecordingKeyServer, Transcript
from tests.interop.sipproxy import SipProxy

DELIVERED, DELIVERED_TO_USER, DISPLAYED = 2, 6, 7  # LinphoneChatMessageState


@pytest.fixture
def make_agent(proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any], tls_cert: tuple[Path, Path],
               tmp_path: Path) -> Iterator[Any]:
    """A factory of started agents on the test's proxy and key server, closed after the test."""
    agents: list[AgentThread] = []

    def make(user: str, **kw: Any) -> AgentThread:
        config = agent_config(user, proxy.port, keyserver[1].port, tmp_path, **kw)
        agent = AgentThread(config, tls_cert[0], tmp_path / f"{user}.lime.sqlite3")
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.close()


def _record(transcript: Transcript, peer: PeerProcess, proxy: SipProxy, keyserver: RecordingKeyServer,
            agents: list[AgentThread]) -> None:
    transcript.add("sip", proxy.transcript)
    transcript.add("keyserver", keyserver.log)
    transcript.add("agent_events", {a.config.aor: [e.to_json() for e in a.events] for a in agents})
    transcript.add("conference_server", peer("server_log"))
    peer.close()  # before the key server stops


def test_agent_exchanges_messages_and_imdns_with_a_real_client_in_a_room(
    peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
    tls_cert: tuple[Path, Path], make_agent: Any, transcript: Transcript,
) -> None:
    """alice (5.1.65) ↔ carol (pylime.sip): messages both ways, delivered and displayed IMDNs both ways."""
    start_focus(peer, proxy)
    clients = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice"],
                            account={"conference_factory_uri": FACTORY})
    carol = make_agent("carol")
    alice_id = clients.device_id("alice")
    assert carol.device_id in keyserver[0].device_ids()  # lime user created on REGISTER 200
    try:
        peer("set_registry", registry=registry(proxy))
        room = peer("create_room", name="alice", participants=["sip:carol@localhost"])
        (joined,) = carol.wait_for(RoomJoined)
        assert joined.room == room["address"]
        carol.wait_for(RoomUpdated, where=lambda e: alice_id in e.devices)

        peer("send_text", name="alice", text="Hello carol, from liblinphone 5.1.65", settle=0.3)
        (msg,) = carol.wait_for(MessageReceived)
        assert (msg.text, msg.sender, msg.room) == ("Hello carol, from liblinphone 5.1.65", alice_id,
                                                   room["address"])
        # carol's agent sent the delivered IMDN: alice's message reaches Delivered-to-user.
        _wait_state(peer, 0, DELIVERED_TO_USER)
        carol.call(carol.agent.mark_displayed(msg))
        _wait_state(peer, 0, DISPLAYED)

        sent = carol.call(carol.agent.send(room["address"], "Hi alice, pylime.sip here"))
        (shown,) = peer("messages", name="alice", count=1, timeout=15)["messages"]
        assert (shown["text"], shown["sender"]) == ("Hi alice, pylime.sip here", carol.device_id)
        (delivered,) = carol.wait_for(ImdnReceived, where=lambda e: e.status is ImdnStatus.DELIVERED)
        assert (delivered.message_id, delivered.sender) == (sent.message_id, alice_id)
        peer("mark_read", name="alice")
        (displayed,) = carol.wait_for(ImdnReceived, where=lambda e: e.status is ImdnStatus.DISPLAYED)
        assert displayed.message_id == sent.message_id
    finally:
        _record(transcript, peer, proxy, keyserver[0], [carol])


def _wait_state(peer: PeerProcess, index: int, state: int, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        states = peer("message_states")["states"]
        if states[index] == state:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"message {index} is in state {states[index]}, not {state}")
        time.sleep(0.05)
