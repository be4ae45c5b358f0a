"""The trust files kept beside a tier store: `registry.bin` and `root.pub`.

A `Store` cannot be opened without a verified `KeyRegistry`, and a registry is only
as good as the root key that signed it. The demo and the daemons therefore write
both into the store's directory, so tools that open a store on their own (`jukisync
lookup`) verify the registry against the same root key the node used.

`root.pub` is the root public key as 64 hex digits (one line); a `keys` public key
file (`*.pub.json`) copied there is accepted too.
"""

from __future__ import annotations

import os
from pathlib import Path

from jukisync import _core
from jukisync.trust import keys

__all__ = [
    "REGISTRY_FILE",
    "ROOT_FILE",
    "StoreDirError",
    "load_registry",
    "read_root_public",
    "write_trust",
]

REGISTRY_FILE = "registry.bin"
ROOT_FILE = "root.pub"


class StoreDirError(Exception):
    """The trust files of a store directory are missing or invalid."""


def write_trust(store_dir: str | os.PathLike[str], registry: bytes, root_public: bytes) -> None:
    directory = Path(store_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / REGISTRY_FILE).write_bytes(registry)
    (directory / ROOT_FILE).write_text(root_public.hex() + "\n")


def read_root_public(path: str | os.PathLike[str]) -> bytes:
    """A root public key file: 64 hex digits, or a `keys` public key file (.pub.json)."""
    path = Path(path)
    try:
        return _root_public(path)
    except OSError as exc:
        raise StoreDirError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _root_public(path: Path) -> bytes:
    text = path.read_text().strip()
    if text.startswith("{"):
        try:
            return keys.load_public(path).public_key
        except keys.KeyFileError as exc:
            raise StoreDirError(str(exc)) from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise StoreDirError(f"{path}: expected the root public key as 64 hex digits")
    return key


def load_registry(store_dir: str | os.PathLike[str]) -> _core.KeyRegistry:
    """The registry beside a store, verified against the root key beside it."""
    directory = Path(store_dir)
    registry_path, root_path = directory / REGISTRY_FILE, directory / ROOT_FILE
    for path in (registry_path, root_path):
        if not path.is_file():
            raise StoreDirError(
                f"{path} is missing: a store directory needs {REGISTRY_FILE} and {ROOT_FILE} "
                "(written by `jukisync demo` and the daemons) to be opened"
            )
    try:
        return _core.KeyRegistry(registry_path.read_bytes(), _root_public(root_path))
    except _core.JukisyncError as exc:
        raise StoreDirError(f"{registry_path}: {exc}") from None
