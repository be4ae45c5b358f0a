"""Health and metrics of a tier daemon: `/healthz` (JSON) and Prometheus `/metrics`.

`NodeMetrics` keeps the node's own Prometheus registry:

- per origin, counted from each committed batch's results (since the process
  started, as Prometheus counters are): `jukisync_applied_bundles_total`,
  `jukisync_applied_updates_total`, `jukisync_duplicates_total`, `jukisync_gaps_total`
  (label `origin`) and `jukisync_rejected_total` (labels `origin`, `kind`: security
  or halt; origin `unknown` when the bytes named none);
- `jukisync_batch_seconds`: histogram of the time one batch spent in `store.apply`;
- read from the store at each scrape, per origin: `jukisync_origin_head_seq` (last
  applied seq), `jukisync_origin_announced_seq` (highest verified announced head),
  `jukisync_origin_lag_seqs` and `jukisync_origin_lag_seconds` (see `tier/lag.py`),
  `jukisync_origin_pending_bundles`, `jukisync_origin_halted`,
  `jukisync_origin_last_applied_timestamp_seconds`; the one backlog metric
  `jukisync_forward_backlog`; the store's counters as `jukisync_store_<name>_total`
  (these survive restarts: they live in the store) and its levels as
  `jukisync_store_<name>`;
- the node: `jukisync_up`, `jukisync_connected`, `jukisync_consuming`, and counters
  `jukisync_forwarded_total`, `jukisync_resend_requests_total`,
  `jukisync_repair_requests_total`, `jukisync_repairs_served_total`,
  `jukisync_heads_heard_total`, `jukisync_heads_refused_total`,
  `jukisync_deliveries_total`, `jukisync_redeliveries_total`,
  `jukisync_reconnects_total`, and the process collector's `process_*`.

`HttpEndpoint` serves both on asyncio (no thread for the server): `/healthz` answers
200 when the daemon says `ok`, 503 otherwise (degraded, starting, unavailable...),
with a JSON body saying why; `/metrics` renders in a worker thread, since reading the
store per origin can take a moment on a national store.
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


# Store counters that only grow (typed as counters); the other store stats are levels.
_STORE_COUNTERS = frozenset(
    {
        "applied_bundles",
        "applied_updates",
        "duplicates",
        "gaps",
        "rejected_security",
        "rejected_halt",
    }
)
_BACKLOG = "forward_backlog"  # exposed once, as jukisync_forward_backlog


class _StoreCollector:
    """Metrics read from the store and the node at scrape time (in a worker thread:
    what belongs to the event loop is copied by `NodeMetrics.set_state` first)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        node = self.metrics.node
        store: Store = node.store
        stats = store.stats()
        # Read after the stats: a mark committed in between over-counts for one scrape,
        # never under-counts.
        sent = node.forwards_unmarked
        for name, value in sorted(stats.items()):
            if name == _BACKLOG:
                continue
            if name in _STORE_COUNTERS:
                yield CounterMetricFamily(
                    f"jukisync_store_{name}", f"Store counter {name!r} (kept in the store)", value
                )
            else:
                yield GaugeMetricFamily(f"jukisync_store_{name}", f"Store level {name!r}", value)
        yield GaugeMetricFamily(
            "jukisync_forward_backlog",
            "Applied bundles waiting to be forwarded to national (the backlog; not those "
            "national confirmed whose marks wait for the next commit)",
            max(0, stats.get(_BACKLOG, 0) - sent),
        )
        heads = store.chain_heads()
        head = GaugeMetricFamily(
            "jukisync_origin_head_seq", "Last applied sequence number", labels=["origin"]
        )
        for origin, (seq, _) in sorted(heads.items()):
            head.add_metric([origin], seq)
        yield head
        families = {
            "announced": GaugeMetricFamily(
                "jukisync_origin_announced_seq",
                "Highest verified announced head (origin's or a centre's relay)",
                labels=["origin"],
            ),
            "pending": GaugeMetricFamily(
                "jukisync_origin_pending_bundles",
                "Bundles waiting in pending (after a gap or a halt)",
                labels=["origin"],
            ),
            "seqs": GaugeMetricFamily(
                "jukisync_origin_lag_seqs",
                "Sequence numbers known to exist (announced or in pending) beyond the "
                "last applied one",
                labels=["origin"],
            ),
            "seconds": GaugeMetricFamily(
                "jukisync_origin_lag_seconds",
                "Age of the newest announced change not applied here (0 when caught up)",
                labels=["origin"],
            ),
        }
        for entry in node.catchup.lags(set(self.metrics.origins), set(self.metrics.gap_origins)):
            o = [entry.origin]
            families["announced"].add_metric(o, entry.announced_seq)
            families["pending"].add_metric(o, entry.pending)
            families["seqs"].add_metric(o, entry.lag.seqs)
            families["seconds"].add_metric(o, entry.lag.seconds)
        yield from families.values()
        applied_at = GaugeMetricFamily(
            "jukisync_origin_last_applied_timestamp_seconds",
            "When this process last applied a bundle of the origin (Unix time)",
            labels=["origin"],
        )
        for origin, at in sorted(self.metrics.last_applied_us.items()):
            applied_at.add_metric([origin], at / 1e6)
        yield applied_at
        halts = GaugeMetricFamily(
            "jukisync_origin_halted", "1 while an origin waits for an operator", labels=["origin"]
        )
        for origin in sorted(store.halted()):
            halts.add_metric([origin], 1)
        yield halts
        stats_now = node.stats
        catchup = node.catchup
        for name, value, text in (
            ("forwarded", stats_now.forwarded, "Bundles forwarded to national (confirmed)"),
            ("resend_requests", stats_now.resend_requests, "Resend requests sent to origins"),
            (
                "repair_requests",
                stats_now.repair_requests,
                "Requests that the centres re-send a range from their change logs",
            ),
            ("repairs_served", catchup.repairs_served, "Bundles re-sent for another tier"),
            ("heads_heard", catchup.heads_heard, "Head announcements verified"),
            ("heads_refused", catchup.heads_refused, "Head announcements refused"),
            ("deliveries", stats_now.deliveries, "Messages received from the broker"),
            ("redeliveries", stats_now.redeliveries, "Messages the broker redelivered"),
            ("reconnects", self.metrics.reconnects, "Connections to the broker re-opened"),
        ):
            yield CounterMetricFamily(f"jukisync_{name}", text, value)


