"""The key server's Prometheus metrics (``GET /metrics``, prometheus-client).

What is measured, and why these labels (every label has a small, fixed set of values, so the
number of series does not grow with users):

- ``pylime_keyserver_requests_total{type, outcome}``: X3DH requests by message type
  (``registerUser``, ``getPeerBundle``, ... or ``malformed``) and outcome (``ok``, an X3DH error
  code such as ``user_not_found``, or ``http_401`` / ``http_403`` / ``http_413`` / ``http_429``...).
- ``pylime_keyserver_request_duration_seconds{type}``: latency histogram, from the request
  reaching the app to the answer being handed to the server.
- ``pylime_keyserver_bundles_total{opk}``: bundles handed out, ``with`` / ``without`` an OPk, or
  ``unknown`` device: a rising ``without`` share means devices run dry.
- ``pylime_keyserver_device_opk_stock{curve}``: how many devices hold at most N OPks (a gauge
  histogram, buckets ``le``), plus ``pylime_keyserver_devices`` and ``..._opks_stored``. Not a
  gauge per device: on a server with a million devices that is a million series, which
  Prometheus servers are not sized for; which devices are low is a question for
  ``pylime keyserver report --low-opk N``. Computed from the database at scrape time (one
  aggregate query, cached ``stock_ttl`` seconds), so it is the same whichever worker answers.
- ``pylime_keyserver_db_pool_connections{state}`` (open / idle), ``..._requests_waiting``,
  ``..._wait_seconds_total``: the PostgreSQL pool of every worker, summed (sampled each second).

With several uvicorn workers, ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a directory of its
own before the workers start, and a scrape sums what every worker wrote there
(prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from pylime.keyserver.protocol import KEY_SIZES, ErrorCode, MessageType
from pylime.keyserver.storage import Storage
from pylime.types import Curve

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "Metrics", "request_type"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# lime asks for more OPks when the server holds fewer than 100 (it uploads 25 at a time):
# the buckets around that level show devices approaching and reaching empty.
STOCK_BUCKETS = (0, 10, 25, 50, 100, 200, 1000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_TYPES = {
    MessageType.REGISTER_USER: "registerUser",
    MessageType.DEPRECATED_REGISTER_USER: "deprecatedRegisterUser",
    MessageType.DELETE_USER: "deleteUser",
    MessageType.POST_SPK: "postSPk",
    MessageType.POST_OPKS: "postOPks",
    MessageType.GET_PEER_BUNDLE: "getPeerBundle",
    MessageType.GET_SELF_OPKS: "getSelfOPks",
}
_ERRORS = {int(c): c.name.lower() for c in ErrorCode}
_CURVES = {int(c): c.name.lower() for c in Curve}


def request_type(body: bytes) -> str:
    """The metric label of a request body: its message type's name, or ``malformed``."""
    if len(body) < 3 or body[0] != 0x01:
        return "malformed"
    name: str = _TYPES.get(body[1], "malformed")  # type: ignore[call-overload]
    return name


def outcome(status: int, answer: bytes) -> str:
    """``ok``, the X3DH error code's name, or ``http_<status>``."""
    if status != 200:
        return f"http_{status}"
    if len(answer) >= 4 and answer[1] == MessageType.ERROR:
        return _ERRORS.get(answer[3], "error")
    return "ok"


def bundle_flags(answer: bytes) -> tuple[int, int, int]:
    """(with OPk, without OPk, unknown) entries of a peerBundle answer; zeros if not one."""
    counts = [0, 0, 0]
    if len(answer) < 5 or answer[1] != MessageType.PEER_BUNDLE:
        return 0, 0, 0
    sizes = KEY_SIZES.get(answer[2])  # type: ignore[call-overload]
    if sizes is None:
        return 0, 0, 0
    keys = sizes.ed + sizes.x + 4 + sizes.sig
    pos, end = 5, len(answer)
    for _ in range(int.from_bytes(answer[3:5], "big")):
        if pos + 2 > end:
            break
        pos += 2 + int.from_bytes(answer[pos : pos + 2], "big")
        if pos >= end:
            break
        flag = answer[pos]
        pos += 1
        if flag == 2:
            counts[2] += 1
            continue
        pos += keys
        if flag == 1:
            counts[0] += 1
            pos += sizes.x + 4
        else:
            counts[1] += 1
    return counts[0], counts[1], counts[2]


