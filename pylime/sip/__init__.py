"""An asyncio SIP user agent for Linphone's lime-encrypted chat: a Python device on a real SIP network.

:class:`Agent` registers an account (digest auth, ``+sip.instance``, the GRUU that becomes its
lime device id), creates its lime user on the first REGISTER 200, joins or creates chat rooms
on a conference server, and sends and receives lime-encrypted messages and IMDNs — over UDP,
TCP or TLS. See docs/sip.md for a walk-through and docs/echo_bot.py for a complete bot.

Layers, one job each, imported one way::

    message      sans-IO: parse, frame (Content-Length), serialise; quote-aware header views
    digest       RFC 2617/7616 answers to 401/407
    transport    UDP / TCP / TLS flows to the outbound proxy (asyncio)
    transaction  RFC 3261 §17: retransmissions, matching, duplicate absorption
    dialog       building requests as this UA, in and out of dialogs
    registration REGISTER, GRUU, refresh
    rooms        conference-info state of a chat room
    store        what survives a kill: instance id, rooms, the inbox
    agent        the application API wiring the above to pylime.linphone and a lime manager

**Why our own SIP message layer.** We looked for a well-kept PyPI library first (November
2026) and none fits a Linphone device:

- ``sipmessage`` (Spacinov, BSD-2, typed, the author of aiortc/aioquic): a clean parser, but
  it splits a quoted parameter at ``;`` — ``pub-gruu="sip:u@d;gr=urn:uuid:…"`` comes out as two
  parameters — and re-serialises URI parameters percent-encoded (``gr=urn%3Auuid%3A…``),
  which breaks device ids that Linphone compares as exact strings. No transactions, no digest.
- ``sipua`` (same author, on sipmessage): transactions and dialogs, but it imports aiortc
  (a media stack) at package level, has no TLS, and parses each TCP read as one message.
- ``aiosipua`` (MIT, zero deps, alpha): digest and REGISTER, but the same quoted-parameter
  split of ``pub-gruu``, no TLS and no retransmission of non-INVITE requests over UDP.
- ``sippy`` (BSD): a B2BUA with its own reactor (not asyncio) and Flask/pycryptodome deps;
  ``pyVoIP``/``rfcvoip``: threaded, voice-oriented; ``pjsua2``, ``baresip-python``: bindings
  of C stacks that need system packages; ``opensip``: UDP only.

So the message layer, digest, transactions and transports here are ours (standard library
only), written to RFC 3261/3581/5626/5627 and to what liblinphone 5.1.65 sends; everything
Linphone puts inside a MESSAGE body stays :mod:`pylime.linphone`'s.
"""

from __future__ import annotations

from pylime.sip.agent import Agent, AgentConfig, AgentManager, SentMessage
from pylime.sip.errors import (
    AgentClosedError,
    MessageTooLargeError,
    RegistrationError,
    SipError,
    SipParseError,
    SipRequestFailed,
    SipTimeoutError,
    SipTransportError,
    UnknownRoomError,
)
from pylime.sip.events import (
    Disconnected,
    Event,
    ImdnReceived,
    MessageReceived,
    Refusal,
    Registered,
    RequestRefused,
    RoomJoined,
    RoomLeft,
    RoomUpdated,
)
from pylime.sip.rooms import Room

__all__ = [
    "Agent",
    "AgentClosedError",
    "AgentConfig",
    "AgentManager",
    "Disconnected",
    "Event",
    "ImdnReceived",
    "MessageReceived",
    "MessageTooLargeError",
    "Refusal",
    "Registered",
    "RegistrationError",
    "RequestRefused",
    "Room",
    "RoomJoined",
    "RoomLeft",
    "RoomUpdated",
    "SentMessage",
    "SipError",
    "SipParseError",
    "SipRequestFailed",
    "SipTimeoutError",
    "SipTransportError",
    "UnknownRoomError",
]
