"""`jukisync bench`: the end-to-end benchmark over RabbitMQ, beside its raw ceiling."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import cast

import aiormq.exceptions
import click
import uvloop
from rich import box
from rich.console import Console
from rich.table import Table

from jukisync.cli.common import fail, fresh_data_dir
from jukisync.exitcodes import ExitCode
from jukisync.sim.bench import (
    TARGET_PACED_RATE,
    BenchError,
    BenchOptions,
    BenchResult,
    Mode,
    Percentiles,
    PhaseUsage,
    Target,
    make_workload,
    probe_broker,
    run_bench,
)
from jukisync.transport.amqp import QueueType, split_urls
from jukisync.transport.base import TransportUnavailable

__all__ = ["command"]

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
_UNREACHABLE = (
    TransportUnavailable,
    aiormq.exceptions.AMQPConnectionError,
    ConnectionError,
    TimeoutError,
)


def _ms(p: Percentiles) -> str:
    if not p.samples or math.isnan(p.p50_ms):
        return "-"
    return f"p50 {p.p50_ms:,.1f} · p99 {p.p99_ms:,.1f} · max {p.max_ms:,.1f} ms"


def _mb(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:,.1f} MB/s"


def _usage(u: PhaseUsage) -> str:
    applies = ", ".join(
        f"{tier} {u.apply_s[tier]:.2f} s in {u.batches[tier]} batches" for tier in u.apply_s
    )
    broker = f"; broker CPU {u.broker_cpu_s:.2f} s" if u.broker_cpu_s is not None else ""
    disk = (
        f"; disk (all processes) {u.disk_written_mb:,.0f} MB written, busy {u.disk_busy_pct:.0f}%"
        if u.disk_written_mb is not None and u.disk_busy_pct is not None
        else ""
    )
    return (
        f"wall {u.wall_s:.2f} s; this process CPU {u.cpu_s:.2f} s{broker}{disk}; "
        f"store.apply: {applies}"
    )


def _target_row(t: Target) -> tuple[str, str, str, str, str]:
    if t.unit == "×":
        measured, goal = f"{t.measured:.2f}×", f"≥ {t.target:.2f}×"
    elif t.higher_is_better:
        measured, goal = f"{t.measured:,.0f} {t.unit}", f"≥ {t.target:,.0f} {t.unit}"
    else:
        measured, goal = f"{t.measured:,.1f} {t.unit}", f"≤ {t.target:,.0f} {t.unit}"
    verdict = "[green]met[/]" if t.met else "[red]MISSED[/]"
    return t.name, measured, goal, verdict, t.note


def _render(result: BenchResult, console: Console) -> None:
    say = console.print
    say(
        f"jukisync bench: {result.publishers} publishers → aggregator → national over "
        f"{result.broker} ({result.queue_type} queues, persistent, publisher confirms, "
        "stores committed and synced)",
        highlight=False,
    )
    say(
        f"signed bundles prepared in {result.prepare_s:.1f} s (not timed); disk fdatasync "
        f"{result.fsync_ms_before:.2f} ms before, {result.fsync_ms_after:.2f} ms after; "
        f"load average {result.load_before:.2f} at start",
        highlight=False,
    )
    phases = Table(box=box.SIMPLE_HEAD)
    phases.add_column("phase", no_wrap=True)
    phases.add_column("work", justify="right")
    phases.add_column("rate", justify="right")
    phases.add_column("publish → national commit")
    if (raw := result.raw) is not None:
        phases.add_row(
            "raw ceiling (aio-pika, 2 hops, no processing)",
            f"{raw.messages:,} msgs · {raw.bytes / 1e6:,.1f} MB in {raw.elapsed_s:.2f} s",
            _mb(raw.bytes_per_s),
            "",
        )
    if (tp := result.throughput) is not None:
        phases.add_row(
            f"throughput (flat out, bundles of {result.bundle_size:,})",
            f"{tp.updates:,} updates in {tp.elapsed_s:.2f} s",
            f"{tp.updates_per_s:,.0f} updates/s · {_mb(tp.bytes_per_s)}",
            _ms(tp.latency),
        )
    if (lat := result.latency) is not None:
        phases.add_row(
            f"latency (paced, bundles of {lat.bundle_size:,})",
            f"{lat.updates:,} updates in {lat.duration_s:.1f} s",
            f"{lat.achieved_rate:,.0f} updates/s",
            _ms(lat.latency),
        )
    say(phases)
    if tp is not None:
        say(f"[bold]throughput phase[/]: {_usage(tp.usage)}", highlight=False)
        say(
            f"  publishes all confirmed after {tp.publish_s:.2f} s; aggregator committed "
            f"the last bundle after {tp.aggregator_s:.2f} s, national after {tp.elapsed_s:.2f} s",
            highlight=False,
        )
    if lat is not None:
        say(f"[bold]latency phase[/]: {_usage(lat.usage)}", highlight=False)
        say(f"  publish → aggregator commit: {_ms(lat.aggregator_latency)}", highlight=False)
    targets = Table(title="targets (2 cores, broker on the same machine)", box=box.SIMPLE_HEAD)
    for header in ("", "measured", "target", "", "note"):
        targets.add_column(header)
    for t in result.targets:
        targets.add_row(*_target_row(t))
    say(targets)
    tiers = ", ".join(
        f"{t.name}: {t.updates_applied:,} updates, {t.records:,} records, dup {t.duplicates}, "
        f"gap {t.gaps}, rej {t.rejected}"
        for t in result.tiers
    )
    verdict = "[bold green]CONVERGED[/]" if result.converged else "[bold red]NOT CONVERGED[/]"
    say(f"{verdict}: {tiers}", highlight=False)


@click.command(
    "bench",
    epilog=f"""\b
