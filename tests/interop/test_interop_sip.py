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


def test_two_real_clients_and_two_agents_in_one_room(
    peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
    tls_cert: tuple[Path, Path], make_agent: Any, transcript: Transcript,
) -> None:
    """alice, bob (5.1.65) and carol, dave (pylime.sip): every message reaches and decrypts on every other device."""
    start_focus(peer, proxy)
    clients = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice", "bob"],
                            account={"conference_factory_uri": FACTORY})
    carol, dave = make_agent("carol"), make_agent("dave")
    alice_id, bob_id = clients.device_id("alice"), clients.device_id("bob")
    try:
        peer("set_registry", registry=registry(proxy))
        room = peer("create_room", name="alice",
                    participants=["sip:bob@localhost", "sip:carol@localhost", "sip:dave@localhost"])["address"]
        for agent in (carol, dave):
            agent.call(agent.agent.wait_room(room, devices=3))

        peer("send_text", name="alice", text="Hello everyone", settle=0.3)
        for agent in (carol, dave):
            (msg,) = agent.wait_for(MessageReceived)
            assert (msg.text, msg.sender) == ("Hello everyone", alice_id)
        sent = carol.call(carol.agent.send(room, "carol to the room"))
        assert sorted(sent.devices) == sorted([alice_id, bob_id, dave.device_id])
        for name, count in (("alice", 1), ("bob", 2)):
            got = peer("messages", name=name, count=count, timeout=15)["messages"]
            assert (got[-1]["text"], got[-1]["sender"]) == ("carol to the room", carol.device_id)
        assert [m.text for m in dave.wait_for(MessageReceived, 2)] == ["Hello everyone", "carol to the room"]
        dave.call(dave.agent.send(room, "dave agrees"))
        peer("send_text", name="bob", text="bob too", settle=0.3)
        assert [m.text for m in carol.wait_for(MessageReceived, 3)] == ["Hello everyone", "dave agrees", "bob too"]
        for name in ("alice", "bob"):
            texts = [m["text"] for m in peer("messages", name=name, count=3, timeout=15)["messages"]]
            assert "dave agrees" in texts
        # Everyone's delivered IMDN for carol's message reaches carol (three devices).
        imdns = carol.wait_for(ImdnReceived, 3, where=lambda e: e.message_id == sent.message_id
                               and e.status is ImdnStatus.DELIVERED)
        assert sorted(e.sender for e in imdns) == sorted([alice_id, bob_id, dave.device_id])
    finally:
        _record(transcript, peer, proxy, keyserver[0], [carol, dave])


def test_agent_creates_a_one_to_one_room_and_a_burst_of_100_arrives_in_order_both_ways(
    peer: PeerProcess, proxy: SipProxy, keyserver: tuple[RecordingKeyServer, Any],
    tls_cert: tuple[Path, Path], make_agent: Any, transcript: Transcript,
) -> None:
    """carol's agent creates a one-to-one room with alice through the factory; 100 messages each way, in order, once."""
    # The real cores talk TCP to the proxy: a burst over UDP between cores sharing one process
    # overflows their socket buffers, and UDP retransmissions would reorder (not lose) messages.
    start_focus(peer, proxy, transport="tcp")
    clients = start_clients(peer, proxy, keyserver, tls_cert[0], ["alice"],
                            account={"conference_factory_uri": FACTORY}, transport="tcp")
    carol = make_agent("carol", conference_factory=FACTORY)
    alice_id = clients.device_id("alice")
    try:
        peer("set_registry", registry=registry(proxy))
        room = carol.call(carol.agent.create_room(["sip:alice@localhost"], one_to_one=True, subject="1-1"), 30)
        assert room.one_to_one and room.recipients(carol.device_id) == [alice_id]
        carol.call(carol.agent.send(room.address, "hello alice, one to one"))
        (first,) = peer("messages", name="alice", count=1, timeout=15)["messages"]
        assert (first["text"], first["sender"], first["room"]) == ("hello alice, one to one", carol.device_id,
                                                                   room.address)
        peer("send_texts", name="alice", texts=[f"burst {i:03d}" for i in range(100)], settle=0.2)
        got = carol.wait_for(MessageReceived, 100, timeout=60)
        assert [m.text for m in got] == [f"burst {i:03d}" for i in range(100)]
        assert [m.seq for m in got] == sorted({m.seq for m in got})
        for i in range(100):
            carol.call(carol.agent.send(room.address, f"reply {i:03d}"))
        shown = peer("messages", name="alice", count=101, timeout=60)["messages"]
        assert [m["text"] for m in shown[1:]] == [f"reply {i:03d}" for i in range(100)]
    finally:
        _record(transcript, peer, proxy, keyserver[0], [carol])
