"""`jukisync bench`: the end-to-end benchmark over RabbitMQ, beside its raw ceiling."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import cast

import aiormq.exceptions
import click
import uvloop
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from jukisync.cli.common import fail, fresh_data_dir
from jukisync.exitcodes import ExitCode
from jukisync.sim.bench import (
    TARGET_PACED_RATE,
    BenchError,
    BenchOptions,
    BenchReport,
    BenchResult,
    Mode,
    PhaseUsage,
    Target,
    make_workload,
    probe_broker,
    run_bench,
)
from jukisync.sim.bench.compare import compare, comparison_json
from jukisync.sim.benchenv import Environment
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


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


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


def _value(unit: str, value: float) -> str:
    if unit == "×":
        return f"{value:.2f}×"
    if unit in ("ms", "MB/s"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _number_column(table: Table, header: str) -> None:
    # Numbers never wrap: the text columns give way first (and a piped console is wide).
    table.add_column(header, justify="right", no_wrap=True)


def _phases(report: BenchReport) -> Table:
    """One row per phase and run; fits 80 columns."""
    loaded = ", loaded machine" if report.environment.loaded else ""
    title = f"phases (publish → national commit{loaded})"
    table = Table(box=box.SIMPLE_HEAD, title=title, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("phase", overflow="fold")
    for header in ("amount", "s", "per s", "MB/s", "p50 ms", "p99 ms"):
        _number_column(table, header)
    for i, run in enumerate(report.runs, 1):
        if (raw := run.raw) is not None:
            table.add_row(
                str(i),
                "raw ceiling",
                f"{raw.messages:,}",
                f"{raw.elapsed_s:.2f}",
                f"{raw.messages_per_s:,.0f}",
                f"{raw.bytes_per_s / 1e6:,.1f}",
                "",
                "",
            )
        if (tp := run.throughput) is not None:
            table.add_row(
                str(i),
                "throughput",
                f"{tp.updates:,}",
                f"{tp.elapsed_s:.2f}",
                f"{tp.updates_per_s:,.0f}",
                f"{tp.bytes_per_s / 1e6:,.1f}",
                _ms(tp.latency.p50_ms),
                _ms(tp.latency.p99_ms),
            )
        if (lat := run.latency) is not None:
            table.add_row(
                str(i),
                "latency",
                f"{lat.updates:,}",
                f"{lat.duration_s:.2f}",
                f"{lat.achieved_rate:,.0f}",
                "",
                _ms(lat.latency.p50_ms),
                _ms(lat.latency.p99_ms),
            )
    return table


def _spread(report: BenchReport) -> Table:
    loaded = ", loaded machine" if report.environment.loaded else ""
    title = f"spread over {len(report.runs)} run(s){loaded}"
    table = Table(box=box.SIMPLE_HEAD, title=title)
    table.add_column("figure", overflow="fold")
    table.add_column("unit", no_wrap=True)
    for header in ("min", "median", "max"):
        _number_column(table, header)
    for s in report.spread:
        table.add_row(
            s.figure,
            s.unit,
            _value(s.unit, s.min),
            _value(s.unit, s.median),
            _value(s.unit, s.max),
        )
    return table


def _targets(report: BenchReport) -> tuple[Table, list[str]]:
    """Each target's median over the runs and in how many runs it was met."""
    by_name: dict[str, list[Target]] = {}
    for run in report.runs:
        for t in run.targets:
            by_name.setdefault(t.name, []).append(t)
    table = Table(box=box.SIMPLE_HEAD, title="targets (2 cores, broker on the same machine)")
    table.add_column("target", overflow="fold")
    table.add_column("unit", no_wrap=True)
    for header in ("median", "goal", "met"):
        _number_column(table, header)
    notes: list[str] = []
    for name, ts in by_name.items():
        first = ts[0]
        median = statistics.median(t.measured for t in ts)
        goal = ("≥ " if first.higher_is_better else "≤ ") + _value(first.unit, first.target)
        met = sum(t.met for t in ts)
        colour = "green" if met == len(ts) else "red"
        table.add_row(
            name, first.unit, _value(first.unit, median), goal, f"[{colour}]{met}/{len(ts)}[/]"
        )
        if first.note and first.note not in notes:
            notes.append(f"{name}: {first.note}")
    return table, notes