Examples:
  jukisync bench                                   # all phases, about a minute
  jukisync bench --mode throughput --updates 1000000
  jukisync bench --mode latency --rate 1000 --latency-seconds 30
  jukisync bench --queue-type classic --json | jq .targets
\b
Needs a RabbitMQ (default {DEFAULT_BROKER}, or $JUKISYNC_AMQP_URL); everything is
declared in a namespace of its own and removed at the end.
""",
)
@click.option(
    "--broker",
    metavar="URL",
    default=lambda: os.environ.get("JUKISYNC_AMQP_URL") or DEFAULT_BROKER,
    show_default="$JUKISYNC_AMQP_URL or " + DEFAULT_BROKER,
    help="The RabbitMQ to run through; a cluster's nodes as URL1,URL2,URL3 (each client "
    "fails over between them).",
)
@click.option(
    "--mode",
    type=click.Choice(["all", "throughput", "latency"]),
    default="all",
    show_default=True,
    help="throughput: flat out, with the raw ceiling; latency: paced at --rate.",
)
@click.option(
    "--publishers",
    type=click.IntRange(1, 32),
    default=8,
    show_default=True,
    help="Municipalities publishing, each on its own connection.",
)
@click.option(
    "--updates",
    type=click.IntRange(min=2),
    default=500_000,
    show_default=True,
    help="Updates of the throughput phase (half load residents, half change them).",
)
@click.option(
    "--bundle-size",
    type=click.IntRange(1, 10_000),
    default=1_000,
    show_default=True,
    help="Updates per bundle in the throughput phase.",
)
@click.option(
    "--queue-type",
    type=click.Choice(["quorum", "classic"]),
    default="quorum",
    show_default=True,
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=TARGET_PACED_RATE,
    show_default=True,
    help="Latency phase: updates/s over all publishers.",
)
@click.option(
    "--latency-seconds",
    "latency_s",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Latency phase: how long it publishes.",
)
@click.option(
    "--latency-bundle-size",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Latency phase: updates per bundle.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Bundles in flight (awaiting confirms) per publisher.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Unacked deliveries per consumer (nodes, raw relay and sink).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Deliveries applied per store transaction.",
)
@click.option("--no-raw", is_flag=True, help="Skip the raw ceiling.")
@click.option("--seed", type=int, default=1, show_default=True, help="Synthetic data seed.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds a phase may take before the run is declared failed.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the stores go (kept). Default: a temporary directory, removed at the end.",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a cProfile of the event loop during the throughput phase to this file.",
)
@click.option(
    "--check-targets", is_flag=True, help="Exit 1 when a target is missed (for CI on real iron)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(
    broker: str,
    mode: str,
    publishers: int,
    updates: int,
    bundle_size: int,
    queue_type: str,
    rate: float,
    latency_s: float,
    latency_bundle_size: int,
    window: int,
    prefetch: int,
    max_batch: int,
    no_raw: bool,
    seed: int,
    timeout_s: float,
    data_dir: Path | None,
    profile: Path | None,
    check_targets: bool,
    as_json: bool,
) -> None:
    """Benchmark the replication end to end through RabbitMQ: N publishers → an
    aggregation centre → the national centre, persistent messages, publisher confirms,
    both stores committed. Reports updates/s and publish → national commit latency
    (p50/p99), beside the raw ceiling (aio-pika carrying the same bytes over the same
    two hops with no processing) and the targets of the design.

    Exits 0 when the run completed and both stores converged (whether or not the
    targets were met, unless --check-targets).
    """
    if not all(u.startswith(("amqp://", "amqps://")) for u in broker.split(",")):
        fail(
            "bench", ExitCode.USAGE, f"--broker must be an amqp:// or amqps:// URL, got {broker!r}"
        )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    err = Console(stderr=True)
    chatty = not as_json and err.is_terminal

    def progress(message: str) -> None:
        if chatty:
            err.print(f"[dim]… {message}[/]", highlight=False)

    try:
        for url in split_urls(broker):
            asyncio.run(probe_broker(url))
    except _UNREACHABLE as exc:
        fail("bench", ExitCode.UNAVAILABLE, f"broker unreachable at --broker: {exc}")
    directory, temporary = fresh_data_dir("bench", data_dir)
    try:
        options = BenchOptions(
            broker_url=broker,
            data_dir=directory,
            publishers=publishers,
            updates=updates,
            bundle_size=bundle_size,
            queue_type=cast(QueueType, queue_type),
            mode=cast(Mode, mode),
            raw=not no_raw,
            rate=rate,
            latency_s=latency_s,
            latency_bundle_size=latency_bundle_size,
            window=window,
            prefetch=prefetch,
            max_batch=max_batch,
            seed=seed,
            timeout_s=timeout_s,
            profile=profile,
        )
        progress("generating and signing the synthetic bundles (not timed)")
        workload = make_workload(options)
        result = uvloop.run(run_bench(options, workload, progress))
    except _UNREACHABLE as exc:
        fail("bench", ExitCode.UNAVAILABLE, f"lost the broker: {exc}")
    except BenchError as exc:
        fail("bench", ExitCode.FAILURE, str(exc))
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=160)  # piped: rich would assume 80 columns and clip
        _render(result, out)
    if not result.converged:
        sys.exit(ExitCode.FAILURE)
    if check_targets and not result.targets_met:
        sys.exit(ExitCode.FAILURE)
    sys.exit(ExitCode.OK)
