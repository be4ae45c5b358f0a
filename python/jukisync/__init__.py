"""jukisync: replication engine for Japan's resident identity records."""

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
]
