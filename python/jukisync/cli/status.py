"""`jukisync status`: what a tier store holds, how far each origin got, what waits."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jukisync.cli.common import fail, open_store, store_option
from jukisync.exitcodes import ExitCode
from jukisync.tier import verdict
from jukisync.trust import storedir

__all__ = ["command"]


@click.command(
    "status",
    epilog="""\b
Examples:
  jukisync status --store data/national
  jukisync status --store data/centre-a --heads --digest 35 --json
  jukisync status --store data/national --compare data/centre-a

\b
The first line is the verdict: `caught up`, `behind by N seqs (ORIGIN by n, ...)`
(pending bundles wait for missing seqs; with --compare, also seqs OTHER has and this
store has not) or `halted: ORIGIN` (an operator must release or drop). With --compare
it also says whether the records agree (Merkle trees, as `jukisync reconcile`).
Exit code 0 whatever the verdict (scripts read `verdict.state` from --json).
""",
)
@store_option
@click.option("--heads", is_flag=True, help="List every origin's chain head.")
@click.option(
    "--digest",
    "prefixes",
    multiple=True,
    metavar="PREFIX",
    help="Digest of the active records under a municipality code prefix ('' = all).",
)
@click.option(
    "--compare",
    "other_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Another tier's store: how far this one is behind or ahead of it, per origin.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def command(
    store_path: Path,
    heads: bool,
    prefixes: tuple[str, ...],
    other_path: Path | None,
    as_json: bool,
) -> None:
    """Counts of a store (records, applied, duplicates, gaps, rejections, pending,
    forward backlog), halted origins, and optionally chain heads and digests."""
    store = open_store("status", store_path)
    other = None
    if other_path is not None:
        if other_path.resolve() == store_path.resolve():
            fail("status", ExitCode.USAGE, "--compare names the same store")
        other = open_store("status", other_path)
    judged = verdict.judge(store, other, str(other_path or ""))
    stats = store.stats()
    report: dict[str, object] = {
        "store": str(store_path),
        "verdict": judged.as_dict(),
        "stats": stats,
        "halted": store.halted(),
        # The registry beside the store: the one its daemon uses (rewritten on reload).
        "registry_version": storedir.load_registry(store_path).version,
    }
    if heads:
        report["heads"] = {
            o: {"seq": s, "hash": h.hex()} for o, (s, h) in store.chain_heads().items()
        }
    digests = {p: store.digest(p) for p in prefixes}
    if digests:
        report["digests"] = digests
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    console = Console()
    colour = {"caught up": "green", "behind": "yellow", "halted": "red"}[judged.state]
    console.print(f"[bold {colour}]{judged.line}[/]", highlight=False, soft_wrap=True)
    table = Table(title=str(store_path), show_header=False)
    for key in sorted(stats):
        table.add_row(key, f"{stats[key]:,}")
    console.print(table)
    console.print(f"registry version {report['registry_version']}")
    for origin, why in sorted(store.halted().items()):
        console.print(f"[bold red]halted[/] {origin}: {why}")
    if heads:
        for origin, (seq, head_hash) in sorted(store.chain_heads().items()):
            console.print(f"{origin}  seq {seq:>10,}  {head_hash.hex()[:16]}")
    for prefix, digest in digests.items():
        console.print(f"digest {prefix or '(all)'}: {digest}")