def _render(report: BenchReport, console: Console) -> None:
    say = functools.partial(console.print, highlight=False)
    first = report.runs[0]
    say(
        f"jukisync bench: {first.publishers} publishers → aggregator → national over "
        f"{first.broker} ({first.queue_type} queues, persistent, publisher confirms, "
        "stores committed and synced)"
    )
    say(report.environment.describe())
    for warning in report.warnings:
        say(f"[bold yellow]WARNING[/] {warning}")
    say(_phases(report))
    if len(report.runs) > 1:
        say(_spread(report))
    for i, run in enumerate(report.runs, 1):
        say(
            f"run {i}: signed bundles prepared in {run.prepare_s:.1f} s (not timed); disk "
            f"fdatasync {run.fsync_ms_before:.2f} ms before, {run.fsync_ms_after:.2f} ms after"
        )
        if (tp := run.throughput) is not None:
            say(f"  [bold]throughput[/]: {_usage(tp.usage)}")
            say(
                f"  publishes all confirmed after {tp.publish_s:.2f} s; aggregator committed "
                f"the last bundle after {tp.aggregator_s:.2f} s, national after "
                f"{tp.elapsed_s:.2f} s"
            )
        if (lat := run.latency) is not None:
            say(f"  [bold]latency[/]: {_usage(lat.usage)}")
            p = lat.aggregator_latency
            say(f"  publish → aggregator commit: p50 {_ms(p.p50_ms)} · p99 {_ms(p.p99_ms)} ms")
    targets, notes = _targets(report)
    say(targets)
    for note in notes:
        say(f"  {note}")
    for i, run in enumerate(report.runs, 1):
        tiers = ", ".join(
            f"{t.name}: {t.updates_applied:,} updates, {t.records:,} records, dup "
            f"{t.duplicates}, gap {t.gaps}, rej {t.rejected}"
            for t in run.tiers
        )
        verdict = "[bold green]CONVERGED[/]" if run.converged else "[bold red]NOT CONVERGED[/]"
        say(f"run {i} {verdict}: {tiers}")


def _comparison(reports: list[BenchReport]) -> Table:
    """The brokers side by side (medians over their runs) and each one's cost beside
    the first (≥ 1: dearer): the first's updates/s ÷ its, its paced p99 ÷ the
    first's, the first's raw ceiling ÷ its."""
    table = Table(box=box.SIMPLE_HEAD, title="brokers compared (medians; cost beside the first)")
    table.add_column("broker", overflow="fold")
    headers = ("nodes", "replicas", "updates/s", "paced p99 ms", "raw MB/s")
    for header in (*headers, "throughput cost", "p99 cost", "raw cost"):
        _number_column(table, header)

    def cell(unit: str, value: float | None) -> str:
        return "-" if value is None else _value(unit, value)

    for row in compare(reports):
        table.add_row(
            row.broker,
            str(row.nodes),
            "-" if row.replicas is None else str(row.replicas),
            cell("updates/s", row.updates_per_s),
            cell("ms", row.p99_ms),
            cell("MB/s", row.raw_mb_per_s),
            cell("×", row.throughput_cost),
            cell("×", row.p99_cost),
            cell("×", row.raw_cost),
        )
    return table


def output_console() -> Console:
    """stdout; when piped, wide enough that rich never wraps or cuts a table (it would
    assume 80 columns)."""
    out = Console()
    return out if out.is_terminal else Console(width=1000)


class BenchProgress:
    """Progress with an ETA on a terminal (rich, on stderr); silent otherwise. Called
    with what is starting; each call ends the step before it."""

    def __init__(self, console: Console | None, options: BenchOptions, repeat: int) -> None:
        steps = 1 + int(options.runs_throughput and options.raw)
        steps += int(options.runs_throughput) + int(options.runs_latency)
        self.run = 0
        self._repeat = repeat
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if console is not None
            else None
        )
        self._task = (
            self._progress.add_task("bench", total=1 + repeat * steps)
            if self._progress is not None
            else None
        )
        self._started = False

    def __enter__(self) -> BenchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, message: str) -> None:
        if self._progress is None or self._task is None:
            return
        if self._started:
            self._progress.advance(self._task)
        self._started = True
        run = f"run {self.run}/{self._repeat}: " if self.run else ""
        self._progress.update(self._task, description=f"{run}{message}")


