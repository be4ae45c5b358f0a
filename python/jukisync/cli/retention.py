"""`jukisync retention`: checkpoint, archive and prune a tier store's change log by
hand (`prune`), and show where each origin's retained log begins (`show`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jukisync import _core, config
from jukisync.cli.common import data_console, fail, open_store, store_option
from jukisync.cli.snapshot import key_option, load_key
from jukisync.exitcodes import ExitCode
from jukisync.tier import retention

__all__ = ["command"]

_NAME = "retention"
_DEFAULTS = config.RetentionConfig()
F = TypeVar("F", bound=Callable[..., Any])

_archive_dir_option = click.option(
    "--archive-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the archive of the pruned entries is written (created if missing).",
)


def _policy_options(least: int, what: str) -> Callable[[F], F]:
    """--keep-bundles, --keep-days and --json, as `[retention]` of a config."""

    def add(f: F) -> F:
        f = click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")(
            f
        )
        f = click.option(
            "--keep-days",
            type=click.FloatRange(min=0),
            default=_DEFAULTS.keep_days,
            show_default=True,
            help=f"{what} created within this many days are kept.",
        )(f)
        return click.option(
            "--keep-bundles",
            type=click.IntRange(min=least),
            default=_DEFAULTS.keep_bundles,
            show_default=True,
            help=f"{what} always kept, newest first.",
        )(f)

    return add


@click.group(
    _NAME,
    epilog="""\b
Examples:
  jukisync retention prune --store data/centre-east --key keys/centre-east-k1.key.json \\
      --archive-dir /srv/jukisync/archive --keep-bundles 100000 --keep-days 30
  jukisync retention show --store data/centre-east --json

The daemon does the same on its own with `[retention] archive_dir = ...` in its config.
""",
)
def command() -> None:
    """Keep a tier store's change log bounded: a signed checkpoint (heads per origin,
    record count and digest), the oldest entries archived to a file an operator keeps,
    then pruned from the store. Resends and `reconcile --repair` read pruned ranges
    from the archive."""


@command.command(
    "prune",
    epilog="""\b
Examples:
  jukisync retention prune --store /var/lib/jukisync/national \\
      --key keys/national-k1.key.json --archive-dir /srv/jukisync/archive
  jukisync retention prune --store data/centre-east --key keys/centre-east-k1.key.json \\
      --archive-dir archive/ --keep-bundles 0 --keep-days 0 --json

The store may be in use by its daemon. Never pruned: each origin's newest entry (its
chain head) and any entry not yet forwarded to national. The archive
(ARCHIVE_DIR/<store>-changelog-<time>.tar) is written and fsynced before anything is
deleted; the deletion is one transaction.

\b
Exit codes:
  0    done (also when the policy let nothing go: "archive": null)
  1    the archive could not be written (nothing was pruned)
  3    bad key file, or the store's trust files are missing or invalid
  5    no store at --store
""",
)
@store_option
@key_option
@_archive_dir_option
@_policy_options(0, "Change-log entries (bundles) of each origin")
def prune(
    store_path: Path,
    key_path: Path,
    archive_dir: Path,
    keep_bundles: int,
    keep_days: float,
    as_json: bool,
) -> None:
    """Checkpoint the store, archive the change-log entries the policy lets go, and
    prune them."""
    key = load_key(f"{_NAME} prune", key_path)
    store = open_store(f"{_NAME} prune", store_path)
    policy = retention.Policy(keep_bundles=keep_bundles, keep_days=keep_days)
    try:
        report = retention.checkpoint_and_prune(store, store_path, key, archive_dir, policy)
    except (OSError, _core.JukisyncError) as exc:
        fail(f"{_NAME} prune", ExitCode.FAILURE, str(exc))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), ensure_ascii=False))
        return
    if report.archive is None:
        click.echo(f"{store_path}: nothing to prune ({report.entries_before:,} entries kept)")
        return
    click.echo(
        f"{store_path}: {sum(report.pruned.values()):,} change-log entries of "
        f"{len(report.pruned)} origins archived and pruned "
        f"({report.entries_before:,} -> {report.entries_after:,})"
    )
    click.echo(f"  archive {report.archive}")
    click.echo(
        f"  checkpoint: {len(report.checkpoint['heads'])} heads, "
        f"{report.checkpoint['records']:,} records, digest {report.checkpoint['digest']}"
    )


@command.command(
    "outbox",
    epilog="""\b
