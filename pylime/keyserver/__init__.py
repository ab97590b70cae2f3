"""lime's X3DH key-server protocol as a service: the sans-IO core and its storage backends.

::

    from pylime.keyserver import KeyServer
    with KeyServer("keys.sqlite3") as server:         # or KeyServer() for ":memory:"
        status, answer = server.post(url, device_id, request_body)

The HTTPS service around it: :class:`KeyServerApp` (ASGI, Digest authentication) served by
uvicorn through :mod:`pylime.keyserver.service` (``pylime keyserver serve``)::

    PYLIME_PASSWORD=... pylime keyserver account add alice@example.org --db keys.sqlite3
    pylime keyserver serve --realm example.org --db keys.sqlite3          # self-signed TLS
    pylime keyserver serve --realm example.org --tls-cert C --tls-key K \\
        --db postgresql://lime@db/lime --workers 4                        # several processes

Operators should know: accounts hold HA1 values only (the SIP account's password is never
stored); an account may act only on devices ``sip:<user>@<realm>;gr=...``, while fetching
bundles needs any account; Digest nonces and the rate limit (on by default, per account)
live in the database when it is shared (PostgreSQL, or an SQLite file with several workers),
so any process answers any request (:mod:`pylime.keyserver.state`); ``GET /healthz`` is
liveness, ``GET /readyz`` readiness (database up, schema current), ``GET /metrics`` Prometheus
metrics with ``--metrics``; ``pylime keyserver migrate|export|import|report`` operate the
database (docs/deploy.md); SIGTERM finishes the requests in flight, then closes the database; logs carry
device ids and outcomes, never passwords, HA1 values or keys. Abuse limits live in the
database, shared by every worker: device ids must be canonical (:mod:`pylime.deviceid`), a
getPeerBundle answers each distinct device once, an account takes 100 OPks at once and 100 an
hour (then bundles go out without OPk) and stores at most 32 devices and 256 KiB
(docs/deploy.md).
"""

from __future__ import annotations

from pylime.keyserver.app import KeyServerApp, ServerConfig
from pylime.keyserver.auth import DigestAuthenticator, make_account
from pylime.keyserver.core import DEFAULT_MAX_OPKS_PER_DEVICE, KeyServer, open_storage
from pylime.keyserver.protocol import CONTENT_TYPE, KEY_SIZES, ErrorCode, MessageType
from pylime.keyserver.storage import Account, SQLiteStorage, Storage, StorageError

# ServerThread and serve (pylime.keyserver.service) need uvicorn, an optional dependency
# (pip install pylime[server]), so they are not imported here.
__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_OPKS_PER_DEVICE",
    "KEY_SIZES",
    "Account",
    "DigestAuthenticator",
    "ErrorCode",
    "KeyServer",
    "KeyServerApp",
    "MessageType",
    "SQLiteStorage",
    "ServerConfig",
    "Storage",
    "StorageError",
    "make_account",
    "open_storage",
]
