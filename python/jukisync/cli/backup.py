"""`jukisync backup`: rotated, verified, signed hot copies of a store or an outbox."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from jukisync import clock
from jukisync.cli.archives import (
    load_trust,
    root_option_optional,
    signer_option,
    store_or_outbox,
)
from jukisync.cli.common import fail, open_store
from jukisync.cli.snapshot import key_option, load_key
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots

__all__ = ["PREFIX", "command"]

_NAME = "backup"
PREFIX = "jukisync-backup-"


def _name(kind: str, now_us: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=now_us)
    return f"{PREFIX}{kind}-{moment:%Y%m%dT%H%M%S%fZ}.tar"


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync backup --store /var/lib/jukisync/national --dir /srv/backups/national \\
      --key keys/national-k1.key.json --keep 14
  jukisync backup --outbox /var/lib/jukisync/outbox-352039 --dir /srv/backups/352039 \\
      --key keys/352039-k1.key.json --keep 30 --json

Hot: the store or outbox may be in use (one LMDB read transaction, compacted).
Verified after writing: the archive is read back, every member checked against the
signed manifest and (stores) the copy opened and its heads and digest compared.
Rotated: only the newest --keep backups of this kind stay in --dir.
The outbox is the municipality's chain (its head and every unconfirmed bundle): back
it up like a store; `jukisync restore --outbox` puts it back.

\b
Exit codes:
  0    written and verified (older backups beyond --keep removed)
  1    writing or verification failed (the bad archive is removed)
  3    bad key file or trust files
  5    no store or outbox at the path given
""",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="A tier store directory.",
)
@click.option(
    "--outbox",
    "outbox_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="A publisher's outbox directory (instead of --store).",
)
@click.option(
    "--dir",
    "backup_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where backups are kept (created if missing).",
)
@key_option
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="How many backups of this kind to keep.",
)
@root_option_optional
@signer_option
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def command(
    store_path: Path | None,
    outbox_path: Path | None,
    backup_dir: Path,
    key_path: Path,
    keep: int,
    root_path: Path | None,
    signer_path: Path | None,
    as_json: bool,
) -> None:
    """Back up a tier store (or a publisher's outbox): hot, consistent, compacted,
    signed, verified after writing, rotated."""
    kind, source = store_or_outbox(store_path, outbox_path)
    key = load_key(_NAME, key_path)
    if not (source / "data.mdb").is_file():
        fail(_NAME, ExitCode.NOT_FOUND, f"no {kind} at {source} (no data.mdb)")
    root, pinned = load_trust(_NAME, root_path, signer_path)
    if pinned is None:
        pinned = key.public  # our own key signed it: verify against it
    store = open_store(_NAME, source) if kind == "store" else None
    out = backup_dir / _name(kind, clock.now_us())
    try:
        manifest = snapshots.make_archive(source, out, key, kind=kind, store=store)
    except (OSError, snapshots.ArchiveError) as exc:
        fail(_NAME, ExitCode.FAILURE, str(exc))
    del store
    try:
        snapshots.verify_archive(out, root, pinned)
    except (snapshots.ArchiveError, snapshots.TrustError) as exc:
        out.unlink(missing_ok=True)
        fail(_NAME, ExitCode.FAILURE, f"verification after writing failed: {exc}")
    existing = sorted(backup_dir.glob(f"{PREFIX}{kind}-*.tar"))
    removed = existing[:-keep]
    for old in removed:
        old.unlink()
    result = {
        "backup": str(out),
        "kind": kind,
        "verified": True,
        "heads": manifest.raw["heads"],
        "size": out.stat().st_size,
        "kept": [str(p) for p in existing[-keep:]],
        "removed": [str(p) for p in removed],
    }
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    click.echo(f"{out}: {kind} backup, {result['size']:,} bytes, verified")
    for old in removed:
        click.echo(f"  removed {old}")
