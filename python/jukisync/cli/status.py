"""`jukisync status`: what a tier store holds, how far each origin got, what waits."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jukisync.cli.common import open_store, store_option
from jukisync.trust import storedir

__all__ = ["command"]


@click.command(
    "status",
    epilog="""\b
Examples:
  jukisync status --store data/national
  jukisync status --store data/centre-a --heads --digest 35 --json
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
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def command(store_path: Path, heads: bool, prefixes: tuple[str, ...], as_json: bool) -> None:
    """Counts of a store (records, applied, duplicates, gaps, rejections, pending,
    forward backlog), halted origins, and optionally chain heads and digests."""
    store = open_store("status", store_path)
    stats = store.stats()
    report: dict[str, object] = {"store": str(store_path), "stats": stats, "halted": store.halted()}
    # The registry beside the store: the one its daemon uses (rewritten on reload).
    report["registry_version"] = storedir.load_registry(store_path).version
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