@click.command(
    "bench",
    epilog=f"""\b
Examples:
  jukisync bench                                   # all phases, about a minute
  jukisync bench --mode throughput --updates 1000000
  jukisync bench --mode latency --rate 1000 --latency-seconds 30
  jukisync bench --queue-type classic --json | jq .targets
  jukisync bench --updates 20000 --broker amqp://guest:guest@127.0.0.1:5672/ \\
      --broker "$(scripts/rabbitmq-cluster urls)"   # one node, then a 3-node cluster
\b
Needs a RabbitMQ (default {DEFAULT_BROKER}, or $JUKISYNC_AMQP_URL); everything is
declared in a namespace of its own and removed at the end.
""",
)
@click.option(
    "--broker",
    "brokers",
    metavar="URL[,URL...]",
    multiple=True,
    default=lambda: [os.environ.get("JUKISYNC_AMQP_URL") or DEFAULT_BROKER],
    show_default="$JUKISYNC_AMQP_URL or " + DEFAULT_BROKER,
    help="The RabbitMQ to run through; a cluster's nodes as URL1,URL2,URL3 (each client "
    "fails over between them; quorum queues get one replica per address). Repeated: "
    "each broker in turn, run after run, compared with the first.",
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
@click.option(
    "--max-batch-updates",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Updates applied per store transaction (a larger bundle goes alone).",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Runs of every phase (fresh stores and queues each); the report gives the "
    "spread (min/median/max) of each figure.",
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
    brokers: tuple[str, ...],
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
    max_batch_updates: int,
    repeat: int,
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
    for broker in brokers:
        if not all(u.startswith(("amqp://", "amqps://")) for u in broker.split(",")):
            fail(
                "bench",
                ExitCode.USAGE,
                f"--broker must be an amqp:// or amqps:// URL, got {broker!r}",
            )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    err = Console(stderr=True)
    chatty = not as_json and err.is_terminal
    try:
        # Every address must answer; the first's version is recorded.
        versions = [asyncio.run(probe_broker(u)) for b in brokers for u in split_urls(b)]
        rabbitmq = versions[0]
    except _UNREACHABLE as exc:
        fail("bench", ExitCode.UNAVAILABLE, f"broker unreachable at --broker: {exc}")
    environment = Environment.capture(rabbitmq=rabbitmq)
    directory, temporary = fresh_data_dir("bench", data_dir)
    runs: list[list[BenchResult]] = [[] for _ in brokers]  # per --broker, in order
    try:
        options = BenchOptions(
            broker_url=brokers[0],
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
            max_batch_updates=max_batch_updates,
            seed=seed,
            timeout_s=timeout_s,
            profile=profile,
        )
        total = repeat * len(brokers)
        with BenchProgress(err if chatty else None, options, total) as progress:
            progress("generating and signing the synthetic bundles (not timed)")
            workload = make_workload(options)
            # Each run on fresh stores (the same signed workload, replayed); several
            # brokers take turns, so a change in the machine's load hits them alike.
            for run in range(1, repeat + 1):
                for b, broker in enumerate(brokers, 1):
                    run_dir = directory / (f"run-{run}" if len(brokers) == 1 else f"run-{run}-{b}")
                    run_dir.mkdir()
                    run_options = dataclasses.replace(options, broker_url=broker, data_dir=run_dir)
                    progress.run += 1
                    runs[b - 1].append(uvloop.run(run_bench(run_options, workload, progress)))
    except _UNREACHABLE as exc:
        fail("bench", ExitCode.UNAVAILABLE, f"lost the broker: {exc}")
    except BenchError as exc:
        fail("bench", ExitCode.FAILURE, str(exc))
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    environment.finish()
    reports = [BenchReport.of(environment, r) for r in runs]
    if as_json:
        whole = reports[0].to_json() if len(reports) == 1 else comparison_json(reports)
        click.echo(json.dumps(whole, ensure_ascii=False))
    else:
        console = output_console()
        for report in reports:
            _render(report, console)
        if len(reports) > 1:
            console.print(_comparison(reports))
    for warning in reports[0].warnings if as_json else ():  # the text report has them
        click.echo(f"jukisync bench: warning: {warning}", err=True)
    if not all(r.converged for r in reports):
        sys.exit(ExitCode.FAILURE)
    if check_targets and not all(r.targets_met for r in reports):
        sys.exit(ExitCode.FAILURE)
    sys.exit(ExitCode.OK)
