"""Several brokers in one benchmark (`jukisync bench --broker A --broker B`): each one's
median figures side by side, and what each costs beside the first (the baseline) as a
ratio, e.g. a three-node cluster with quorum queues of three replicas beside one node."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

from jukisync.sim.bench.report import BenchReport


@dataclass(frozen=True, slots=True)
class Compared:
    """One broker's medians over its runs; the costs are beside the baseline's (≥ 1
    means dearer: baseline updates/s ÷ these, these p99 ÷ baseline p99, baseline raw
    MB/s ÷ these). The raw ceiling shows the broker's own cost, which end to end may
    hide behind the stores' synced commits."""

    broker: str  # the addresses, passwords removed
    nodes: int  # addresses given
    queue_type: str
    replicas: int | None  # of each quorum queue (None: classic)
    runs: int
    updates_per_s: float | None  # throughput phase
    p99_ms: float | None  # publish → national commit, paced (latency phase)
    raw_mb_per_s: float | None  # the raw ceiling: the broker alone, no stores
    throughput_cost: float | None
    p99_cost: float | None
    raw_cost: float | None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 2)


def compare(reports: list[BenchReport]) -> list[Compared]:
    """One row per report (a broker), in order; the first is the baseline."""
    medians = [
        (
            _median([r.throughput.updates_per_s if r.throughput else None for r in rep.runs]),
            _median([r.latency.latency.p99_ms if r.latency else None for r in rep.runs]),
            _median([r.raw.bytes_per_s / 1e6 if r.raw else None for r in rep.runs]),
        )
        for rep in reports
    ]
    base_rate, base_p99, base_raw = medians[0]
    rows = []
    for report, (rate, p99, raw) in zip(reports, medians, strict=True):
        first = report.runs[0]
        rows.append(
            Compared(
                broker=first.broker,
                nodes=len(first.broker.split(",")),
                queue_type=first.queue_type,
                replicas=first.quorum_replicas,
                runs=len(report.runs),
                updates_per_s=rate,
                p99_ms=p99,
                raw_mb_per_s=None if raw is None else round(raw, 1),
                throughput_cost=_ratio(base_rate, rate),
                p99_cost=_ratio(p99, base_p99),
                raw_cost=_ratio(base_raw, raw),
            )
        )
    return rows


def comparison_json(reports: list[BenchReport]) -> dict[str, Any]:
    """The whole comparison: the rows, then each broker's full report."""
    return {
        "comparison": [dataclasses.asdict(row) for row in compare(reports)],
        "converged": all(r.converged for r in reports),
        "reports": [r.to_json() for r in reports],
    }
