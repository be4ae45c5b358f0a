"""`jukisync bootstrap`: a new node's store from a snapshot, trusting nothing unsigned."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from jukisync import _core
from jukisync.cli.archives import (
    archive_errors,
    check_archive,
    check_target,
    load_trust,
    remove_failed,
    root_option,
    signer_option,
)
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.trust import storedir

__all__ = ["command"]

_NAME = "bootstrap"


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync bootstrap --snapshot national-2026-06-10.tar --store /var/lib/jukisync/national \\
      --root keys/root.pub.json --signer keys/national-k1.pub.json
  jukisync bootstrap --snapshot centre-east.tar --store data/centre-east-new \\
      --root keys/root.pub.json --json

Every envelope of the snapshot's change log is re-applied into the new, empty store
through the same verifying apply the daemons use (origin signatures and centre
attestations batch-verified, keys checked in the registry, chains and sequence
numbers checked); the rebuilt chain heads and record digest must equal the signed
manifest's. Then start the node (`jukisync run`): it catches up from the announced
heads and resends. Bundles released by an operator in the old store are released
again (they are validly signed; the release is reported); open quarantine entries are
re-applied (rejected again: the same origins halt, the evidence is kept); the query
audit trail is carried over and its hash chain verified against the manifest; a
centre's forward backlog is queued again.

\b
Exit codes:
  0    built and verified
  1    verification failed (nothing is left at --store)
  2    a store already exists at --store
  3    untrusted: the registry does not verify against --root, or the manifest's
       signer is neither in the registry nor the pinned --signer
  4    the archive is unreadable or does not match its manifest
  5    no archive at --snapshot
""",
)
@click.option(
    "--snapshot",
    "archive",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A snapshot written by `jukisync snapshot`.",
)
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the new store (must not hold one).",
)
@root_option
@signer_option
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def command(
    archive: Path, store_path: Path, root_path: Path, signer_path: Path | None, as_json: bool
) -> None:
    """Build a new node's store from a snapshot, re-verifying every signed envelope of
    its change log and the records derived from them."""
    check_archive(_NAME, archive)
    created = check_target(_NAME, store_path, "store")
    root, pinned = load_trust(_NAME, root_path, signer_path)
    assert root is not None  # --root is required here
    with (
        archive_errors(_NAME),
        snapshots.extracted(archive) as (manifest, manifest_bytes, signature, data),
    ):
        if manifest.kind != "store":
            fail(_NAME, ExitCode.INPUT, f"{archive} is an archive of an {manifest.kind}")
        registry = snapshots.registry_of(data, root)
        trusted_by = snapshots.check_signer(manifest, manifest_bytes, signature, registry, pinned)
        source = _core.Store(str(data), registry=registry, require_attestation=False)
        # Rebuilt as national: applies without attesting again; the recorded role
        # becomes the snapshot's once verified.
        target = _core.Store(
            str(store_path), role="national", registry=registry, require_attestation=False
        )
        report = snapshots.rebuild(source, target, manifest)
        del source, target
        if not report.problems:
            storedir.write_trust(store_path, (data / storedir.REGISTRY_FILE).read_bytes(), root)
    ok = not report.problems
    if not ok:
        remove_failed(store_path, created, ("data.mdb", "lock.mdb"))
    result = {
        "store": str(store_path),
        "snapshot": str(archive),
        "verified": ok,
        "signer_trusted_by": trusted_by,
        **dataclasses.asdict(report),
        "records": manifest.raw["records"],
        "digest": manifest.raw["digest"],
    }
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        click.echo(
            f"{store_path}: {report.envelopes:,} envelopes of {report.origins} origins "
            f"re-verified and applied ({report.updates:,} updates, {report.released} "
            f"operator releases carried over)"
        )
        for problem in report.problems:
            click.echo(f"  problem: {problem}", err=True)
        if ok:
            click.echo(
                f"  records {manifest.raw['records']:,}  digest {manifest.raw['digest']} (equal)"
            )
    if not ok:
        fail(_NAME, ExitCode.FAILURE, "verification failed; no store was left at --store")
