"""`jukisync bench` (jukisync.e2e_bench): the workload and the statistics without a
broker; a small run of the command through RabbitMQ. Timings are not checked (tests do
not time things): only that the report has its fields and the stores converged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from pathlib import Path

import aio_pika
import aiormq.exceptions
import msgspec
import pytest
from click.testing import CliRunner
from rich.console import Console

from jukisync.cli import bench as bench_cli
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.sim import synth
from jukisync.sim.bench import (
    BenchOptions,
    BenchReport,
    Bundle,
    Workload,
    bundle_id,
    interleave,
    make_workload,
    percentiles,
)
from jukisync.tier.assembly import national_queue_name
from jukisync.transport.amqp import bundle_queue_name
from jukisync.wire.messages import BundleBody, Envelope, encode

broker = pytest.mark.broker


def _options(tmp_path: Path, **overrides: object) -> BenchOptions:
    settings: dict[str, object] = {
        "publishers": 3,
        "updates": 600,
        "bundle_size": 100,
        "rate": 200.0,
        "latency_s": 1.0,
        "latency_bundle_size": 5,
    }
    settings.update(overrides)
    return BenchOptions(broker_url="amqp://unused/", data_dir=tmp_path, **settings)  # type: ignore[arg-type]


def _body(envelope: bytes) -> BundleBody:
    return msgspec.msgpack.decode(
        msgspec.msgpack.decode(envelope, type=Envelope).body, type=BundleBody
    )


def test_percentiles_interpolate_between_samples() -> None:
    p = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (p.samples, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms) == (100, 50.5, 90.1, 99.01, 100.0)
    assert percentiles([0.005]).p99_ms == 5.0
    assert percentiles([]).samples == 0


def test_the_workload_continues_each_chain_from_phase_to_phase(tmp_path: Path) -> None:
    workload = make_workload(_options(tmp_path))
    assert len(workload.origins) == 3 and workload.prefectures == ["35"]
    assert sum(b.updates for s in workload.throughput.values() for b in s) == 600
    assert sum(b.updates for s in workload.latency.values() for b in s) == 200
    assert not workload.preload
    for origin in workload.origins:
        bundles = [*workload.throughput.get(origin, []), *workload.latency.get(origin, [])]
        seq = 0
        for bundle in bundles:
            body = _body(bundle.envelope)
            assert body.origin == origin and body.first_seq == seq + 1
            assert bundle_id(bundle.envelope) == (origin, body.last_seq) == bundle.key
            seq = body.last_seq
        assert workload.heads[origin][0] == seq
    assert all(b.updates <= 100 for s in workload.throughput.values() for b in s)
    assert all(b.updates <= 5 for s in workload.latency.values() for b in s)


def test_latency_alone_loads_the_residents_first(tmp_path: Path) -> None:
    workload = make_workload(_options(tmp_path, mode="latency"))
    assert not workload.throughput
    assert sum(b.updates for s in workload.preload.values() for b in s) == 300  # residents
    assert sum(b.updates for s in workload.latency.values() for b in s) == 200


def test_interleaving_keeps_each_origin_in_chain_order() -> None:
    streams = {
        o: [Bundle(o, seq, 1, b"") for seq in range(1, n + 1)]
        for o, n in (("352012", 7), ("352021", 2), ("352039", 4))
    }
    order = interleave(streams)
    assert sorted(b.key for b in order) == sorted(b.key for s in streams.values() for b in s)
    for origin, bundles in streams.items():
        assert [b for b in order if b.origin == origin] == bundles
    # Spread over the whole list, not one origin after another.
    positions = [i for i, b in enumerate(order) if b.origin == "352021"]
    assert positions[0] < len(order) / 2 <= positions[1]


def test_bench_says_when_the_broker_is_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(
        main, ["bench", "--broker", f"amqp://guest:guest@127.0.0.1:{port}/"]
    )
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert "unreachable" in result.stderr
    assert CliRunner().invoke(main, ["bench", "--broker", "http://x/"]).exit_code == ExitCode.USAGE


async def _queue_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True
    finally:
        await connection.close()


@broker
def test_bench_runs_end_to_end_and_converges(broker_url: str) -> None:
    args = ["bench", "--broker", broker_url, "--json", "--publishers", "3", "--updates", "3000"]
    args += ["--bundle-size", "200", "--rate", "300", "--latency-seconds", "1", "--repeat", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitCode.OK, result.output
    whole = json.loads(result.stdout)
    assert whole["converged"] is True and whole["repeats"] == 1
    report = whole["runs"][0]
    assert report["converged"] is True and report["digests_equal"] is True
    assert {t["name"]: t["updates_applied"] for t in report["tiers"]} == {
        "centre-bench": 3_300,
        "national": 3_300,
    }
    assert all(t["heads_equal"] and t["failure"] is None for t in report["tiers"])
    throughput = report["throughput"]
    assert throughput["updates"] == 3_000 and throughput["updates_per_s"] > 0
    assert throughput["latency"]["samples"] == throughput["bundles"]
    assert set(throughput["usage"]) >= {"cpu_s", "apply_s", "batches", "wall_s"}
    raw = report["raw"]
    assert raw["bytes"] == throughput["bytes"] and raw["bytes_per_s"] > 0
    assert report["raw_ratio"] > 0
    latency = report["latency"]
    assert latency["updates"] == 300 and latency["latency"]["samples"] == latency["bundles"]
    assert {"p50_ms", "p99_ms"} <= set(latency["latency"])
    assert [t["name"] for t in report["targets"]] == [
        "end-to-end throughput",
        "share of the raw ceiling's byte rate",
        "p99 publish → national commit",
    ]
    assert all({"measured", "target", "met"} <= set(t) for t in report["targets"])
    # Nothing left behind on the broker.
    namespace = report["namespace"]
    prefectures = sorted({m.code[:2] for m in synth.MUNICIPALITIES[:3]})
    tier_queues = (national_queue_name("national"), bundle_queue_name("centre-bench", prefectures))
    for queue in (*tier_queues, "raw.hop1", "raw.hop2"):
        assert not asyncio.run(_queue_exists(broker_url, namespace + queue)), queue


@broker
def test_bench_latency_mode_alone(broker_url: str) -> None:
    args = ["bench", "--broker", broker_url, "--json", "--mode", "latency", "--publishers", "2"]
    args += ["--updates", "400", "--rate", "200", "--latency-seconds", "1"]
    args += ["--queue-type", "classic", "--repeat", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitCode.OK, result.output
    report = json.loads(result.stdout)["runs"][0]
    assert report["converged"] is True and report["queue_type"] == "classic"
    assert report["throughput"] is None and report["raw"] is None
    assert report["latency"]["updates"] == 200
    assert [t["name"] for t in report["targets"]] == ["p99 publish → national commit"]


def _garbled(workload: Workload, origin: str, index: int) -> Workload:
    """`workload` with the `index`th throughput bundle of `origin` validly signed by it
    but garbled (a U+FFFD in a name, the 2013 incident): the tiers halt that origin."""
    bundle = workload.throughput[origin][index]
    body = _body(bundle.envelope)
    garbled = msgspec.structs.replace(body.updates[0], name="萩\ufffd太郎")
    encoded = encode(msgspec.structs.replace(body, updates=[garbled, *body.updates[1:]]))
    pair = workload.key_pairs[origin]
    envelope = encode(Envelope(body=encoded, key_id=pair.key_id, sig=pair.sign(encoded)))
    workload.throughput[origin][index] = dataclasses.replace(bundle, envelope=envelope)
    return workload


@broker
def test_bench_fails_fast_naming_the_halted_origin(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused bundle halts its origin at the centre: national never commits the rest,
    # so the phase cannot complete. The run must say so at once rather than sit out its
    # --timeout (the test gives a long one: were it waited out, the message would be a
    # timeout's, without the origin's halt, and the test fails).
    halted: list[str] = []

    def workload_with_a_refused_bundle(options: BenchOptions) -> Workload:
        workload = make_workload(options)
        halted.append(workload.origins[1])
        return _garbled(workload, workload.origins[1], 2)

    monkeypatch.setattr(bench_cli, "make_workload", workload_with_a_refused_bundle)
    args = ["bench", "--broker", broker_url, "--mode", "throughput", "--no-raw", "--repeat", "1"]
    args += ["--publishers", "3", "--updates", "600", "--bundle-size", "50", "--timeout", "600"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitCode.FAILURE, result.output
    [origin] = halted
    message = result.stderr
    assert f"halted origin {origin}:" in message, message
    assert "U+FFFD" in message or "name" in message, message
    assert "not committed at national within" not in message


@broker
def test_bench_compares_brokers_given_in_turn(broker_url: str) -> None:
    # The default broker twice stands in for a single node and a cluster (the cluster
    # run is the README's, measured by hand): both rows, each with its own runs and
    # figures, the costs beside the first computed from the medians.
    args = ["bench", "--broker", broker_url, "--broker", broker_url, "--json", "--repeat", "2"]
    args += ["--publishers", "2", "--updates", "600", "--bundle-size", "100"]
    args += ["--rate", "200", "--latency-seconds", "1", "--latency-bundle-size", "5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitCode.OK, result.output
    whole = json.loads(result.stdout)
    assert whole["converged"] is True
    reports, rows = whole["reports"], whole["comparison"]
    raws: list[float] = []
    assert len(reports) == len(rows) == 2
    for report, row in zip(reports, rows, strict=True):
        assert report["repeats"] == row["runs"] == 2
        assert len({run["namespace"] for run in report["runs"]}) == 2  # fresh each run
        assert (row["nodes"], row["replicas"], row["queue_type"]) == (1, 1, "quorum")
        assert all(run["quorum_replicas"] == 1 for run in report["runs"])
        rates = sorted(run["throughput"]["updates_per_s"] for run in report["runs"])
        p99s = sorted(run["latency"]["latency"]["p99_ms"] for run in report["runs"])
        assert row["updates_per_s"] == sum(rates) / 2 and row["p99_ms"] == sum(p99s) / 2
        raws.append(sum(run["raw"]["bytes_per_s"] / 1e6 for run in report["runs"]) / 2)
        assert row["raw_mb_per_s"] == round(raws[-1], 1)
    first, second = rows
    assert first["throughput_cost"] == first["p99_cost"] == first["raw_cost"] == 1.0
    assert second["throughput_cost"] == round(first["updates_per_s"] / second["updates_per_s"], 2)
    assert second["p99_cost"] == round(second["p99_ms"] / first["p99_ms"], 2)
    assert second["raw_cost"] == round(raws[0] / raws[1], 2)
    # The text table: a row per broker, its costs as the JSON has them.
    console = Console(width=200, record=True)
    console.print(bench_cli._comparison([BenchReport.from_json(r) for r in reports]))
    cells = [line.split() for line in console.export_text().splitlines() if "127.0.0.1" in line]
    assert len(cells) == 2 and cells[0][-3:] == ["1.00×"] * 3, cells
    costs = [f"{second[c]:.2f}×" for c in ("throughput_cost", "p99_cost", "raw_cost")]
    assert cells[1][-3:] == costs, cells
    assert CliRunner().invoke(main, [*args[:3], "--broker", "http://x/"]).exit_code == (
        ExitCode.USAGE
    )
