"""An echo bot on a Linphone service: answers every encrypted message in its rooms.

    PYLIME_SIP_PASSWORD=... python echo_bot.py sip:bot@example.org \
        "sip:example.org;transport=tls" https://lime.example.org/lime-server
"""

import asyncio
import os
import sys

from pylime import open_manager
from pylime.sip import Agent, AgentConfig, MessageReceived
from pylime.transport import HttpsTransport


async def main(aor: str, proxy: str, keyserver: str) -> None:
    ca_file = os.environ.get("PYLIME_CA_FILE")  # None: the system trust store
    config = AgentConfig(aor=aor, proxy=proxy, keyserver_url=keyserver, store_path="bot.sip.sqlite3",
                         password=os.environ.get("PYLIME_SIP_PASSWORD"), ca_file=ca_file)
    with HttpsTransport(ca_file=ca_file) as https, open_manager("bot.lime.sqlite3", https) as lime:
        async with Agent(config, lime) as agent:
            print("registered as", agent.device_id, flush=True)
            async for event in agent.events():
                if isinstance(event, MessageReceived) and event.content_type == "text/plain":
                    await agent.mark_displayed(event)
                    await agent.send(event.room, f"echo: {event.text}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