class _StockCollector:
    """Devices by OPk stock, from the database at scrape time (cached ``ttl`` seconds)."""

    def __init__(self, storage: Callable[[], Storage | None], ttl: float) -> None:
        self._storage = storage
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[tuple[int, int], int]] | None = None

    def _levels(self) -> dict[tuple[int, int], int] | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._ttl:
                storage = self._storage()
                if storage is None:
                    return None
                self._cached = (now, storage.opk_stock_levels())
            return self._cached[1]

    def describe(self) -> list[Any]:
        return []  # collected from the database: nothing to describe before a scrape

    def collect(self) -> Iterator[Any]:
        try:
            levels = self._levels()
        except Exception:  # noqa: BLE001 (a scrape during an outage still shows the rest)
            levels = None
        up = GaugeMetricFamily(
            "pylime_keyserver_stock_query_ok", "1 if the OPk stock query of this scrape worked"
        )
        up.add_metric([], 0 if levels is None else 1)
        yield up
        if levels is None:
            return
        devices = GaugeMetricFamily(
            "pylime_keyserver_devices", "Registered devices", labels=["curve"]
        )
        opks = GaugeMetricFamily(
            "pylime_keyserver_opks_stored", "OPks held for all devices", labels=["curve"]
        )
        stock = GaugeHistogramMetricFamily(
            "pylime_keyserver_device_opk_stock",
            "Devices holding at most le OPks (cumulative); le=0: devices out of OPks",
            labels=["curve"],
        )
        for curve in sorted({c for c, _ in levels} | {1}):
            name = _CURVES.get(curve, str(curve))
            mine = {n: d for (c, n), d in levels.items() if c == curve}
            total = sum(mine.values())
            devices.add_metric([name], total)
            opks.add_metric([name], sum(n * d for n, d in mine.items()))
            buckets = [
                (str(b), float(sum(d for n, d in mine.items() if n <= b))) for b in STOCK_BUCKETS
            ]
            buckets.append(("+Inf", float(total)))
            stock.add_metric([name], buckets, gsum_value=float(sum(n * d for n, d in mine.items())))
        yield devices
        yield opks
        yield stock


class Metrics:
    """The metrics of one key-server process (one worker), and their exposition.

    Args:
        storage: returns the open storage (None while closed), for the stock and pool metrics.
        stock_ttl: seconds a stock query result is reused between scrapes.
    """

    def __init__(self, storage: Callable[[], Storage | None], *, stock_ttl: float = 15.0) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Multiprocess mode: values live in files, not in a registry; a scrape collects them.
        own = None if self.multiprocess else CollectorRegistry()
        self._registry = own
        self._storage = storage
        self.requests = Counter(
            "pylime_keyserver_requests",
            "X3DH requests by message type and outcome",
            ["type", "outcome"],
            registry=own,
        )
        self.latency = Histogram(
            "pylime_keyserver_request_duration_seconds",
            "Time from the request reaching the app to its answer, by message type",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.bundles = Counter(
            "pylime_keyserver_bundles",
            "Bundles handed out by getPeerBundle: with an OPk, without one, or unknown device",
            ["opk"],
            registry=own,
        )
        self.pool = Gauge(
            "pylime_keyserver_db_pool_connections",
            "Database pool connections of all workers: open, idle",
            ["state"],
            registry=own,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "pylime_keyserver_db_pool_requests_waiting",
            "Requests waiting for a database connection, all workers",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.pool_wait = Counter(
            "pylime_keyserver_db_pool_wait_seconds",
            "Time requests spent waiting for a database connection",
            registry=own,
        )
        self._stock = _StockCollector(storage, stock_ttl)
        if own is not None:
            own.register(self._stock)
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}
        self._bundle_children = [self.bundles.labels(k) for k in ("with", "without", "unknown")]
        self._last_pool: dict[str, int] = {}
        self._pool_lock = threading.Lock()

    def observe(self, type_: str, status: int, answer: bytes, seconds: float) -> None:
        """Count one answered request."""
        key = (type_, outcome(status, answer))
        counter = self._counters.get(key)
        if counter is None:  # .labels() costs a lock and a lookup: keep the children
            counter = self._counters[key] = self.requests.labels(*key)
        counter.inc()
        histogram = self._histograms.get(type_)
        if histogram is None:
            histogram = self._histograms[type_] = self.latency.labels(type_)
        histogram.observe(seconds)
        if type_ == "getPeerBundle" and status == 200:
            for child, n in zip(self._bundle_children, bundle_flags(answer), strict=True):
                if n:
                    child.inc(n)

    def sample_pool(self) -> None:
        """Copy the PostgreSQL pool's counters into the gauges (no-op on SQLite)."""
        storage = self._storage()
        stats_of = getattr(storage, "pool_stats", None)
        if stats_of is None:
            return
        stats = stats_of()
        with self._pool_lock:
            self.pool.labels("open").set(stats.get("pool_size", 0))
            self.pool.labels("idle").set(stats.get("pool_available", 0))
            self.pool_waiting.set(stats.get("requests_waiting", 0))
            waited = stats.get("requests_wait_ms", 0)
            delta = waited - self._last_pool.get("requests_wait_ms", 0)
            if delta > 0:
                self.pool_wait.inc(delta / 1000)
            self._last_pool["requests_wait_ms"] = waited

    def exposition(self) -> bytes:
        """The text a scrape gets (blocking: may query the database for the OPk stock)."""
        try:
            self.sample_pool()
        except Exception:  # noqa: BLE001, S110 (a closed pool must not fail the scrape)
            pass
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._stock)
        return generate_latest(registry)

    def close(self) -> None:
        """This worker is leaving: drop its live gauges from the multiprocess sums."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
