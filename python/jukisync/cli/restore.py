"""`jukisync restore`: put a verified backup back as a store or an outbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from jukisync.cli.archives import (
    archive_errors,
    check_archive,
    check_target,
    load_trust,
    remove_failed,
    root_option_optional,
    signer_option,
    store_or_outbox,
)
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots

__all__ = ["command"]

_NAME = "restore"


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync restore --backup /srv/backups/national/jukisync-backup-store-...tar \\
      --store /var/lib/jukisync/national --signer keys/national-k1.pub.json
  jukisync restore --backup /srv/backups/352039/jukisync-backup-outbox-...tar \\
      --outbox /var/lib/jukisync/outbox-352039 --signer keys/352039-k1.pub.json --json

The archive is checked first (every member against the signed manifest, the signer
against the registry or the pinned --signer); the restored store is then opened and
its chain heads and digest compared with the manifest. Stop the node's daemon (or
publisher) first, and move the damaged store aside: restore never overwrites one.
A restored node is as old as its backup: start it and it catches up from its peers
(announced heads and resends), or repair it from a peer at once (see the README,
"Snapshots, backups and restores").

\b
Exit codes:
  0    restored and verified
  1    the restored copy does not match its manifest (removed again)
  2    a store or outbox already exists at the target
  3    untrusted signer or registry
  4    the archive is unreadable, of the other kind, or does not match its manifest
  5    no archive at --backup
""",
)
@click.option(
    "--backup",
    "archive",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An archive written by `jukisync backup` (or `snapshot`).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Restore a tier store into this directory.",
)
@click.option(
    "--outbox",
    "outbox_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Restore a publisher's outbox into this directory (instead of --store).",
)
@root_option_optional
@signer_option
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def command(
    archive: Path,
    store_path: Path | None,
    outbox_path: Path | None,
    root_path: Path | None,
    signer_path: Path | None,
    as_json: bool,
) -> None:
    """Restore a tier store (or an outbox) from a backup, verified before and after."""
    kind, target = store_or_outbox(store_path, outbox_path)
    check_archive(_NAME, archive)
    created = check_target(_NAME, target, kind)
    root, pinned = load_trust(_NAME, root_path, signer_path)
    with archive_errors(_NAME):
        manifest = snapshots.verify_archive(archive, root, pinned)
        if manifest.kind != kind:
            fail(
                _NAME, ExitCode.INPUT, f"{archive} is a backup of an {manifest.kind}, not a {kind}"
            )
        with snapshots.extracted(archive) as (_, _, _, data):
            target.mkdir(parents=True, exist_ok=True)
            for member in sorted(data.iterdir()):
                shutil.copy2(member, target / member.name)
        problem = snapshots.check_restored(target, manifest, root)
    if problem is not None:
        remove_failed(target, created, manifest.raw["files"])
        fail(_NAME, ExitCode.FAILURE, f"{target}: {problem}")
    result = {
        "restored": str(target),
        "kind": kind,
        "backup": str(archive),
        "created_at": manifest.created_at,
        "heads": manifest.raw["heads"],
    }
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    click.echo(
        f"{target}: {kind} restored from {archive} ({len(manifest.heads)} origins), verified"
    )
