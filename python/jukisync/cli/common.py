"""What several subcommands share: failing with a meaningful exit code, and opening an
existing tier store from its directory (with the trust files beside it)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from jukisync import _core
from jukisync.exitcodes import ExitCode
from jukisync.trust import storedir

__all__ = ["data_console", "fail", "fresh_data_dir", "open_store", "store_option"]

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
    """Open an existing tier store, verifying its registry against the root key beside it."""
    if not (path / "data.mdb").is_file():
        # Opening a Store creates one: refuse before a typo makes an empty store.
        fail(command, ExitCode.NOT_FOUND, f"no store at {path} (no data.mdb)")
    try:
        registry = storedir.load_registry(path)
    except storedir.StoreDirError as exc:
        fail(command, ExitCode.CONFIG, str(exc))
    # Operator tools read, release and drop; they receive nothing. So any store
    # (aggregator or national) is opened with the national role, which needs no centre
    # key, and without requiring attestations: a halted bundle passed every check of
    # its origin and centres when it arrived.
    try:
        return _core.Store(str(path), role="national", registry=registry, require_attestation=False)
    except _core.JukisyncError as exc:
        fail(command, ExitCode.CONFIG, f"cannot open {path}: {exc}")


store_option = click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A tier store directory (with registry.bin and root.pub beside data.mdb).",
)
