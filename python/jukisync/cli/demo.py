"""`jukisync demo`: the whole network in one process, and whether it converged."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as Bars
from rich.table import Table
from rich.text import Text

from jukisync.cli.common import fail, fresh_data_dir
from jukisync.exitcodes import ExitCode
from jukisync.sim.demo import DemoOptions, DemoResult, Progress, run_demo
from jukisync.sim.drills import DRILL_SIZE, SCENARIOS, DrillOptions, DrillResult, run_drill
from jukisync.transport.base import TransportUnavailable

__all__ = ["command"]

T = TypeVar("T")


def _bars(console: Console) -> tuple[Bars, Callable[[Progress], None]]:
    bars = Bars(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(p: Progress) -> None:
        rows = {
            "municipalities (published)": p.published,
            **{f"{name}": applied for name, applied in p.applied.items()},
        }
        for label, done in rows.items():
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=p.total)
            bars.update(tasks[label], completed=done, total=p.total)

    return bars, update


def _yes(ok: bool) -> str:
    return "[green]equal[/]" if ok else "[red]DIFFERENT[/]"


_INTRO = """\
住基ネット (Juki-net) links Japan's resident registers. Each municipality (市区町村) keeps
its residents' records (本人確認情報) and sends every change, signed with its own key
and chained to the one before, to the aggregation centres; they check and apply it,
attest it and forward it to the national centre. Two centres serve every prefecture
(相互補完: each backs the other up), so nothing stops when one is down."""


def _render(result: DemoResult, console: Console, kept: bool) -> None:
    console.print(_INTRO, highlight=False)
    console.print(f"[bold]network:[/] {result.transport}", highlight=False)
    table = Table(
        title="municipalities → 2 aggregation centres (相互補完) → national",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("tier", no_wrap=True)
    for header in ("updates", "bundles", "records", "dup", "gap", "rej"):
        table.add_column(header, justify="right")
    table.add_column("heads")
    table.add_column("heard", justify="right")
    table.add_column("apply/s", justify="right")
    for t in result.tiers:
        table.add_row(
            t.name,
            f"{t.updates_applied:,}",
            f"{t.bundles_applied:,}",
            f"{t.records:,}",
            f"{t.duplicates:,}",
            f"{t.gaps:,}",
            f"{t.security_events + t.halts:,}",
            _yes(t.heads_equal),
            f"{t.heads_heard:,}",
            f"{result.throughput.get(t.name, 0.0):,.0f}",
        )
    console.print(
        f"{result.origins} municipalities published {result.published:,} updates", highlight=False
    )
    console.print(table)
    digests = Table(title="digests of active records per prefecture", box=box.SIMPLE_HEAD)
    digests.add_column("prefecture")
    for t in result.tiers:
        digests.add_column(t.name)
    digests.add_column("all tiers")
    for pref in result.prefectures:
        digests.add_row(
            f"{pref} {result.prefecture_names.get(pref, '')}",
            *(t.digests[pref][:12] for t in result.tiers),
            _yes(result.digests_equal[pref]),
        )
    console.print(digests)
    console.print(f"centres agree with each other: {_yes(result.centres_agree)}")
    console.print(_EXPLAIN, highlight=False)
    for t in result.tiers:
        for problem in t.inconsistencies:
            console.print(f"[red]{t.name} inconsistent[/] {problem}", highlight=False)
    verdict = "[bold green]CONVERGED[/]" if result.converged else "[bold red]NOT CONVERGED[/]"
    rate = result.updates / max(result.elapsed_s, 1e-9)
    console.print(
        f"{verdict}: {result.updates:,} updates in {result.elapsed_s:.1f} s "
        f"({rate:,.0f} updates/s end to end)",
        highlight=False,
    )
    if kept and result.sample_code:
        console.print(
            f"try: jukisync lookup --store {result.data_dir}/national {result.sample_code}"
        )
    elif not kept:
        console.print("(stores removed; pass --data-dir DIR to keep them for `jukisync lookup`)")


_EXPLAIN = """\
How to read this:
  dup    national receives every bundle twice, since both centres forward everything
         (that is what keeps it whole when one is down); it applies the first copy and
         counts the second as a duplicate, so its dup is about its bundle count.
  heads  each municipality's chain ends in a head: the sequence number of its last
         update and the hash of its last signed bundle, which covers every bundle
         before it. Equal heads mean a tier holds every update, in order, unaltered.
  heard  head announcements the tier verified: each municipality signs its head, each
         centre relays the heads it holds, as the daemons do; a tier behind what it
         heard asks for the rest (and its /healthz says so).
  digest a hash over every active record of a prefecture (a Merkle tree): equal digests
         mean the tiers hold the same records, field for field, not just as many."""


@click.command(
    "demo",
    epilog="""\b
Examples:
  jukisync demo                                  # 200k updates, well under a minute
  jukisync demo --residents 100000 --changes 200000
  jukisync demo --json | jq .converged
  jukisync demo --data-dir /tmp/net && jukisync lookup --store /tmp/net/national CODE
  jukisync demo --scenario centre-loss           # a drill: one centre down for the run
  jukisync demo --scenario garbled-update --json | jq .checks
  jukisync demo --scenario national-restore --broker amqp://guest:guest@localhost/

\b
Exit codes:
  0    converged (a drill: every expected outcome happened)
  1    not converged (a drill: an expected outcome did not happen; `checks` says which)
  2    usage: a bad option, a --data-dir that is not empty
  7    --broker unreachable
