"""What the key server remembers between requests besides keys: used digest nonces, rate-limit
buckets, and the secret that signs nonces; in this process, or in the database it shares.

With one process on its own database, memory is enough and costs nothing. When several
processes answer one service (``--workers N`` on one machine, or machines behind a load
balancer on one PostgreSQL), they must agree, or a client that lands on another process gets
an extra challenge, a captured request can be replayed to a process that never saw it, and
the rate limit multiplies with the number of processes. The store-backed classes keep that
state in the shared database instead, one short statement per request.
"""

from __future__ import annotations

import abc
import hashlib
import heapq
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pylime.keyserver.storage import NonceUse, Storage

__all__ = [
    "DEFAULT_MAX_NONCES_PER_ACCOUNT",
    "DEFAULT_RATE_BURST",
    "DEFAULT_RATE_LIMIT",
    "SECRET_ENV",
    "MemoryNonceBook",
    "MemoryRateLimiter",
    "NonceBook",
    "RateLimiter",
    "StoreNonceBook",
    "StoreRateLimiter",
    "nonce_secret",
]

log = logging.getLogger("pylime.keyserver.state")

# Live nonces one account may hold. A client holds one per connection for up to the nonce
# lifetime (300 s): 1000 covers an account with hundreds of devices reconnecting often;
# an account using more only makes its own new nonces stale until its old ones expire.
DEFAULT_MAX_NONCES_PER_ACCOUNT = 1000
# Requests per second per account (per client address without authentication), and the
# bucket size. A lime device makes a handful of requests per session it opens; these are far
# above what the test suites' busiest clients need (see docs/deploy.md) and keep one account
# from taking more than a fraction of a server (~3,000 requests/s on one machine).
DEFAULT_RATE_LIMIT = 50.0
DEFAULT_RATE_BURST = 500.0

# The secret that signs nonces, for processes that do not share a database (or to choose it).
SECRET_ENV = "PYLIME_KEYSERVER_SECRET"
_SECRET_NAME = "nonce_secret"
_MIN_SECRET = 16  # bytes of configured secret material


def nonce_secret(storage: Storage | None, secret_file: str | None = None) -> bytes:
    """The key that signs nonces, the same in every process that must accept each other's.

    In order: the contents of ``secret_file``, else ``$PYLIME_KEYSERVER_SECRET``, else (with
    ``storage``) a random secret kept in the shared database, created by whichever process
    starts first; without storage, a random key of this process alone. The key is derived
    from the material (SHA-256), so any text of 16 bytes or more will do.

    Raises:
        ValueError: the configured secret is shorter than 16 bytes or the file unreadable.
    """
    material: bytes | None = None
    if secret_file:
        try:
            path = Path(secret_file)
            material = path.read_bytes().strip()
            if path.stat().st_mode & 0o077:
                log.warning("nonce secret file %s is readable by others: chmod 600 it", path)
        except OSError as exc:
            raise ValueError(f"cannot read the nonce secret file: {exc.strerror}") from None
    elif os.environ.get(SECRET_ENV):
        material = os.environ[SECRET_ENV].strip().encode("utf-8")
    elif storage is not None:
        material = storage.shared_secret(_SECRET_NAME)
    else:
        return secrets.token_bytes(32)
    if len(material) < _MIN_SECRET:
        raise ValueError(f"the nonce secret must hold at least {_MIN_SECRET} bytes")
    return hashlib.sha256(b"pylime keyserver nonce key\x00" + material).digest()


# --------------------------------------------------------------------------- nonces


class NonceBook(abc.ABC):
    """Remembers, for each nonce in use, its account and highest nonce count (nc)."""

    def __init__(self, max_per_account: int = DEFAULT_MAX_NONCES_PER_ACCOUNT) -> None:
        if max_per_account < 1:
            raise ValueError("max_per_account must be at least 1")
        self.max_per_account = max_per_account

    @abc.abstractmethod
    def use(self, nonce: str, account: str, nc: int, expires: float, now: float) -> NonceUse:
        """Record one use; ``expires`` is when the nonce stops being valid anyway.

        Raises:
            StorageError: a store-backed book's database failed.
        """


