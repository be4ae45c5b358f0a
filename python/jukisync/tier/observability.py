"""Health and metrics of a tier daemon: `/healthz` (JSON) and Prometheus `/metrics`.

`NodeMetrics` keeps the node's own Prometheus registry:

- per origin, counted from each committed batch's results (since the process
  started, as Prometheus counters are): `jukisync_applied_bundles_total`,
  `jukisync_applied_updates_total`, `jukisync_duplicates_total`, `jukisync_gaps_total`
  (label `origin`) and `jukisync_rejected_total` (labels `origin`, `kind`: security
  or halt; origin `unknown` when the bytes named none);
- `jukisync_batch_seconds`: histogram of the time one batch spent in `store.apply`;
- read from the store at each scrape: lag per origin (`jukisync_origin_head_seq`, the
  last applied sequence number; `jukisync_origin_pending_bundles` and
  `jukisync_origin_lag_seqs`, how far the bundles waiting in pending reach beyond
  it; `jukisync_origin_halted`), `jukisync_forward_backlog`, and every store counter
  as `jukisync_store_<name>` (these survive restarts: they live in the store);
- the node: `jukisync_up`, `jukisync_connected`, `jukisync_consuming`,
  `jukisync_forwarded_total`, `jukisync_resend_requests_total`,
  `jukisync_deliveries_total`, and the process collector's `process_*`.

`HttpEndpoint` serves both on asyncio (no thread for the server): `/healthz` answers
200 when the node is consuming and connected, 503 otherwise, with a JSON body saying
why; `/metrics` renders in a worker thread, since reading the store per origin can
take a moment on a national store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jukisync._core import ApplyResult, Store
from jukisync.tier.node import TierNode

__all__ = ["HttpEndpoint", "NodeMetrics"]

log = logging.getLogger("jukisync.http")

_UNKNOWN = "unknown"
_BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _StoreCollector:
    """Gauges read from the store and the node at scrape time."""

    def __init__(self, node: TierNode, gap_origins: Callable[[], frozenset[str]]) -> None:
        self.node = node
        self.gap_origins = gap_origins

    def collect(self) -> Iterable[Metric]:
        store: Store = self.node.store
        stats = store.stats()
        for name, value in sorted(stats.items()):
            yield GaugeMetricFamily(
                f"jukisync_store_{name}", f"Store counter {name!r} (kept in the store)", value
            )
        yield GaugeMetricFamily(
            "jukisync_forward_backlog",
            "Applied bundles waiting to be forwarded to national",
            stats.get("forward_backlog", 0),
        )
        heads = store.chain_heads()
        head = GaugeMetricFamily(
            "jukisync_origin_head_seq", "Last applied sequence number", labels=["origin"]
        )
        for origin, (seq, _) in sorted(heads.items()):
            head.add_metric([origin], seq)
        yield head
        pending = GaugeMetricFamily(
            "jukisync_origin_pending_bundles",
            "Bundles waiting in pending (after a gap or a halt)",
            labels=["origin"],
        )
        lag = GaugeMetricFamily(
            "jukisync_origin_lag_seqs",
            "Sequence numbers known to exist (in pending) beyond the last applied one",
            labels=["origin"],
        )
        halted = store.halted()
        for origin in sorted(self.gap_origins() | set(halted)):
            waiting = store.pending(origin)
            pending.add_metric([origin], len(waiting))
            top = max((last for _, last in waiting), default=0)
            applied = heads.get(origin, (0, b""))[0]
            lag.add_metric([origin], max(0, top - applied))
        yield pending
        yield lag
        halts = GaugeMetricFamily(
            "jukisync_origin_halted", "1 while an origin waits for an operator", labels=["origin"]
        )
        for origin in sorted(halted):
            halts.add_metric([origin], 1)
        yield halts
        stats_now = self.node.stats
        for name, value, text in (
            ("forwarded", stats_now.forwarded, "Bundles forwarded to national (confirmed)"),
            ("resend_requests", stats_now.resend_requests, "Resend requests sent to origins"),
            ("deliveries", stats_now.deliveries, "Messages received from the broker"),
        ):
            yield CounterMetricFamily(f"jukisync_{name}", text, value)


class NodeMetrics:
    """The Prometheus registry of one tier node; `observe` is a `TierNode` observer."""

    def __init__(self, node: TierNode) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        # Replaced, never changed in place: the collector reads it from another thread.
        self._gap_origins: frozenset[str] = frozenset()
        r = self.registry
        self.applied_bundles = Counter(
            "jukisync_applied_bundles",
            "Bundles applied (with those released from pending)",
            ["origin"],
            registry=r,
        )
        self.applied_updates = Counter(
            "jukisync_applied_updates", "Updates in bundles applied", ["origin"], registry=r
        )
        self.duplicates = Counter(
            "jukisync_duplicates",
            "Bundles already applied (acked, no change)",
            ["origin"],
            registry=r,
        )
        self.gaps = Counter(
            "jukisync_gaps",
            "Bundles that arrived ahead of a gap (kept in pending)",
            ["origin"],
            registry=r,
        )
        self.rejected = Counter(
            "jukisync_rejected",
            "Bundles quarantined: kind security (not from the origin) or halt",
            ["origin", "kind"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "jukisync_batch_seconds",
            "Seconds one batch spent in store.apply (verify, apply, commit)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.up = Gauge("jukisync_up", "1 while the node runs (not failed)", registry=r)
        self.connected = Gauge("jukisync_connected", "1 while connected to the broker", registry=r)
        self.consuming = Gauge("jukisync_consuming", "1 while consuming its queue", registry=r)
        info = Gauge("jukisync_node_info", "The node's role and id", ["role", "node"], registry=r)
        info.labels(node.config.role, node.name).set(1)
        r.register(_StoreCollector(node, lambda: self._gap_origins))
        ProcessCollector(registry=r)

    def observe(self, results: Sequence[ApplyResult], elapsed_s: float) -> None:
        self.batch_seconds.observe(elapsed_s)
        for result in results:
            origin = result.origin or _UNKNOWN
            status = result.status
            if status == "applied":
                self.applied_bundles.labels(origin).inc(1 + result.released)
                self.applied_updates.labels(origin).inc(result.updates)
            elif status == "duplicate":
                self.duplicates.labels(origin).inc()
            elif status == "gap":
                self.gaps.labels(origin).inc()
                if result.origin is not None and result.origin not in self._gap_origins:
                    self._gap_origins = self._gap_origins | {result.origin}
            else:
                self.rejected.labels(origin, result.kind or _UNKNOWN).inc()

    def set_state(self, *, up: bool, connected: bool, consuming: bool) -> None:
        self.up.set(int(up))
        self.connected.set(int(connected))
        self.consuming.set(int(consuming))

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition (text or OpenMetrics, as `accept` asks) and its type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


Health = Callable[[], tuple[bool, dict[str, Any]]]
Refresh = Callable[[], None]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_HEAD = 16 * 1024
_READ_TIMEOUT_S = 10.0


class HttpEndpoint:
    """A minimal HTTP/1.1 server for `/healthz` and `/metrics` (one request per
    connection). `health` says (healthy, details); `refresh` runs on the loop before
    each scrape (to copy state that belongs to the loop into the registry)."""

    def __init__(
        self, listen: str, port: int, *, health: Health, metrics: NodeMetrics, refresh: Refresh
    ) -> None:
        self.listen = listen
        self.port = port
        self._health = health
        self._metrics = metrics
        self._refresh = refresh
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening; raises OSError (address in use...) for the caller to report."""
        self._server = await asyncio.start_server(
            self._serve, self.listen, self.port, limit=_MAX_HEAD
        )
        log.info("serving /healthz and /metrics on http://%s:%d", self.listen, self.port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_READ_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            method, target, _ = parts
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            status, body, content_type = await self._answer(
                method, target.split("?", 1)[0], headers
            )
            head_out = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head_out.encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("http: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            return 405, b"GET or HEAD only\n", "text/plain; charset=utf-8"
        if path == "/healthz":
            healthy, details = self._health()
            body = json.dumps(details, ensure_ascii=False).encode() + b"\n"
            return (200 if healthy else 503), body, "application/json"
        if path == "/metrics":
            self._refresh()
            body, content_type = await asyncio.to_thread(
                self._metrics.render, headers.get("accept", "")
            )
            return 200, body, content_type
        return 404, b"not found: try /healthz or /metrics\n", "text/plain; charset=utf-8"
