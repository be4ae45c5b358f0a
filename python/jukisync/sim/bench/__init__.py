"""The end-to-end benchmark over RabbitMQ (`jukisync bench`, issue 4).

N publishers → one aggregation centre → the national centre, all in this process,
through a real RabbitMQ: persistent messages, publisher confirms, manual acks after
the stores committed (durable LMDB, synced commits). The tier nodes are the real
`TierNode`s on the real `AmqpTransport`; the publishers publish real signed, chained
bundles of a synthetic population and change stream (`jukisync.synth`), generated and
signed before any clock starts (the outbox and signing of `Publisher` are not timed).

Phases, in one run and one namespace of the broker (removed at the end):

- **raw ceiling**: aio-pika alone carries the very bytes of the throughput phase over
  the same two hops (publish; consume and republish; consume), with the same queue
  type, persistence, confirms, prefetch and connections, and no processing at all;
- **throughput**: the publishers publish flat out (`window` bundles in flight each);
  updates/s and bytes/s from the first publish to the national commit of the last
  bundle, beside the raw ceiling's byte rate;
- **latency**: the publishers publish paced at `rate` updates/s in total (small
  bundles, evenly spread); p50/p99 of publish → national commit per bundle.

Commit times are taken where the contract puts them: a node acks a delivery only after
its batch committed (DESIGN.md §3), so the tier transports here are wrapped to note
when each bundle (origin, last seq) is acked. At the end both stores must hold every
origin's chain up to its head, with equal digests.

Modules: `options` (what to run, the targets), `workload` (keys and signed bundles),
`timing` (commit times via wrapped transports, windowed publishing), `ceiling` (the raw
aio-pika ceiling), `accounting` (CPU and disk from /proc), `results` (percentiles,
figures, targets), `report` (the environment, repeated runs, their spread, warnings),
`compare` (several brokers side by side, the cost of each beside the first), `run`
(the nodes and the phases). The names below are importable
from `jukisync.sim.bench`.
"""

from __future__ import annotations

from jukisync.sim.bench.options import (
    CENTRE,
    NATIONAL,
    TARGET_MAX_BUNDLE,
    TARGET_P99_MS,
    TARGET_PACED_RATE,
    TARGET_RAW_RATIO,
    TARGET_UPDATES_PER_S,
    BenchError,
    BenchOptions,
    Mode,
)
from jukisync.sim.bench.report import BenchReport, Spread
from jukisync.sim.bench.results import (
    BenchResult,
    LatencyResult,
    Percentiles,
    PhaseUsage,
    RawResult,
    Target,
    ThroughputResult,
    TierFigures,
    percentiles,
)
from jukisync.sim.bench.run import probe_broker, run_bench
from jukisync.sim.bench.timing import bundle_id
from jukisync.sim.bench.workload import Bundle, Workload, interleave, make_workload

__all__ = [
    "CENTRE",
    "NATIONAL",
    "TARGET_MAX_BUNDLE",
    "TARGET_P99_MS",
    "TARGET_PACED_RATE",
    "TARGET_RAW_RATIO",
    "TARGET_UPDATES_PER_S",
    "BenchError",
    "BenchOptions",
    "BenchReport",
    "BenchResult",
    "Bundle",
    "LatencyResult",
    "Mode",
    "Percentiles",
    "PhaseUsage",
    "RawResult",
    "Spread",
    "Target",
    "ThroughputResult",
    "TierFigures",
    "Workload",
    "bundle_id",
    "interleave",
    "make_workload",
    "percentiles",
    "probe_broker",
    "run_bench",
]
