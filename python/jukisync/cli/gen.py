"""`jukisync gen`: write a synthetic population and change stream as JSON lines."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from jukisync import clock
from jukisync.exitcodes import ExitCode
from jukisync.sim import synth
from jukisync.wire.messages import Update

__all__ = ["command"]

_CHUNK = 10_000  # updates encoded and written per batch (and per progress step)


@contextlib.contextmanager
def _output(out: Path) -> Iterator[BinaryIO]:
    """`out` opened for writing; a file appears only once complete (no half files)."""
    if str(out) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            yield f
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


@click.command(
    "gen",
    epilog="""\b
Examples:
  jukisync gen --residents 10000 --changes 5000 --out changes.jsonl
  jukisync gen --residents 100000 --changes 1000000 --seed 7 --out big.jsonl
  jukisync gen --residents 500 --changes 0 --out seed.jsonl       # initial load only
  jukisync gen --residents 1000 --changes 100 --no-initial --out - | head -n 3

Each line is one Update (msgspec JSON); the sending municipality is its
`municipality` field. `seq` is 0: the publisher assigns sequence numbers.
""",
)
@click.option(
    "--residents",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Residents in the synthetic population.",
)
@click.option(
    "--changes",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Updates in the change stream (exactly this many).",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Same seed and options, same file, byte for byte.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
    required=True,
    help="Output file ('-' for stdout).",
)
@click.option(
    "--initial/--no-initial",
    default=True,
    show_default=True,
    help="Start with every resident as a creation update (to seed an empty store).",
)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help=f"First day of the change stream [default: {synth.DEFAULT_AS_OF}, the population's date].",
)
def command(
    residents: int,
    changes: int,
    seed: int,
    out: Path,
    initial: bool,
    start: dt.datetime | None,
) -> None:
    """Generate synthetic resident records and changes (住民異動) as JSON lines.

    The population lives in real municipalities (mostly Yamaguchi's 19, some in
    Tokyo, Hiroshima and Fukuoka); the changes follow the national yearly mix of
    move-outs and move-ins, births, deaths, address changes and corrections, with
    every move between municipalities sent as a 転出 by the old one and a later
    転入 by the new one. The 住民票コード check digit is a placeholder (the official
    formula is not public); 個人番号 and municipality codes have real check digits.
    """
    began = time.perf_counter()
    population = synth.generate_population(residents, seed)
    start_day = start.date() if start is not None else population.as_of
    if start_day < population.as_of:
        raise click.BadParameter(
            f"must not be before the population's date {population.as_of}", param_hint="--start"
        )
    # The stream ends before today (JUKISYNC_NOW fixes it): tiers refuse future dates.
    stream: Iterator[tuple[str, Update]] = synth.generate_changes(
        population,
        changes,
        seed,
        start_day,
        max_span_days=synth.span_until(start_day, clock.now().date()),
    )
    if initial:
        stream = itertools.chain(synth.initial_load(population), stream)
    total = changes + (residents if initial else 0)

    encoder = msgspec.json.Encoder()
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),  # no bar in logs and pipes
    )
    written = 0
    try:
        with progress, _output(out) as f:
            task = progress.add_task("updates", total=total)
            while batch := [u for _, u in itertools.islice(stream, _CHUNK)]:
                f.write(encoder.encode_lines(batch))
                written += len(batch)
                progress.update(task, completed=written)
    except OSError as exc:
        click.echo(f"jukisync gen: cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(int(ExitCode.FAILURE))

    elapsed = time.perf_counter() - began
    click.echo(
        f"wrote {written} updates ({residents if initial else 0} initial, {changes} changes)"
        f" to {out} in {elapsed:.1f} s",
        err=True,
    )
