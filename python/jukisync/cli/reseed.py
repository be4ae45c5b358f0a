"""`jukisync outbox reseed`: bring a lost or old outbox's chain head up to a centre's."""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack
from pathlib import Path

import click

from jukisync import _core, lockfile
from jukisync import config as node_config
from jukisync.cli.archives import check_archive, load_trust, root_option
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.publisher.origin import LOCK_FILE
from jukisync.publisher.outbox import Outbox, OutboxError
from jukisync.publisher.reseed import ReseedError, reseed
from jukisync.trust import storedir

__all__ = ["command"]

_NAME = "outbox reseed"


@click.command(
    "reseed",
    epilog="""\b
Examples:
  # the municipality's disk was lost: a fresh outbox, reseeded from a centre's snapshot
  jukisync outbox reseed --config /etc/jukisync/municipality-352039.toml \\
      --from-snapshot centre-east.tar --root keys/root.pub.json
  # an outbox restored from an old backup, caught up from a centre's store
  jukisync outbox reseed --config config/municipality.toml --from-store data/centre-east \\
      --root keys/root.pub.json --json

Every adopted bundle is checked as the origin's own: signed by its key in the
root-verified registry, contiguous, chained by prev_hash up to the centre's head.
Then publish again (`jukisync publish`): the chain continues without a fork. Updates
the old outbox had accepted but the centres never received must be published again.

\b
Exit codes:
  0    reseeded, or already current (or ahead: the centres will ask for the rest)
  1    refused: a fork, a damaged change log, or an outbox holding updates or
       unconfirmed bundles numbered after its head (nothing was changed)
  3    bad config, or the registry does not verify against --root
  5    no store or snapshot at the path given
  7    the outbox is in use by a running publisher
""",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Municipality config (role = "municipality"): names the outbox and origin.',
)
@click.option(
    "--from-store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="A centre's tier store directory (read only).",
)
@click.option(
    "--from-snapshot",
    "archive",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A centre's snapshot (`jukisync snapshot`), instead of --from-store.",
)
@root_option
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def command(
    config_path: Path,
    store_path: Path | None,
    archive: Path | None,
    root_path: Path,
    as_json: bool,
) -> None:
    """Reseed a municipality's outbox (the origin's chain) from a centre's change log."""
    if (store_path is None) == (archive is None):
        raise click.UsageError("give exactly one of --from-store and --from-snapshot")
    try:
        loaded = node_config.load(config_path)
    except node_config.ConfigError as exc:
        fail(_NAME, ExitCode.CONFIG, str(exc))
    if not isinstance(loaded, node_config.MunicipalityConfig):
        fail(_NAME, ExitCode.CONFIG, f"{config_path}: reseed needs a municipality config")
    root, _ = load_trust(_NAME, root_path, None)
    assert root is not None
    with ExitStack() as stack:
        try:
            stack.enter_context(lockfile.hold(loaded.outbox, LOCK_FILE, "outbox"))
        except lockfile.LockHeld as exc:
            fail(_NAME, ExitCode.UNAVAILABLE, str(exc))
        if archive is not None:
            check_archive(_NAME, archive)
            try:
                _, _, _, data = stack.enter_context(snapshots.extracted(archive))
            except snapshots.ArchiveError as exc:
                fail(_NAME, ExitCode.INPUT, str(exc))
            source_dir = data
        else:
            assert store_path is not None
            if not (store_path / "data.mdb").is_file():
                fail(_NAME, ExitCode.NOT_FOUND, f"no store at {store_path} (no data.mdb)")
            source_dir = store_path
        try:
            registry = _core.KeyRegistry((source_dir / storedir.REGISTRY_FILE).read_bytes(), root)
        except (OSError, _core.JukisyncError) as exc:
            fail(_NAME, ExitCode.CONFIG, f"{source_dir}: registry: {exc}")
        source = _core.Store(str(source_dir), registry=registry, require_attestation=False)
        try:
            outbox = Outbox(loaded.outbox, loaded.origin)
        except OutboxError as exc:
            fail(_NAME, ExitCode.CONFIG, str(exc))
        try:
            result = reseed(outbox, source, registry)
        except ReseedError as exc:
            fail(_NAME, ExitCode.FAILURE, f"{loaded.outbox}: not reseeded: {exc}")
        finally:
            outbox.close()
            del source
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
        return
    click.echo(
        f"{loaded.outbox}: {result.state}: chain head seq {result.before} -> {result.after} "
        f"({result.adopted} bundles adopted from the centre)"
    )