class NodeMetrics:
    """The Prometheus registry of one tier node; `observe` is a `TierNode` observer."""

    def __init__(self, node: TierNode) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        # Copied on the loop by `set_state`, read by the collector in another thread.
        self.origins: frozenset[str] = frozenset()
        self.gap_origins: frozenset[str] = frozenset()
        self.last_applied_us: dict[str, int] = {}
        self.reconnects = 0
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
        r.register(_StoreCollector(self))
        ProcessCollector(registry=r)

    def observe(self, results: Sequence[ApplyResult], elapsed_s: float) -> None:
        self.batch_seconds.observe(elapsed_s)
        for result in results:
            origin = result.origin or _UNKNOWN
            status = result.status
            if status == "applied":
                self.applied_bundles.labels(origin).inc(1 + result.released)
                self.applied_updates.labels(origin).inc(result.updates)
                found = result.pending_rejected  # rejected while draining pending
                if found is not None:
                    self.rejected.labels(found.origin or _UNKNOWN, found.kind or _UNKNOWN).inc()
            elif status == "duplicate":
                self.duplicates.labels(origin).inc()
            elif status == "gap":
                self.gaps.labels(origin).inc()
            else:
                self.rejected.labels(origin, result.kind or _UNKNOWN).inc()

    def set_state(self, *, up: bool, connected: bool, consuming: bool, reconnects: int) -> None:
        self.origins = frozenset(self.node.catchup.origins())
        self.gap_origins = frozenset(self.node.catchup.gap_origins)
        self.last_applied_us = dict(self.node.catchup.last_applied_us)
        self.reconnects = reconnects
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
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await server.wait_closed()

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
