"""`jukisync snapshot`: a signed, compacted hot copy of a running tier store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jukisync.cli.common import fail, open_store, store_option
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.trust import keys

__all__ = ["command", "key_option", "load_key", "print_manifest"]

_NAME = "snapshot"

key_option = click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's secret key file (`keys generate`): signs the manifest.",
)


def load_key(command: str, path: Path) -> keys.KeyPair:
    try:
        return keys.load(path)
    except keys.KeyFileError as exc:
        fail(command, ExitCode.CONFIG, str(exc))


def print_manifest(manifest: snapshots.Manifest, out: Path, as_json: bool) -> None:
    raw = manifest.raw
    if as_json:
        summary = {k: raw[k] for k in ("kind", "created_at", "heads", "files", "signer")}
        summary.update({k: raw[k] for k in ("records", "digest") if k in raw})
        click.echo(json.dumps({"archive": str(out), **summary}, ensure_ascii=False))
        return
    size = sum(f["size"] for f in raw["files"].values())
    click.echo(f"{out}: {raw['kind']} archive, {size:,} bytes, {len(raw['heads'])} origins")
    if "records" in raw:
        click.echo(f"  records {raw['records']:,}  digest {raw['digest']}")
    click.echo(f"  signed by {raw['signer']['owner']} ({raw['signer']['key_id']})")


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync snapshot --store /var/lib/jukisync/national --key keys/national-k1.key.json \\
      --out /srv/snapshots/national-2026-06-10.tar
  jukisync snapshot --store data/centre-east --key keys/centre-east-k1.key.json \\
      --out centre-east.tar --json

The store may be in use by its daemon: the copy is taken in one LMDB read transaction
(consistent) and compacted. Build a new node from it with `jukisync bootstrap`.

\b
Exit codes:
  0    written
  1    the copy or the archive could not be written (disk full, OUT exists)
  3    bad key file, or the store's trust files are missing or invalid
  5    no store at --store
""",
)
@store_option
@key_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The archive to write (a tar file; refused if it exists).",
)
@click.option("--json", "as_json", is_flag=True, help="The manifest summary as one JSON object.")
def command(store_path: Path, key_path: Path, out: Path, as_json: bool) -> None:
    """Write a consistent, compacted hot copy of a tier store with a manifest (chain
    heads per origin, record count and digest, file digests, creation time) signed by
    the node's key."""
    key = load_key(_NAME, key_path)
    store = open_store(_NAME, store_path)
    try:
        manifest = snapshots.make_archive(store_path, out, key, store=store)
    except (OSError, snapshots.ArchiveError) as exc:
        fail(_NAME, ExitCode.FAILURE, str(exc))
    print_manifest(manifest, out, as_json)
