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
    root_option_with,
    signer_option,
)
from jukisync.cli.common import fail, load_tier_config
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.trust import storedir

__all__ = ["command"]

_NAME = "bootstrap"

root_option = root_option_with(
    required=False,
    help="With --snapshot (required): the root public key (64 hex digits or a .pub.json); "
    "the registry must verify against it (the archive's own root.pub is not trusted).",
)


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync bootstrap --peer --config /etc/jukisync/centre-east.toml --json
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
centre's forward backlog is queued again. A store whose change log was pruned
(`jukisync retention`) is rebuilt from its archives too (--archive-dir): every
envelope since seq 1 is re-verified, the archived ones included; a missing archive
fails the bootstrap, naming it.

With --peer the store is built over RabbitMQ instead: the node of --config starts
with an empty store, hears every origin's signed head and asks its peers for the
ranges it lacks (a centre: the origin, then its twin centre; national: the centres),
re-sent from their change logs; each envelope goes through the same verifying apply.
It stops once healthy (every announced head reached, nothing pending or halted) and
runs `check`; then start the node with `jukisync run --config`. Run it while no other
daemon of the same id consumes its queue (e.g. after the old node stopped, or a
node lost with its store).

\b
Exit codes:
  0    built and verified
  1    verification failed (nothing is left at --store); --peer: not caught up
       within --timeout (what was verified stays), or `check` found problems
  2    a store already exists at --store; bad combination of options
  3    untrusted: the registry does not verify against --root, or the manifest's
       signer is neither in the registry nor the pinned --signer
  4    the archive is unreadable or does not match its manifest
  5    no archive at --snapshot
  7    --peer: the broker is unreachable, or the store is locked by a running daemon
""",
)
@click.option(
    "--snapshot",
    "archive",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A snapshot written by `jukisync snapshot`.",
)
@click.option(
    "--peer",
    is_flag=True,
    help="Instead of a snapshot: build the store over RabbitMQ from the peers (the twin "
    "centre, or the centres for national), as the node of --config.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --peer: the new node's config (its store must not exist yet).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="With --peer: give up (exit 1) when not caught up within this many seconds.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the new store (must not hold one); with --peer, the config's.",
)
@root_option
@signer_option
@click.option(
    "--archive-dir",
    "archive_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the change-log archives of a pruned store are (`jukisync retention`), "
    "when not at the paths the store recorded; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def command(
    archive: Path | None,
    peer: bool,
    config_path: Path | None,
    timeout: float,
    store_path: Path | None,
    root_path: Path | None,
    signer_path: Path | None,
    archive_dirs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Build a new node's store from a snapshot (or from its peers over RabbitMQ),
    re-verifying every signed envelope of its change log and the records derived
    from them."""
    if peer:
        if archive is not None or config_path is None:
            fail(_NAME, ExitCode.USAGE, "--peer takes --config FILE and no --snapshot")
        _from_peers(config_path, store_path, timeout, as_json)
        return
    if archive is None or store_path is None or root_path is None:
        fail(_NAME, ExitCode.USAGE, "give --snapshot, --store and --root (or --peer --config)")
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
        report = snapshots.rebuild(source, target, manifest, archive_dirs)
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


def _from_peers(config_path: Path, store_path: Path | None, timeout: float, as_json: bool) -> None:
    import asyncio

    from jukisync import logs
    from jukisync.tier.daemon import StartupError
    from jukisync.tier.peer_bootstrap import bootstrap_from_peers

    loaded = load_tier_config(_NAME, config_path, store_path)
    logs.configure("warning" if as_json else "info")  # on stderr: stdout keeps the JSON
    try:
        report = asyncio.run(bootstrap_from_peers(loaded, timeout))
    except StartupError as exc:
        fail(_NAME, exc.code, str(exc))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), ensure_ascii=False))
    else:
        click.echo(
            f"{report.store}: {report.applied_bundles:,} bundles of {report.origins} origins "
            f"received from the peers, verified and applied; records {report.records:,} "
            f"digest {report.digest}"
        )
        for problem in report.problems:
            click.echo(f"  problem: {problem}", err=True)
    if report.problems:
        fail(_NAME, ExitCode.FAILURE, "not caught up, or the store is inconsistent")
