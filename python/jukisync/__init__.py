"""jukisync: replication engine for Japan's resident identity records.

Municipal systems embed the publisher with `jukisync.open_publisher(config)`
(`jukisync.publisher.embedded`); the tier store is `jukisync.Store` (the Rust core).
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
    "open_publisher",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: it pulls in the RabbitMQ client, which a reader of a
    # store does not need.
    if name == "open_publisher":
        from jukisync.publisher.embedded import open_publisher

        return open_publisher
    raise AttributeError(f"module 'jukisync' has no attribute {name!r}")
