"""What several subcommands share: failing with a meaningful exit code, and opening an
existing tier store from its directory (with the trust files beside it)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.console import Console

from jukisync import _core
from jukisync.exitcodes import ExitCode
from jukisync.trust import storedir

if TYPE_CHECKING:  # the config module imports the transport: only where needed
    from jukisync.config import AggregatorConfig, NationalConfig

__all__ = [
    "data_console",
    "fail",
    "fresh_data_dir",
    "load_tier_config",
    "open_node_store",
    "open_store",
    "store_option",
]

# Off a terminal nothing limits the width: a table is laid out at its natural width.
_UNBOUNDED_WIDTH = 100_000


def data_console() -> Console:
    """The console tables go to on stdout. Piped or redirected, rich would assume 80
    columns and cut numbers and labels; there it gets all the width a table needs
    (a terminal's width is kept, and tables wrap cells rather than cut them)."""
    out = Console()
    return out if out.is_terminal else Console(width=_UNBOUNDED_WIDTH, soft_wrap=False)


def fail(command: str, code: ExitCode, message: str) -> NoReturn:
    """Diagnostics go to stderr; the exit code says what kind of failure it was."""
    click.echo(f"jukisync {command}: {message}", err=True)
    sys.exit(code)


def fresh_data_dir(command: str, given: Path | None) -> tuple[Path, bool]:
    """The directory a run (demo, bench) works in, and whether it is a temporary one to
    remove afterwards. A given one must be empty: old stores and outboxes would mix
    with a fresh network's keys and data."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix=f"jukisync-{command}-")), True
    if given.exists() and (not given.is_dir() or any(given.iterdir())):
        fail(command, ExitCode.USAGE, f"--data-dir {given} must be empty or not exist yet")
    given.mkdir(parents=True, exist_ok=True)
    return given, False


def open_store(command: str, path: Path) -> _core.Store:
    """Open an existing tier store as the role it recorded, verifying its registry
    against the root key beside it. An aggregator's store opened this way reads but
    cannot apply or release (it has no centre key to attest with): see `open_node_store`."""
    if not (path / "data.mdb").is_file():
        # Opening a Store creates one: refuse before a typo makes an empty store.
        fail(command, ExitCode.NOT_FOUND, f"no store at {path} (no data.mdb)")
    try:
        registry = storedir.load_registry(path)
    except storedir.StoreDirError as exc:
        fail(command, ExitCode.CONFIG, str(exc))
    # Operator tools receive nothing: a halted bundle released here passed every check
    # of its origin and centres when it arrived, so attestations are not required again.
    try:
        return _core.Store(str(path), registry=registry, require_attestation=False)
    except _core.JukisyncError as exc:
        fail(command, ExitCode.CONFIG, f"cannot open {path}: {exc}")


def load_tier_config(
    command: str, config_path: Path, store_path: Path | None
) -> AggregatorConfig | NationalConfig:
    """A centre's or national's config; `store_path`, when given, must be its store."""
    from jukisync import config as node_config

    try:
        loaded = node_config.load(config_path)
    except node_config.ConfigError as exc:
        fail(command, ExitCode.CONFIG, str(exc))
    if not isinstance(loaded, node_config.AggregatorConfig | node_config.NationalConfig):
        fail(command, ExitCode.CONFIG, f"{config_path}: not a centre's or national's config")
    if store_path is not None and Path(loaded.store).resolve() != store_path.resolve():
        fail(
            command,
            ExitCode.USAGE,
            f"--store {store_path} is not the store of {config_path} ({loaded.store})",
        )
    return loaded


def open_node_store(command: str, config_path: Path, store_path: Path | None) -> _core.Store:
    """Open a node's store as its daemon does: its role, and at a centre its signing
    key (so what is applied here is attested and queued for national like anything
    the daemon applies). `store_path`, when given, must be the config's store."""
    from jukisync.tier import daemon

    loaded = load_tier_config(command, config_path, store_path)
    if not (Path(loaded.store) / "data.mdb").is_file():
        fail(command, ExitCode.NOT_FOUND, f"no store at {loaded.store} (no data.mdb)")
    try:
        trust = daemon.load_trust(loaded.trust)
        return daemon.open_store(loaded, trust)
    except daemon.StartupError as exc:
        fail(command, exc.code, str(exc))


store_option = click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A tier store directory (with registry.bin and root.pub beside data.mdb).",
)