""",
)
@click.option(
    "--scenario",
    type=click.Choice(sorted(SCENARIOS)),
    help="Run a drill instead: centre-loss, garbled-update, late-centre, national-restore.",
)
@click.option(
    "--residents",
    type=click.IntRange(min=1),
    help="Residents loaded first (one creation update each). [default: 100000; a drill: 3000]",
)
@click.option(
    "--changes",
    type=click.IntRange(min=0),
    help="Updates of the change stream after the load. [default: 100000; a drill: 3000]",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Synthetic data seed.")
@click.option(
    "--bundle-size",
    type=click.IntRange(min=1, max=10_000),
    default=200,
    show_default=True,
    help="Most updates in one bundle (the demo; a drill bundles 100).",
)
@click.option(
    "--linger-ms",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="How long a partial bundle may wait for more updates (the demo).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for convergence before judging (a drill: for each of its waits).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where stores, outboxes and keys go (kept). Default: a temporary directory, "
    "removed at the end.",
)
@click.option("--broker", metavar="URL", help="Run over RabbitMQ at URL instead of in process.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(
    scenario: str | None,
    residents: int | None,
    changes: int | None,
    seed: int,
    bundle_size: int,
    linger_ms: float,
    timeout_s: float,
    data_dir: Path | None,
    broker: str | None,
    as_json: bool,
) -> None:
    """Run the whole network in one process: 山口県's 19 municipalities and some of
    東京都, 広島県 and 福岡県 publish a synthetic population and change stream; two
    aggregation centres (相互補完) apply and forward; the national node applies.

    Exits 0 only if every tier converged (same chain heads, same digests).

    With --scenario, runs one of the seed's drills on that network and prints what
    happened and what an operator would have seen (status verdicts, metrics, alerts,
    log lines); exits 0 only if the drill's expected outcome happened.
    """
    if broker is not None and not broker.startswith(("amqp://", "amqps://")):
        fail("demo", ExitCode.USAGE, f"--broker must be an amqp:// or amqps:// URL, got {broker!r}")
    directory, temporary = fresh_data_dir("demo", data_dir)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if scenario is not None:
        drill = DrillOptions(
            scenario=scenario,
            data_dir=directory,
            residents=residents or DRILL_SIZE,
            changes=DRILL_SIZE if changes is None else changes,
            seed=seed,
            timeout_s=timeout_s,
            broker_url=broker,
        )
        _run_drill(drill, temporary, as_json)
        return
    options = DemoOptions(
        data_dir=directory,
        residents=residents or 100_000,
        changes=100_000 if changes is None else changes,
        seed=seed,
        bundle_size=bundle_size,
        linger_ms=linger_ms,
        timeout_s=timeout_s,
        broker_url=broker,
    )
    err = Console(stderr=True)
    if not as_json and err.is_terminal:
        bars, on_progress = _bars(err)
        with bars:
            result = _run(run_demo(options, on_progress), directory, temporary)
    else:
        result = _run(run_demo(options), directory, temporary)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _render(result, _stdout(120), kept=not temporary)
    sys.exit(ExitCode.OK if result.converged else ExitCode.FAILURE)


def _run(main: Coroutine[Any, Any, T], directory: Path, temporary: bool) -> T:
    """Run the demo or drill; the temporary data directory goes whatever happens."""
    try:
        return asyncio.run(main)
    except TransportUnavailable as exc:
        fail("demo", ExitCode.UNAVAILABLE, f"--broker: {exc}")
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def _stdout(width: int) -> Console:
    out = Console()
    # piped: rich would assume 80 columns and clip
    return out if out.is_terminal else Console(width=width)


def _run_drill(options: DrillOptions, temporary: bool, as_json: bool) -> None:
    result = _run(run_drill(options), options.data_dir, temporary)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _render_drill(result, _stdout(140))
    sys.exit(ExitCode.OK if result.ok else ExitCode.FAILURE)


_METRIC_LABELS = {
    "jukisync_origin_lag_seqs": "lag",
    "jukisync_origin_pending_bundles": "pending",
    "jukisync_store_quarantine_open": "quarantine",
    "jukisync_forward_backlog": "backlog",
    "jukisync_store_records": "records",
}


def _render_drill(result: DrillResult, console: Console) -> None:
    console.print(
        f"[bold]drill {result.scenario}[/]: {result.title}\nnetwork: {result.transport}",
        highlight=False,
    )
    for number, step in enumerate(result.steps, 1):
        console.print(f"\n[bold]{number}. {step.title}[/]", highlight=False)
        for line in step.happened:
            console.print(f"   {line}", highlight=False)
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
        table.add_column("tier", no_wrap=True)
        table.add_column("jukisync status")
        table.add_column("alerts")
        for label in _METRIC_LABELS.values():
            table.add_column(label, justify="right")
        for name, view in step.seen.items():
            alerts = ", ".join(view.alerts) or "-"
            table.add_row(
                name,
                view.verdict,
                f"[red]{alerts}[/]" if view.alerts else alerts,
                *(f"{view.metrics[m]:,.0f}" if m in view.metrics else "-" for m in _METRIC_LABELS),
            )
        console.print(table)
        for line in step.logs:
            console.print(Text.assemble(("   log ", "dim"), line))
    console.print("\n[bold]expected[/]", highlight=False)
    for what, held in result.checks.items():
        mark = "[green]✓[/]" if held else "[red]✗ did not happen:[/]"
        console.print(f"  {mark} {what}", highlight=False)
    verdict = "[bold green]DRILL PASSED[/]" if result.ok else "[bold red]DRILL FAILED[/]"
    console.print(
        f"{verdict}: {result.updates:,} updates in {result.elapsed_s:.1f} s", highlight=False
    )
