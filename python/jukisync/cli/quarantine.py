"""`jukisync quarantine`: what a store refused, and resolving a halted origin."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table

from jukisync import _core, clock
from jukisync.cli.common import fail, open_node_store, open_store, store_option
from jukisync.exitcodes import ExitCode

__all__ = ["command"]

_NAME = "quarantine"
P = ParamSpec("P")
R = TypeVar("R")


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
        "actions": [
            {"action": a, "operator": who, "at": _when(at), "reason": why, "role": role}
            for a, who, at, why, role in entry.actions
        ],
    }


@click.group(
    _NAME,
    epilog="""\b
Examples:
  jukisync quarantine list --store data/centre-a
  jukisync quarantine show --store data/centre-a 3
  jukisync quarantine release --config config/aggregator.toml \\
      --operator yamada --reason "CS patch verified by the vendor" 3  # accept as is
  jukisync quarantine drop --config config/aggregator.toml \\
      --operator yamada --reason "garbled names; re-issue requested" 3  # origin re-issues
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
    for column in ("id", "received (UTC)", "kind", "state", "origin", "seqs", "reason", "by"):
        table.add_column(column)
    for e in entries:
        seqs = f"{e.first_seq}..{e.last_seq}" if e.first_seq is not None else "-"
        by = "; ".join(_action_line(a) for a in e.actions) or "-"
        table.add_row(
            str(e.id), _when(e.received_at), e.kind, e.state, e.origin or "-", seqs, e.reason, by
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
        if key != "actions":
            click.echo(f"{key:>13}  {value}")
    for action in entry.actions:
        click.echo(f"{'action':>13}  {_action_line(action)}")


def _action_line(action: tuple[str, str, int, str, str]) -> str:
    what, who, at, why, role = action
    return f"{what} by {who} at {_when(at)} ({role}): {why}"


def _resolving_store(store_path: Path | None, config_path: Path | None) -> _core.Store:
    """The store as its node opens it (role and key, from --config), or, without a
    config, as the role it recorded; a centre's store then cannot release (no key)."""
    if config_path is not None:
        return open_node_store(_NAME, config_path, store_path)
    if store_path is None:
        fail(_NAME, ExitCode.USAGE, "give --config NODE.toml (or --store PATH at national)")
    return open_store(_NAME, store_path)


_resolve_options = [
    click.option(
        "--store",
        "store_path",
        type=click.Path(file_okay=False, path_type=Path),
        help="The store directory (optional with --config: the config names it).",
    ),
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The node's config (centre or national): its role and, at a centre, the "
        "signing key that attests what is released. Required at a centre.",
    ),
    click.option("--operator", required=True, help="Who decides (recorded with the entry)."),
    click.option("--reason", required=True, help="Why (recorded with the entry)."),
]


def _with_resolve_options(f: Callable[P, R]) -> Callable[P, R]:
    for option in reversed(_resolve_options):
        f = option(f)
    return f


@command.command("release")
@_with_resolve_options
@click.argument("entry_id", type=int)
def release(
    store_path: Path | None,
    config_path: Path | None,
    operator: str,
    reason: str,
    entry_id: int,
) -> None:
    """Accept a halting bundle as it is: apply it and resume its origin. At a centre
    the bundle is attested and forwarded to national like any applied bundle."""
    store = _resolving_store(store_path, config_path)
    if store.role == "aggregator" and config_path is None:
        fail(
            _NAME,
            ExitCode.CONFIG,
            "a centre attests and forwards what it releases: give --config with the "
            "centre's config (its signing key)",
        )
    try:
        result = store.release(entry_id, operator=operator, reason=reason, at=clock.now_us())
    except _core.QuarantineError as exc:
        fail(_NAME, ExitCode.INPUT, str(exc))
    forwarded = " (attested, queued for national)" if store.role == "aggregator" else ""
    click.echo(
        f"released {entry_id}: {result.origin} seqs {result.first_seq}..{result.last_seq} "
        f"applied{forwarded}, {result.released} waiting bundle(s) applied after it"
    )


@command.command("drop")
@_with_resolve_options
@click.argument("entry_id", type=int)
def drop(
    store_path: Path | None,
    config_path: Path | None,
    operator: str,
    reason: str,
    entry_id: int,
) -> None:
    """Discard a quarantined bundle; a halted origin then resumes with a bundle whose
    `supersedes` names the dropped one."""
    store = _resolving_store(store_path, config_path)
    try:
        entry = store.quarantine_entry(entry_id)
        store.drop(entry_id, operator=operator, reason=reason, at=clock.now_us())
    except _core.QuarantineError as exc:
        fail(_NAME, ExitCode.INPUT, str(exc))
    if entry.kind == "halt" and entry.hash is not None:
        click.echo(
            f"dropped {entry_id}; {entry.origin} resumes with a bundle that supersedes "
            f"{entry.hash.hex()}"
        )
    else:
        click.echo(f"dropped {entry_id}")
