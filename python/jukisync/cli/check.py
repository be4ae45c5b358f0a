"""`jukisync check`: the internal consistency of a tier store (fsck)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jukisync.cli.common import open_store, store_option
from jukisync.exitcodes import ExitCode

__all__ = ["command"]


@click.command(
    "check",
    epilog="""\b
Examples:
  jukisync check --store data/national
  jukisync check --store data/centre-east --json | jq '.inconsistencies[].kind'

\b
Exit codes: 0 consistent; 1 inconsistencies found (each named on stdout);
3 the store's trust files do not load; 5 no store at PATH.
""",
)
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def command(store_path: Path, as_json: bool) -> None:
    """Verify a store against itself, in one read transaction (safe while its daemon
    runs): every index entry (個人番号, reading, name) names a record holding that key
    and every record is reachable through each index; each origin's Merkle sums match
    its records; chain heads equal the change log's last entries, the log chains by
    hash and each entry's origin signature verifies; pending bundles, the forward
    outbox and halts refer to real entries; the audit log's hash chain verifies."""
    store = open_store("check", store_path)
    found = store.check()
    if as_json:
        report = {
            "store": str(store_path),
            "consistent": not found,
            "inconsistencies": [{"kind": k, "detail": d} for k, d in found],
        }
        click.echo(json.dumps(report, ensure_ascii=False))
    elif found:
        for kind, detail in found:
            click.echo(f"{kind}: {detail}")
    else:
        click.echo(f"{store_path}: consistent")
    if found:
        click.echo(f"jukisync check: {len(found)} inconsistencies in {store_path}", err=True)
        sys.exit(ExitCode.FAILURE)