class MemoryNonceBook(NonceBook):
    """The nonce book of a single process: per-account counts and an expiry heap.

    Args:
        max_per_account: live nonces one account may hold; beyond, its new ones are FULL.
        max_total: live nonces in all (bounds memory, ~200 bytes each); beyond, every new
            nonce is FULL until old ones expire, which takes ``max_total / max_per_account``
            accounts working together.
    """

    def __init__(
        self, max_per_account: int = DEFAULT_MAX_NONCES_PER_ACCOUNT, max_total: int = 1_000_000
    ) -> None:
        super().__init__(max_per_account)
        self.max_total = max_total
        self._seen: dict[str, tuple[str, int]] = {}  # nonce -> (account, highest nc)
        self._held: dict[str, int] = {}  # account -> live nonces
        self._expiry: list[tuple[float, str]] = []  # heap of (expires, nonce)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, nonce: str, account: str, nc: int, expires: float, now: float) -> NonceUse:
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                owner, _ = self._seen.pop(old)
                left = self._held[owner] - 1
                if left:
                    self._held[owner] = left
                else:
                    del self._held[owner]
            seen = self._seen.get(nonce)
            if seen is not None:
                if seen[0] != account or nc <= seen[1]:
                    return NonceUse.REPLAYED
                self._seen[nonce] = (account, nc)
                return NonceUse.ACCEPTED
            held = self._held.get(account, 0)
            if held >= self.max_per_account or len(self._seen) >= self.max_total:
                return NonceUse.FULL
            self._seen[nonce] = (account, nc)
            self._held[account] = held + 1
            heapq.heappush(self._expiry, (expires, nonce))
            return NonceUse.ACCEPTED


class StoreNonceBook(NonceBook):
    """The nonce book in the shared database: every process sees every use, atomically.

    Expired rows are deleted every ``purge_every`` seconds by whichever process notices.
    """

    def __init__(
        self,
        storage: Storage,
        max_per_account: int = DEFAULT_MAX_NONCES_PER_ACCOUNT,
        *,
        purge_every: float = 60.0,
    ) -> None:
        super().__init__(max_per_account)
        self.storage = storage
        self._purge_every = purge_every
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()

    def use(self, nonce: str, account: str, nc: int, expires: float, now: float) -> NonceUse:
        if now >= self._next_purge and self._purge_lock.acquire(blocking=False):
            try:
                self._next_purge = now + self._purge_every
                self.storage.purge_nonces(now)
            finally:
                self._purge_lock.release()
        return self.storage.use_nonce(nonce, account, nc, expires, now, self.max_per_account)


# --------------------------------------------------------------------------- rate limit


class RateLimiter(abc.ABC):
    """Token buckets per requester: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (no limiter at all means no limit)")
        self.rate = rate
        self.burst = max(1.0, 2 * rate if burst is None else burst)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self.rate}, burst={self.burst})"

    @abc.abstractmethod
    def wait(self, who: str) -> float:
        """Take one token for ``who``: 0 if allowed, else the seconds until one is available.

        Raises:
            StorageError: a store-backed limiter's database failed.
        """


class MemoryRateLimiter(RateLimiter):
    """The buckets of a single process (monotonic clock; bounded to ``max_buckets``)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        super().__init__(rate, burst)
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, last time)
        self._lock = threading.Lock()

    def wait(self, who: str) -> float:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                return (1 - tokens) / self.rate
            if who not in self._buckets and len(self._buckets) >= self._max_buckets:
                self._forget_full(now)
            self._buckets[who] = (tokens - 1, now)
            return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (forgetting them loses nothing); under the lock."""
        full = now - self.burst / self.rate
        self._buckets = {w: b for w, b in self._buckets.items() if b[1] > full}
        if len(self._buckets) >= self._max_buckets:  # all busy: make room, oldest first
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[self._max_buckets // 2 :]
            self._buckets = dict(keep)


class StoreRateLimiter(RateLimiter):
    """The buckets in the shared database: N processes on M machines allow what one would.

    Uses wall-clock time (machines sharing a database should run NTP; a clock behind the
    others refills nothing rather than taking tokens back). Buckets untouched long enough to
    be full again are deleted every ``purge_every`` seconds.
    """

    def __init__(
        self,
        storage: Storage,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.time,
        *,
        purge_every: float = 60.0,
    ) -> None:
        super().__init__(rate, burst)
        self.storage = storage
        self._clock = clock
        self._purge_every = purge_every
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()

    def wait(self, who: str) -> float:
        now = self._clock()
        if now >= self._next_purge and self._purge_lock.acquire(blocking=False):
            try:
                self._next_purge = now + self._purge_every
                # A bucket untouched for burst/rate seconds is full: a missing row is the same.
                self.storage.purge_buckets(now - self.burst / self.rate - 1.0)
            finally:
                self._purge_lock.release()
        return self.storage.take_token(who, self.rate, self.burst, now)
