"""`jukisync quarantine`: what a store refused, and resolving a halted origin."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jukisync import _core
from jukisync.cli.common import fail, open_store, store_option
from jukisync.exitcodes import ExitCode

__all__ = ["command"]

_NAME = "quarantine"


def _when(micros: int) -> str:
    return dt.datetime.fromtimestamp(micros / 1e6, dt.UTC).isoformat(timespec="seconds")


def _as_dict(entry: _core.QuarantineEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "received_at": entry.received_at,
        "kind": entry.kind,
        "state": entry.state,
        "origin": entry.origin,
        "first_seq": entry.first_seq,
        "last_seq": entry.last_seq,
        "hash": entry.hash.hex() if entry.hash else None,
        "size": entry.size,
        "reason": entry.reason,
    }


@click.group(
    _NAME,
    epilog="""\b
Examples:
  jukisync quarantine list --store data/centre-a
  jukisync quarantine show --store data/centre-a 3
  jukisync quarantine release --store data/centre-a 3   # accept as is; origin resumes
  jukisync quarantine drop --store data/centre-a 3      # origin must re-issue (supersedes)
""",
)
def command() -> None:
    """Bundles a store refused: security events (not from their origin; nothing halts)
    and halts (validly signed but wrong; that origin waits for an operator)."""


@command.command("list")
@store_option
@click.option("--all", "include_closed", is_flag=True, help="Include released and dropped.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: entries and halts.")
def list_entries(store_path: Path, include_closed: bool, as_json: bool) -> None:
    """List quarantined bundles and the origins they halted."""
    store = open_store(_NAME, store_path)
    entries = store.quarantine(include_closed=include_closed)
    halted = store.halted()
    if as_json:
        click.echo(json.dumps({"entries": [_as_dict(e) for e in entries], "halted": halted}))
        return
    table = Table(title=f"quarantine of {store_path}")
    for column in ("id", "received (UTC)", "kind", "state", "origin", "seqs", "reason"):
        table.add_column(column)
    for e in entries:
        seqs = f"{e.first_seq}..{e.last_seq}" if e.first_seq is not None else "-"
        table.add_row(
            str(e.id), _when(e.received_at), e.kind, e.state, e.origin or "-", seqs, e.reason
        )
    console = Console()
    console.print(table)
    for origin, why in sorted(halted.items()):
        console.print(f"[bold red]halted[/] {origin}: {why}")


@command.command("show")
@store_option
@click.option("--json", "as_json", is_flag=True)
@click.argument("entry_id", type=int)
def show(store_path: Path, as_json: bool, entry_id: int) -> None:
    """Show one entry, with the hex of the bytes as received."""
    store = open_store(_NAME, store_path)
    try:
        entry = store.quarantine_entry(entry_id)
    except _core.QuarantineError as exc:
        fail(_NAME, ExitCode.NOT_FOUND, str(exc))
    data = _as_dict(entry)
    data["envelope_hex"] = entry.envelope.hex()
    if as_json:
        click.echo(json.dumps(data))
        return
    for key, value in data.items():
        click.echo(f"{key:>13}  {value}")


@command.command("release")
@store_option
@click.argument("entry_id", type=int)
def release(store_path: Path, entry_id: int) -> None:
    """Accept a halting bundle as it is: apply it and resume its origin."""
    store = open_store(_NAME, store_path)
    try:
        result = store.release(entry_id)
    except _core.QuarantineError as exc:
        fail(_NAME, ExitCode.INPUT, str(exc))
    click.echo(
        f"released {entry_id}: {result.origin} seqs {result.first_seq}..{result.last_seq} "
        f"applied, {result.released} waiting bundle(s) applied after it"
    )


@command.command("drop")
@store_option
@click.argument("entry_id", type=int)
def drop(store_path: Path, entry_id: int) -> None:
    """Discard a quarantined bundle; a halted origin then resumes with a bundle whose
    `supersedes` names the dropped one."""
    store = open_store(_NAME, store_path)
    try:
        entry = store.quarantine_entry(entry_id)
        store.drop(entry_id)
    except _core.QuarantineError as exc:
        fail(_NAME, ExitCode.INPUT, str(exc))
    if entry.kind == "halt" and entry.hash is not None:
        click.echo(
            f"dropped {entry_id}; {entry.origin} resumes with a bundle that supersedes "
            f"{entry.hash.hex()}"
        )
    else:
        click.echo(f"dropped {entry_id}")
