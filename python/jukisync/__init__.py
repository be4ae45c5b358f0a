"""jukisync: replication engine for Japan's resident identity records.

Municipal systems embed the publisher with `jukisync.open_publisher(config)`
(`jukisync.publisher.embedded`) and hand it `jukisync.UpdateLine`s (the input format,
`docs/input-format.md`); the tier store is `jukisync.Store` (the Rust core).
"""

from typing import TYPE_CHECKING, Any

from jukisync._core import (
    ApplyResult,
    JukisyncError,
    KeyRegistry,
    MalformedError,
    QuarantineEntry,
    QuarantineError,
    Record,
    RegistryError,
    SignatureError,
    Store,
    StoreError,
)

if TYPE_CHECKING:
    from jukisync.publisher.embedded import open_publisher
    from jukisync.publisher.input import UpdateLine

__all__ = [
    "ApplyResult",
    "JukisyncError",
    "KeyRegistry",
    "MalformedError",
    "QuarantineEntry",
    "QuarantineError",
    "Record",
    "RegistryError",
    "SignatureError",
    "Store",
    "StoreError",
    "UpdateLine",
    "open_publisher",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: it pulls in the RabbitMQ client, which a reader of a
    # store does not need.
    if name == "open_publisher":
        from jukisync.publisher.embedded import open_publisher

        return open_publisher
    if name == "UpdateLine":
        from jukisync.publisher.input import UpdateLine

        return UpdateLine
    raise AttributeError(f"module 'jukisync' has no attribute {name!r}")
