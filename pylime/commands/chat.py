"""``pylime chat``: a Linphone-compatible device on the command line (pylime.sip's Agent).

``chat listen`` registers and prints every event (``--json``: one JSON object per line, the
shape of :meth:`pylime.sip.Event.to_json`) until interrupted; ``chat send`` registers, sends
one message into a room (or creates a room with ``--to``) and exits once the room said 200.
The lime database is ``--db``; the agent's own state (instance id, rooms, inbox) sits beside
it in ``--state`` (default ``<db>.sip``). The SIP password is read from ``PYLIME_SIP_PASSWORD``,
never from the command line; the key server's account from the usual ``--credentials`` /
``PYLIME_USERNAME`` / ``PYLIME_PASSWORD``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from pylime.commands.common import Settings, emit, lime_command, transport_for

__all__ = ["chat"]

SIP_PASSWORD_ENV = "PYLIME_SIP_PASSWORD"


@click.group()
def chat() -> None:
    """Encrypted chat over SIP with Linphone devices (register, rooms, messages, IMDNs)."""


def _sip_options(func: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option("--aor", required=True, envvar="PYLIME_SIP_AOR", metavar="SIP-URI",
                     help="The SIP account, sip:user@domain [env PYLIME_SIP_AOR]."),
        click.option("--proxy", required=True, envvar="PYLIME_SIP_PROXY", metavar="URI",
                     help="Outbound proxy: sip:host:port;transport=udp|tcp|tls [env PYLIME_SIP_PROXY]."),
        click.option("--state", default=None, metavar="PATH",
                     help="The agent's own SQLite file [default: <db>.sip]."),
        click.option("--factory", default=None, metavar="SIP-URI",
                     help="Conference factory URI, to create rooms."),
        click.option("--sip-ca-file", default=None, type=click.Path(dir_okay=False), metavar="PEM",
                     help="Trust this certificate for the proxy's TLS [default: --ca-file]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _agent(settings: Settings, aor: str, proxy: str, state: str | None, factory: str | None,
           sip_ca_file: str | None) -> Any:
    from pylime.sip import Agent, AgentConfig

    if settings.server is None:
        raise click.UsageError("--server (the lime key server URL) is required")
    config = AgentConfig(aor=aor, proxy=proxy, keyserver_url=settings.server,
                         store_path=state or f"{settings.db}.sip",
                         password=os.environ.get(SIP_PASSWORD_ENV) or None, conference_factory=factory,
                         ca_file=sip_ca_file or settings.ca_file)

    def manager() -> Any:
        from pylime.backend import open_manager

        transport = transport_for(settings, None, redirect=False)
        lime = open_manager(settings.db, transport, backend="lime" if settings.backend == "lime" else "reference")
        return _Owned(lime, transport)

    return Agent(config, manager)


class _Owned:
    """A manager that closes its key-server transport with itself."""

    def __init__(self, manager: Any, transport: Any) -> None:
        self._manager, self._transport = manager, transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def close(self) -> None:
        """Close the manager, then the transport."""
        self._manager.close()
        self._transport.close()


def _line(event: Any, as_json: bool) -> str:
    data = event.to_json()
    if as_json:
        return json.dumps(data, sort_keys=True)
    kind = data.pop("event")
    return f"{kind}: " + " ".join(f"{k}={v}" for k, v in data.items())


@lime_command(chat, "listen", server_help="The lime key server URL (for the lime user created "
                                          "on the first registration).")
@_sip_options
@click.option("--echo", is_flag=True, help="Answer every text message with the same text.")
@click.option("--for", "duration", type=click.FloatRange(0), default=None, metavar="SECONDS",
              help="Stop after this long (default: until interrupted).")
def listen(settings: Settings, aor: str, proxy: str, state: str | None, factory: str | None,
           sip_ca_file: str | None, echo: bool, duration: float | None) -> None:
    """Register and print every event, one line each, until interrupted."""
    agent = _agent(settings, aor, proxy, state, factory, sip_ca_file)

    async def run() -> None:
        from pylime.sip import MessageReceived

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        async with agent:
            async def pump() -> None:
                async for event in agent.events():
                    sys.stdout.write(_line(event, settings.json) + "\n")
                    sys.stdout.flush()
                    if echo and isinstance(event, MessageReceived) and event.content_type == "text/plain":
                        with contextlib.suppress(Exception):
                            await agent.send(event.room, event.text)

            task = asyncio.create_task(pump())
            await stop.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(run())


@lime_command(chat, "send", server_help="The lime key server URL (for the lime user created "
                                        "on the first registration).")
@_sip_options
@click.option("--room", default=None, metavar="SIP-URI", help="A room this device is in.")
@click.option("--to", "to", multiple=True, metavar="SIP-URI",
              help="Create a room with these participants (repeatable) and send there.")
@click.option("--one-to-one", is_flag=True, help="With one --to: a one-to-one room.")
@click.argument("text")
def send(settings: Settings, aor: str, proxy: str, state: str | None, factory: str | None,
         sip_ca_file: str | None, room: str | None, to: tuple[str, ...], one_to_one: bool, text: str) -> None:
    """Send TEXT into a room (or a new one) and wait for the room's 200."""
    if (room is None) == (not to):
        raise click.UsageError("give --room or --to (not both)")
    agent = _agent(settings, aor, proxy, state, factory, sip_ca_file)

    async def run() -> dict[str, Any]:
        async with agent:
            if room is not None:
                address = room
                await agent.wait_room(room, devices=0)
            else:
                address = (await agent.create_room(list(to), one_to_one=one_to_one)).address
            sent = await agent.send(address, text)
            return {"room": sent.room, "message_id": sent.message_id,
                    "devices": list(sent.devices)}

    result = asyncio.run(run())
    emit(settings, result, f"sent {result['message_id']} to {result['room']} "
                           f"({len(result['devices'])} device(s))")
