"""`jukisync selfcheck`: the node's security self-check (自己点検), scored 0–3 per item."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jukisync import config as node_config
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.ops import selfcheck

__all__ = ["command"]

_NAME = "selfcheck"


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync selfcheck --config /etc/jukisync/national.toml --backups /srv/backups/national
  jukisync selfcheck --config config/municipality.toml --backups backups/352039 --json
  jukisync selfcheck --config config/aggregator.toml --no-broker   # offline

\b
Items (those that apply to the node's role), each scored 3 good, 2 acceptable,
1 weak, 0 failing, with what to do below 3:
  key file permissions, key age (six-year refresh), registry keys expiring,
  broker TLS, broker least privilege (a forbidden declare must be refused),
  audit chain, store state (halts, open quarantine), last backup, clock (NTP),
  disk headroom.

\b
Exit codes:
  0    every item scored 1 or more
  1    some item scored 0
  3    the config file is missing or invalid
""",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's config file (any role).",
)
@click.option(
    "--backups",
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory `jukisync backup --dir` writes to (for the last backup's age).",
)
@click.option(
    "--no-broker",
    is_flag=True,
    help="Skip the broker probe (least privilege), e.g. on a machine without access.",
)
@click.option("--json", "as_json", is_flag=True, help="Items and total as one JSON object.")
def command(config_path: Path, backups: Path | None, no_broker: bool, as_json: bool) -> None:
    """Score what this node can check about itself, item by item (0–3), with the
    total and what to do for each item below 3."""
    try:
        loaded = node_config.load(config_path)
    except node_config.ConfigError as exc:
        fail(_NAME, ExitCode.CONFIG, str(exc))
    items = selfcheck.run_checks(loaded, backups=backups, probe_broker=not no_broker)
    total, best = sum(i.score for i in items), 3 * len(items)
    if as_json:
        report = {
            "config": str(config_path),
            "items": [dataclasses.asdict(i) for i in items],
            "total": total,
            "max": best,
        }
        click.echo(json.dumps(report, ensure_ascii=False))
    else:
        table = Table(title=f"自己点検 self-check: {config_path}")
        for column in ("item", "score", "found", "to raise it"):
            table.add_column(column)
        colours = {0: "red", 1: "red", 2: "yellow", 3: "green"}
        for i in items:
            table.add_row(i.name, f"[{colours[i.score]}]{i.score}[/]", i.finding, i.advice)
        table.add_section()
        table.add_row("total", f"{total}/{best}", "", "")
        Console().print(table)
    if any(i.score == 0 for i in items):
        sys.exit(ExitCode.FAILURE)