Examples:
  jukisync retention outbox --outbox /var/lib/jukisync/outbox-352039 \\
      --key keys/352039-k1.key.json --archive-dir /srv/jukisync/archive --keep-days 90

The publisher may be running. Confirmed bundles older than the policy are archived
(signed by the origin's key, the chain head as checkpoint) and deleted; the chain
head and the newest bundle stay, unconfirmed bundles are never touched. A centre
asking for a pruned range is answered with an error naming the archive (and repairs
from the twin centre's change log).

\b
Exit codes:
  0    done (also when nothing was pruned: "archive": null)
  1    the archive could not be written (nothing was pruned)
  3    bad key file, or the outbox belongs to another origin than the key's owner
  5    no outbox at --outbox
""",
)
@click.option(
    "--outbox",
    "outbox_path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The publisher's outbox directory.",
)
@key_option
@_archive_dir_option
@_policy_options(1, "Confirmed bundles")
def outbox_command(
    outbox_path: Path,
    key_path: Path,
    archive_dir: Path,
    keep_bundles: int,
    keep_days: float,
    as_json: bool,
) -> None:
    """Archive and delete a publisher outbox's confirmed bundles older than the policy."""
    from jukisync.publisher.outbox import Outbox, OutboxError
    from jukisync.publisher.retention import prune_outbox

    name = f"{_NAME} outbox"
    key = load_key(name, key_path)
    if not (outbox_path / "data.mdb").is_file():
        fail(name, ExitCode.NOT_FOUND, f"no outbox at {outbox_path} (no data.mdb)")
    try:
        outbox = Outbox(outbox_path, key.owner)
    except OutboxError as exc:
        fail(name, ExitCode.CONFIG, str(exc))
    try:
        policy = retention.Policy(keep_bundles=keep_bundles, keep_days=keep_days)
        report = prune_outbox(outbox, key, archive_dir, policy)
    except OSError as exc:
        fail(name, ExitCode.FAILURE, str(exc))
    finally:
        outbox.close()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), ensure_ascii=False))
    elif report.archive is None:
        click.echo(f"{outbox_path}: nothing to prune ({report.bundles_before:,} bundles kept)")
    else:
        click.echo(
            f"{outbox_path}: {report.pruned:,} confirmed bundles archived to "
            f"{report.archive} and pruned ({report.bundles_before:,} -> "
            f"{report.bundles_after:,}); chain head seq {report.head['seq']:,} kept"
        )


@command.command(
    "show",
    epilog="""\b
Examples:
  jukisync retention show --store data/national
  jukisync retention show --store data/national --json

\b
Exit codes:
  0    shown
  3    the store's trust files are missing or invalid
  5    no store at --store
""",
)
@store_option
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
def show(store_path: Path, as_json: bool) -> None:
    """Where each origin's retained change log begins, and the archive holding the
    range before it."""
    store = open_store(f"{_NAME} show", store_path)
    floors: list[dict[str, str | int]] = [
        {"origin": o, "first_retained_seq": seq, "archive": archive}
        for o, seq, _, archive in store.retention_floors()
    ]
    entries = store.changelog_entries()
    if as_json:
        click.echo(json.dumps({"changelog_entries": entries, "pruned_origins": floors}))
        return
    from rich.table import Table

    table = Table("origin", "first retained seq", "earlier seqs are in")
    for f in floors:
        table.add_row(str(f["origin"]), f"{f['first_retained_seq']:,}", str(f["archive"]))
    click.echo(f"{store_path}: {entries:,} change-log entries; {len(floors)} origins pruned")
    if floors:
        data_console().print(table)
