"""How key-server requests travel.

A transport is any object with ``post(url, sender, body) -> (http_status, body)``. lime hands
the request over; the transport delivers it and returns the answer. Raising an exception means
"could not reach the server": the Manager answers lime with status 0 and raises
:class:`~pylime.errors.TransportError` from the operation, chained to it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pylime.transport.https import AsyncHttpsTransport, HttpsTransport

__all__ = ["AsyncHttpsTransport", "HttpsTransport", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """The one method a key-server transport needs."""

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Send one X3DH request for device ``sender`` to ``url``; return (HTTP status, body)."""
        ...


@runtime_checkable
class AsyncTransport(Protocol):
    """The asyncio form, for :class:`pylime.AsyncManager`."""

    async def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Send one X3DH request for device ``sender`` to ``url``; return (HTTP status, body)."""
        ...
