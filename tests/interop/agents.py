"""pylime.sip agents for the interop tests: each in its own thread and event loop, driven synchronously.

The tests drive liblinphone through blocking calls to its child process, so an agent cannot
share the test's thread: :class:`AgentThread` runs one :class:`~pylime.sip.Agent` on a loop of
its own, collects every event it yields, and offers blocking wrappers (``call``, ``wait_for``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pylime.sip import Agent, AgentConfig, Event, MessageReceived
from pylime.transport.https import HttpsTransport

try:
    from pylime.manager import Manager as DeviceManager
except ImportError:  # pragma: no cover - where _lime is not built
    from pylime.reference import ReferenceManager as DeviceManager  # type: ignore[assignment]

__all__ = ["AgentThread", "agent_config"]

T = TypeVar("T")
E = TypeVar("E", bound=Event)


def agent_config(user: str, proxy_port: int, keyserver_port: int, directory: Path, **kw: Any) -> AgentConfig:
    """An agent for ``sip:user@localhost`` on the test proxy, lime on our HTTPS key server."""
    return AgentConfig(aor=f"sip:{user}@localhost", proxy=f"sip:127.0.0.1:{proxy_port};transport=udp",
                       keyserver_url=f"https://localhost:{keyserver_port}/lime-server",
                       store_path=directory / f"{user}.sip.sqlite3", **kw)


class AgentThread:
    """One agent on its own loop in a daemon thread; every event is kept in ``events``."""

    def __init__(self, config: AgentConfig, ca_file: Path, lime_db: Path) -> None:
        self.config = config
        self.events: list[Event] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"agent-{config.aor}")
        self._thread.start()

        self._https = HttpsTransport(ca_file=ca_file)

        def manager() -> Any:
            return DeviceManager(lime_db, transport=self._https)

        self.agent = Agent(config, manager)
        self.call(self.agent.start(), 30)
        self._pump = asyncio.run_coroutine_threadsafe(self._collect(), self._loop)

    async def _collect(self) -> None:
        async for event in self.agent.events():
            self.events.append(event)

    @property
    def device_id(self) -> str:
        """The agent's GRUU."""
        assert self.agent.device_id is not None
        return self.agent.device_id

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        """Run a coroutine on the agent's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def wait_for(self, kind: type[E], count: int = 1, timeout: float = 15.0,
                 where: Callable[[E], bool] = lambda e: True) -> list[E]:
        """The first ``count`` events of ``kind`` (matching ``where``), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in list(self.events) if isinstance(e, kind) and where(e)]
            if len(got) >= count:
                return got[:count]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.config.aor}: {len(got)} of {count} {kind.__name__} in {timeout} s")
            time.sleep(0.02)

    def texts(self) -> list[str]:
        """The text of every message received so far."""
        return [e.text for e in list(self.events) if isinstance(e, MessageReceived)]

    def close(self) -> None:
        """Close the agent and stop its loop."""
        try:
            self.call(self.agent.close(), 20)
        finally:
            self._https.close()  # its kept-alive connection would hold the key server's shutdown
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
