"""What the archive commands (`snapshot`, `bootstrap`, `backup`, `restore`, `outbox
reseed`) share: the trust options and their loading, the choice between a store and
an outbox, the checks on an archive and a target directory before anything is
written, how archive errors map to exit codes, and removing a target that failed
verification."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.trust import keys, storedir

__all__ = [
    "archive_errors",
    "check_archive",
    "check_target",
    "load_trust",
    "remove_failed",
    "root_option",
    "root_option_optional",
    "root_option_with",
    "signer_option",
    "store_or_outbox",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def root_option_with(*, required: bool, help: str) -> Callable[[_F], _F]:
    return click.option(
        "--root",
        "root_path",
        required=required,
        type=click.Path(dir_okay=False, path_type=Path),
        help=help,
    )


root_option = root_option_with(
    required=True,
    help="The root public key (64 hex digits or a .pub.json): the registry must verify "
    "against it (the archive's own root.pub is not trusted).",
)
root_option_optional = root_option_with(
    required=False,
    help="Verify the registry in the archive against this root public key (default: "
    "the root.pub saved with the store).",
)
signer_option = click.option(
    "--signer",
    "signer_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pin the public key (.pub.json) the manifest must be signed with, for a signer "
    "the registry does not hold (e.g. the national node's own key).",
)


def load_trust(
    command: str, root_path: Path | None, signer_path: Path | None
) -> tuple[bytes | None, keys.PublicKey | None]:
    """The root public key and the pinned signer the operator gave (each optional)."""
    try:
        root = storedir.read_root_public(root_path) if root_path is not None else None
        pinned = keys.load_public(signer_path) if signer_path is not None else None
    except (storedir.StoreDirError, keys.KeyFileError) as exc:
        fail(command, ExitCode.CONFIG, str(exc))
    return root, pinned


def store_or_outbox(
    store_path: Path | None, outbox_path: Path | None
) -> tuple[Literal["store", "outbox"], Path]:
    """The one of `--store` / `--outbox` given, with its kind (a usage error unless
    exactly one was)."""
    if store_path is not None and outbox_path is None:
        return "store", store_path
    if outbox_path is not None and store_path is None:
        return "outbox", outbox_path
    raise click.UsageError("give exactly one of --store and --outbox")


def check_archive(command: str, archive: Path) -> None:
    if not archive.is_file():
        fail(command, ExitCode.NOT_FOUND, f"{archive}: no such file")


def check_target(command: str, target: Path, kind: str) -> bool:
    """Refuse a target that already holds a store or an outbox (an archive command
    never overwrites one); returns whether the directory is still to be created (then
    a failed verification removes it whole, see `remove_failed`)."""
    if (target / "data.mdb").exists():
        fail(command, ExitCode.USAGE, f"{target} already holds a {kind}; move it aside first")
    return not target.exists()


@contextlib.contextmanager
def archive_errors(command: str) -> Iterator[None]:
    """An untrusted signer or registry exits CONFIG; an unreadable archive, or one that
    does not match its manifest, INPUT."""
    try:
        yield
    except snapshots.TrustError as exc:
        fail(command, ExitCode.CONFIG, str(exc))
    except snapshots.ArchiveError as exc:
        fail(command, ExitCode.INPUT, str(exc))


def remove_failed(target: Path, created: bool, names: Iterable[str]) -> None:
    """Leave nothing half-verified for a daemon to start on: the whole directory if
    this command created it, else only the files it wrote there."""
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for name in names:
        (target / Path(name).name).unlink(missing_ok=True)
