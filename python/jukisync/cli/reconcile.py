"""`jukisync reconcile`: compare two tier stores, name what differs, repair."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jukisync import _core
from jukisync.cli.common import fail, open_node_store, open_store
from jukisync.exitcodes import ExitCode
from jukisync.tier import reconcile

__all__ = ["command"]

_NAME = "reconcile"


def _open(path: Path, configs: tuple[Path, ...]) -> _core.Store:
    from jukisync import config as node_config

    for config_path in configs:
        try:
            loaded = node_config.load(config_path)
        except node_config.ConfigError as exc:
            fail(_NAME, ExitCode.CONFIG, str(exc))
        store = getattr(loaded, "store", None)
        if store is not None and Path(store).resolve() == path.resolve():
            return open_node_store(_NAME, config_path, path)
    return open_store(_NAME, path)


def _print(found: dict[str, object]) -> None:
    if found["equal"]:
        click.echo("equal")
        return
    origins = found["origins"]
    assert isinstance(origins, list)
    for o in origins:
        a, b = o["a_head"], o["b_head"]
        seqs = f"a seq {a['seq'] if a else 0}, b seq {b['seq'] if b else 0}"
        behind = o["behind"]
        state = {
            "a": "a is behind",
            "b": "b is behind",
            "fork": "FORK: same seq, other hash",
            None: "heads equal",
        }[behind]
        click.echo(f"{o['origin']}: {seqs} ({state}); {len(o['codes'])} record(s) differ")
        for c in o["codes"]:
            click.echo(f"  {c['code']}  newer: {c['newer']}  a: {c['a']}  b: {c['b']}")


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync reconcile data/centre-east data/national
  jukisync reconcile data/centre-east data/centre-west --json
  jukisync reconcile data/centre-east data/national --repair \\
      --config config/aggregator.toml      # a centre's key, to attest what it applies

\b
Exit codes: 0 equal (after the repair, with --repair); 1 different;
3 a store's trust files or a config do not load; 5 no store at a path.
Run it on stopped stores, or beside running daemons for a comparison
(each side is read in one transaction; a store still applying shows as behind).
""",
)
@click.argument("store_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("store_b", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--repair",
    is_flag=True,
    help="Bring the side that is behind up to date from the other's change log (signed "
    "envelopes, through the normal apply path), then rebuild records that still differ "
    "from each side's own change log.",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A node config whose store is STORE_A or STORE_B (a centre needs its key to "
    "apply); may be given twice.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def command(
    store_a: Path, store_b: Path, repair: bool, configs: tuple[Path, ...], as_json: bool
) -> None:
    """Compare two tiers (e.g. a centre and national, or the two centres): chain heads
    per origin, then a Merkle tree per origin over its records, descending only where
    the sums differ. Prints `equal`, or each origin's head difference and the codes
    that differ with the side holding the newer version."""
    if store_a.resolve() == store_b.resolve():
        fail(_NAME, ExitCode.USAGE, "STORE_A and STORE_B are the same store")
    a, b = _open(store_a, configs), _open(store_b, configs)
    before = reconcile.describe(reconcile.compare(a, b))
    report: dict[str, object] = {"a": str(store_a), "b": str(store_b), **before}
    final = before
    if repair and not before["equal"]:
        try:
            done = reconcile.repair(a, b)
        except _core.StoreError as exc:
            fail(_NAME, ExitCode.CONFIG, f"cannot repair: {exc}")
        final = reconcile.describe(reconcile.compare(a, b))
        report = {**report, "repair": done.as_dict(), "after": final}
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print(before)
        if "repair" in report:
            click.echo(f"repair: {json.dumps(report['repair'], ensure_ascii=False)}")
            click.echo("after repair:")
            _print(final)
    if not final["equal"]:
        sys.exit(ExitCode.FAILURE)
