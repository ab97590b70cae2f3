"""Key-server transports over HTTPS (httpx): blocking and asyncio, with HTTP Digest auth.

Each request is ``POST <url>`` with ``Content-Type: x3dh/octet-stream`` and the device id in
both ``From`` (what lime 5.1.64-era servers read) and ``X-Lime-user-identity`` (what newer
servers prefer). Connections are kept alive and reused. TLS is verified against a pinned CA
file, or the system's trust store. Any failure to get an HTTP answer raises
:class:`~pylime.errors.TransportError`, chained to the httpx exception; an HTTP answer, even
401 or 500, is returned as is for lime to judge.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from types import TracebackType

import httpx

from pylime.errors import TransportError

__all__ = ["DEFAULT_TIMEOUT", "AsyncHttpsTransport", "HttpsTransport"]

DEFAULT_TIMEOUT = 10.0
_USER_AGENT = "pylime (Lime)"
_CONTENT_TYPE = "x3dh/octet-stream"


def _ssl_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """Verify against the pinned CA file when given, else the system trust store."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=os.fspath(ca_file))
    return ssl.create_default_context()


def _headers(sender: str) -> dict[bytes, bytes]:
    # As bytes: a device id is UTF-8 on the wire (as lime puts it in request bodies), and
    # httpx would refuse a non-ASCII str header value.
    value = sender.encode("utf-8", "surrogateescape")
    return {
        b"Content-Type": _CONTENT_TYPE.encode(),
        b"From": value,
        b"X-Lime-user-identity": value,
    }


# What "no HTTP answer" looks like from httpx: DNS, refused, TLS, timeout, closed client.
_NO_ANSWER = (httpx.HTTPError, httpx.InvalidURL, RuntimeError, ssl.SSLError, OSError)


def _unreachable(url: str, exc: BaseException) -> TransportError:
    return TransportError(f"key server {_where(url)} unreachable: {type(exc).__name__}")


def _where(url: str) -> str:
    """The URL without user info, for error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<invalid url>"


class _Base:
    def __init__(
        self,
        ca_file: str | os.PathLike[str] | None,
        username: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.ca_file = None if ca_file is None else os.fspath(ca_file)
        self.username = username
        self.timeout = timeout
        self._auth: httpx.Auth | None = None
        if username is not None and password is not None:
            self._auth = httpx.DigestAuth(username, password)
        self._verify = _ssl_context(ca_file)

    def _client_options(self) -> dict[str, object]:
        """What both clients share: auth, timeout, user agent, no redirects."""
        return {"auth": self._auth, "timeout": httpx.Timeout(self.timeout),
                "headers": {"User-Agent": _USER_AGENT}, "follow_redirects": False}

    def __repr__(self) -> str:
        user = f", username={self.username!r}" if self.username else ""
        return f"{type(self).__name__}(ca_file={self.ca_file!r}{user}, timeout={self.timeout})"


class HttpsTransport(_Base):
    """Blocking HTTPS transport for :class:`pylime.manager.Manager`.

    Args:
        ca_file: PEM file of the CA (or self-signed certificate) to trust; None for the
            system trust store.
        username / password: HTTP Digest credentials (the SIP account's), or None.
        timeout: seconds for connecting and for each read/write.
    """

    def __init__(
        self,
        ca_file: str | os.PathLike[str] | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(ca_file, username, password, timeout)
        # retries=1 reconnects once when a kept-alive connection turns out to be closed.
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(verify=self._verify, retries=1),
            **self._client_options(),  # type: ignore[arg-type]
        )

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Send one X3DH request; return (HTTP status, body).

        Raises:
            TransportError: no HTTP answer (DNS, refused, TLS, timeout, closed client).
        """
        try:
            response = self._client.post(url, content=bytes(body), headers=_headers(sender))
            return response.status_code, response.content
        except _NO_ANSWER as exc:
            raise _unreachable(url, exc) from exc

    def close(self) -> None:
        """Close the kept-alive connections; idempotent."""
        self._client.close()

    def __enter__(self) -> HttpsTransport:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncHttpsTransport(_Base):
    """asyncio HTTPS transport: the same as :class:`HttpsTransport` with ``async def post``."""

    def __init__(
        self,
        ca_file: str | os.PathLike[str] | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(ca_file, username, password, timeout)
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(verify=self._verify, retries=1),
            **self._client_options(),  # type: ignore[arg-type]
        )

    async def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Send one X3DH request; return (HTTP status, body).

        Raises:
            TransportError: no HTTP answer (DNS, refused, TLS, timeout, closed client).
        """
        try:
            response = await self._client.post(url, content=bytes(body), headers=_headers(sender))
            return response.status_code, response.content
        except _NO_ANSWER as exc:
            raise _unreachable(url, exc) from exc

    async def aclose(self) -> None:
        """Close the kept-alive connections; idempotent."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncHttpsTransport:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
