"""The end-to-end benchmark through RabbitMQ (issue 4), as `jukisync bench` runs it:
N publishers → aggregator → national, persistent messages, publisher confirms, both
stores committed; beside the raw ceiling (aio-pika carrying the same bytes over the same
two hops with no processing) measured in the same run.

Needs a broker: `JUKISYNC_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/); skipped
with the reason without one, failed with `JUKISYNC_REQUIRE_BROKER=1`. Sizes:

    JUKISYNC_BENCH_E2E_UPDATES      throughput phase updates (default 500,000)
    JUKISYNC_BENCH_E2E_PUBLISHERS   publishers (default 8)
    JUKISYNC_BENCH_E2E_LATENCY_S    seconds of the latency phase at 1,000 updates/s (15)

One run (it is long, and its phases depend on each other), not pytest-benchmark rounds;
the figures go to the session summary with `report()`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import uvloop

from benchfixtures import report
from jukisync.sim.bench import BenchOptions, BenchResult, make_workload, probe_broker, run_bench

UPDATES = int(os.environ.get("JUKISYNC_BENCH_E2E_UPDATES", "500000"))
PUBLISHERS = int(os.environ.get("JUKISYNC_BENCH_E2E_PUBLISHERS", "8"))
LATENCY_S = float(os.environ.get("JUKISYNC_BENCH_E2E_LATENCY_S", "15"))

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def broker_url() -> str:
    url = os.environ.get("JUKISYNC_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/"
    try:
        asyncio.run(probe_broker(url, timeout=3))
    except Exception as exc:
        message = f"RabbitMQ not reachable ({type(exc).__name__}: {exc}); set JUKISYNC_AMQP_URL"
        if os.environ.get("JUKISYNC_REQUIRE_BROKER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture(scope="module")
def result(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    options = BenchOptions(
        broker_url=broker_url,
        data_dir=Path(tmp_path_factory.mktemp("e2e")),
        publishers=PUBLISHERS,
        updates=UPDATES,
        latency_s=LATENCY_S,
    )
    workload = make_workload(options)
    return uvloop.run(run_bench(options, workload))


def test_end_to_end_converges(result: BenchResult) -> None:
    assert result.converged, [t for t in result.tiers if not t.heads_equal or t.failure]


def test_throughput_beside_the_raw_ceiling(result: BenchResult) -> None:
    assert result.throughput is not None and result.raw is not None
    report("e2e_updates", result.throughput.updates_per_s, "updates/s end to end")
    report("e2e_bytes", result.throughput.bytes_per_s, "bytes/s end to end")
    report("raw_bytes", result.raw.bytes_per_s, "bytes/s raw aio-pika, 2 hops")


def test_latency_paced(result: BenchResult) -> None:
    assert result.latency is not None
    # report() prints per-second figures; a latency reads as "milliseconds" here.
    report("e2e_p50_ms", result.latency.latency.p50_ms, "ms p50 publish → national")
    report("e2e_p99_ms", result.latency.latency.p99_ms, "ms p99 publish → national")
    for target in result.targets:
        print(f"{target.name}: {target.measured:,.2f} {target.unit} (target {target.target:,g})")
