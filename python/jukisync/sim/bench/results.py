"""What a run reports: percentiles, per-phase usage, per-tier figures, targets met."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jukisync.sim.bench.options import (
    TARGET_MAX_BUNDLE,
    TARGET_P99_MS,
    TARGET_PACED_RATE,
    TARGET_RAW_RATIO,
    TARGET_UPDATES_PER_S,
    BenchOptions,
)

# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Percentiles:
    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def percentiles(seconds: Iterable[float]) -> Percentiles:
    """p50, p90, p99 (linear interpolation between the samples, as
    `statistics.quantiles(method="inclusive")`) and the maximum, in ms."""
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return Percentiles(0, math.nan, math.nan, math.nan, math.nan)
    cuts = statistics.quantiles(ms * 2 if len(ms) == 1 else ms, n=100, method="inclusive")
    return Percentiles(
        len(ms), round(cuts[49], 2), round(cuts[89], 2), round(cuts[98], 2), round(ms[-1], 2)
    )


@dataclass(frozen=True, slots=True)
class PhaseUsage:
    """Where a phase's time went: CPU of this process and of the local broker, and per
    tier the wall time inside `store.apply` (worker threads, GIL released) and how
    many batches (one write transaction each) it took."""

    wall_s: float
    cpu_s: float  # this process, user + system (all threads)
    broker_cpu_s: float | None  # the local broker's, if it could be read
    apply_s: dict[str, float]
    batches: dict[str, int]
    # The disk holding the stores (from /proc/diskstats; None if unknown): written by
    # everyone on it (stores, broker, others), and the share of the time it was busy.
    disk_written_mb: float | None
    disk_busy_pct: float | None


@dataclass(frozen=True, slots=True)
class RawResult:
    """aio-pika alone over the same two hops."""

    messages: int
    bytes: int
    elapsed_s: float
    publish_s: float  # until every publish was confirmed
    bytes_per_s: float
    messages_per_s: float


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    bundles: int
    updates: int
    bytes: int  # of the envelopes published
    elapsed_s: float  # first publish → national commit of the last bundle
    publish_s: float  # first publish → every publish confirmed
    aggregator_s: float  # first publish → aggregator commit of the last bundle
    updates_per_s: float
    bytes_per_s: float
    latency: Percentiles  # publish → national commit, under full load (queueing)
    aggregator_latency: Percentiles  # publish → aggregator commit
    usage: PhaseUsage


@dataclass(frozen=True, slots=True)
class LatencyResult:
    rate: float  # asked for, updates/s
    achieved_rate: float  # updates published / publishing time
    bundle_size: int
    bundles: int
    updates: int
    duration_s: float
    latency: Percentiles  # publish → national commit
    aggregator_latency: Percentiles  # publish → aggregator commit
    usage: PhaseUsage


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool
    met: bool
    note: str = ""


@dataclass(slots=True)
class TierFigures:
    name: str
    bundles_applied: int
    updates_applied: int
    batches: int
    apply_s: float  # wall time inside store.apply (a worker thread, GIL released)
    duplicates: int
    gaps: int
    rejected: int
    forwarded: int
    records: int
    heads_equal: bool
    failure: str | None


@dataclass(slots=True)
class BenchResult:
    broker: str
    namespace: str
    queue_type: str
    quorum_replicas: int | None  # of each quorum queue (None: classic)
    publishers: int
    bundle_size: int
    prepare_s: float
    # Median 4 KiB write + fdatasync in the data directory before and after the run:
    # the floor under every durable commit (LMDB syncs twice per commit), which on a
    # shared or virtual disk varies a lot from minute to minute.
    fsync_ms_before: float
    fsync_ms_after: float
    load_before: float  # 1-minute load average when the run started (others' work)
    converged: bool
    digests_equal: bool
    tiers: list[TierFigures]
    throughput: ThroughputResult | None = None
    raw: RawResult | None = None
    raw_ratio: float | None = None  # e2e bytes/s over the raw ceiling's
    latency: LatencyResult | None = None
    targets: list[Target] = field(default_factory=list)
    profile: str | None = None

    @property
    def targets_met(self) -> bool:
        return all(t.met for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets_met"] = self.targets_met
        return data


def targets_of(result: BenchResult, options: BenchOptions) -> list[Target]:
    out: list[Target] = []
    if result.throughput is not None:
        big = options.bundle_size > TARGET_MAX_BUNDLE
        out.append(
            Target(
                "end-to-end throughput",
                result.throughput.updates_per_s,
                TARGET_UPDATES_PER_S,
                "updates/s",
                True,
                result.throughput.updates_per_s >= TARGET_UPDATES_PER_S and not big,
                f"bundles of {options.bundle_size} (target: ≤ {TARGET_MAX_BUNDLE})"
                + (": too large to count" if big else ""),
            )
        )
    if result.raw_ratio is not None:
        out.append(
            Target(
                "share of the raw ceiling's byte rate",
                result.raw_ratio,
                TARGET_RAW_RATIO,
                "×",
                True,
                result.raw_ratio >= TARGET_RAW_RATIO,
            )
        )
    if result.latency is not None:
        p99 = result.latency.latency.p99_ms
        paced = options.rate
        out.append(
            Target(
                "p99 publish → national commit",
                p99,
                TARGET_P99_MS,
                "ms",
                False,
                p99 <= TARGET_P99_MS and paced >= TARGET_PACED_RATE,
                f"paced at {paced:,.0f} updates/s (target at {TARGET_PACED_RATE:,.0f})",
            )
        )
    return out
