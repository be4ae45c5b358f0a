"""A `Publisher` and its node as a municipality config (`config/municipality.toml`)
says, in one place for the CLI (`jukisync publish`) and for embedding
(`jukisync.open_publisher`).

The one rule a caller would otherwise have to know: a bundle must stay under the
broker's message limit and the centres' `max_bundle_bytes` *after* the centres add
their attestations, so the bundle limit is the smaller of the two minus
`ATTESTATION_ROOM`.
"""

from __future__ import annotations

import os

from jukisync import config as node_config
from jukisync.publisher.bundling import BundlePolicy
from jukisync.publisher.origin import Publisher
from jukisync.publisher.outbox import OutboxError
from jukisync.transport.amqp import AmqpTransport
from jukisync.trust import keys

__all__ = [
    "ATTESTATION_ROOM",
    "PublisherConfigError",
    "bundle_policy",
    "load_config",
    "open_configured",
    "transport_for",
]

# Bytes kept free under the limits for what the centres add to a bundle on its way
# (one attestation is about 250 bytes).
ATTESTATION_ROOM = 1024


class PublisherConfigError(Exception):
    """The config or the key file it names cannot be used; the message says which."""


def load_config(path: str | os.PathLike[str]) -> node_config.MunicipalityConfig:
    """A municipality config; raises `PublisherConfigError` for any other role."""
    try:
        loaded = node_config.load(os.fspath(path))
    except node_config.ConfigError as exc:
        raise PublisherConfigError(str(exc)) from None
    if not isinstance(loaded, node_config.MunicipalityConfig):
        role = type(loaded).__name__.removesuffix("Config").lower()
        raise PublisherConfigError(
            f"{path}: role is {role}; a publisher needs a municipality config"
        )
    return loaded


def bundle_policy(loaded: node_config.MunicipalityConfig) -> BundlePolicy:
    limit = min(loaded.max_bundle_bytes, loaded.broker.max_message_bytes) - ATTESTATION_ROOM
    try:
        return BundlePolicy(loaded.max_updates, loaded.linger_s, max_bytes=limit)
    except ValueError as exc:
        raise PublisherConfigError(f"max_bundle_bytes / broker.max_message_bytes: {exc}") from None


def open_configured(loaded: node_config.MunicipalityConfig) -> Publisher:
    """The config's publisher, holding its outbox's lock. Raises
    `PublisherConfigError` (key file, limits, outbox of another origin or unusable),
    or `lockfile.LockHeld` when another process publishes from the outbox."""
    try:
        pair = keys.load(loaded.signing_key)
    except keys.KeyFileError as exc:
        raise PublisherConfigError(f"signing_key: {exc}") from None
    if pair.owner != loaded.origin:
        raise PublisherConfigError(
            f"signing_key: {loaded.signing_key} belongs to {pair.owner!r}, "
            f"not to origin {loaded.origin}"
        )
    policy = bundle_policy(loaded)
    try:
        return Publisher(
            loaded.origin,
            pair.secret,
            pair.key_id,
            loaded.outbox,
            policy=policy,
            retain_confirmed=loaded.retain_confirmed,
        )
    except OutboxError as exc:
        raise PublisherConfigError(f"outbox: {exc}") from None
    except OSError as exc:
        raise PublisherConfigError(f"outbox: {loaded.outbox}: {exc.strerror or exc}") from None


def transport_for(loaded: node_config.MunicipalityConfig) -> AmqpTransport:
    return AmqpTransport(
        loaded.broker.addresses,
        name=f"jukisync publisher {loaded.origin} pid {os.getpid()}",
        options=loaded.broker,
    )
