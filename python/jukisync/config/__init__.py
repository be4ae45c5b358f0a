"""Node configuration (DESIGN.md §8): TOML files decoded into msgspec Structs that
reject unknown keys and name the field and value at fault.

One file per node; `role` says which of the three kinds it is:

- ``aggregator``: an aggregation centre (serves prefectures, attests and forwards);
- ``national``: the national centre;
- ``municipality``: a municipal system's publisher (`jukisync publish`).

Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec

from jukisync.config import errors as configerrors
from jukisync.transport.amqp import AmqpOptions
from jukisync.wire import codes

__all__ = [
    "AggregatorConfig",
    "BrokerConfig",
    "ConfigError",
    "HealthConfig",
    "HttpConfig",
    "MunicipalityConfig",
    "NationalConfig",
    "NodeConfigFile",
    "QueryServiceConfig",
    "ReplicationConfig",
    "RetentionConfig",
    "TierConfig",
    "TierLimits",
    "TrustConfig",
    "load",
]


class ConfigError(Exception):
    """A config file that cannot be used; says which file, field and value."""

    def __init__(self, path: Path | str, message: str) -> None:
        message = configerrors.redact_text(message)  # never a password, whatever the path
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Prefecture = Annotated[str, msgspec.Meta(pattern=r"^(0[1-9]|[1-3][0-9]|4[0-7])$")]
NodeId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class BrokerConfig(AmqpOptions, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """RabbitMQ: credentials in the URL (one user per role, so the broker-validated
    `user_id` names the node); `amqps://` with `ca_file`/`cert_file`/`key_file` for
    TLS. The transport's own options (`AmqpOptions`: queue_type, max_message_bytes,
    timeouts, reconnect backoff) are accepted here, so there is one definition."""

    # One broker (`url = "amqp://..."`) or the nodes of a cluster (`urls = [...]`, or
    # a list in `url`): the transport connects to one and fails over to the next.
    # Set one of the two keys, not both; neither means the local default broker.
    url: str | list[str] | None = None
    urls: list[str] | None = None
    prefetch: Positive = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.url is not None and self.urls is not None:
            raise ValueError("url and urls are alternatives: list every node in `urls`")
        if not self.addresses:
            raise ValueError("urls: give at least one broker URL")

    @property
    def addresses(self) -> tuple[str, ...]:
        """The broker URLs, in the order they are tried."""
        given = self.urls if self.urls is not None else self.url
        if given is None:
            return (DEFAULT_BROKER_URL,)
        return (given,) if isinstance(given, str) else tuple(given)


class TrustConfig(_Section, frozen=True, kw_only=True):
    """The root public key pins the signed key registry (DESIGN.md §7)."""

    root_public_key: str
    registry: str


class QueryServiceConfig(_Section, frozen=True, kw_only=True):
    """Answer agencies' queries over RabbitMQ (`jukisync.query`, routed by node id)
    under this policy; large batch confirmations are written under `out_dir`."""

    policy: str
    out_dir: str | None = None


class HttpConfig(_Section, frozen=True, kw_only=True):
    """`/healthz` and Prometheus `/metrics`; port 0 disables the endpoint."""

    listen: str = "127.0.0.1"
    port: Port = 9464


class ReplicationConfig(_Section, frozen=True, kw_only=True):
    """Knowing and repairing divergence (DESIGN.md §3a): head announcements heard on
    the node's `jukisync.heads.<id>` queue; an aggregator relays the heads it holds
    every `announce_interval_s`. Every `resend_interval_s` the node compares its heads
    with the announced ones and asks for what it lacks (the origin, after
    `answer_wait_s` without an answer the twin centre; national: the centres), at most
    `repair_max_bundles` bundles per request and `max_requests_per_s` overall."""

    announce_interval_s: Seconds = 10.0
    resend_interval_s: Seconds = 1.0
    answer_wait_s: Seconds = 5.0
    repair_max_bundles: Positive = 256
    max_requests_per_s: Seconds = 20.0


class HealthConfig(_Section, frozen=True, kw_only=True):
    """When `/healthz` says `degraded` (HTTP 503): an origin halted, behind its
    announced head by more than `max_lag_seqs` sequence numbers or `max_lag_s`
    seconds, or bundles in pending while its head has not moved for
    `pending_stuck_s` seconds; and for `settle_s` after it began hearing heads
    (default: two `replication.announce_interval_s`), since until a round of
    announcements came in it cannot know what exists."""

    max_lag_seqs: NonNegative = 1000
    max_lag_s: Seconds = 60.0
    pending_stuck_s: Seconds = 60.0
    settle_s: Seconds | None = None


class RetentionConfig(_Section, frozen=True, kw_only=True):
    """Change-log retention (`jukisync retention`): every `interval_s` the daemon signs
    a checkpoint, archives the change-log entries older than the policy to
    `archive_dir` and prunes them from the store. Without `archive_dir` it never
    prunes."""

    archive_dir: str | None = None
    keep_bundles: NonNegative = 100_000
    keep_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    interval_s: Seconds = 3600.0
    signing_key: str | None = None


class TierLimits(_Section, frozen=True, kw_only=True):
    """`[limits]` of a tier node: its store's bounds and its node's batch sizes."""

    max_bundle_bytes: Positive = 8 << 20
    pending_limit: Positive = 10_000
    map_size: Positive = 1 << 36
    max_batch: Positive = 256  # deliveries per store.apply
    max_batch_updates: Positive = 50_000  # updates per store.apply (a larger bundle: alone)
    forward_batch: Positive = 512  # aggregator: forwards per round to national


class _TierSections(_Section, frozen=True, kw_only=True):
    """What every tier node's config has (`tier.assembly` builds the node from it)."""

    store: str
    trust: TrustConfig
    broker: BrokerConfig = BrokerConfig()
    http: HttpConfig = HttpConfig()
    limits: TierLimits = TierLimits()
    replication: ReplicationConfig = ReplicationConfig()
    health: HealthConfig = HealthConfig()
    retention: RetentionConfig = RetentionConfig()
    query: QueryServiceConfig | None = None


class AggregatorConfig(
    _TierSections, tag="aggregator", tag_field="role", kw_only=True, frozen=True
):
    id: NodeId
    prefectures: list[Prefecture]
    signing_key: str

    def __post_init__(self) -> None:
        if not self.prefectures:
            raise ValueError("prefectures: an aggregator serves at least one prefecture")
        if len(set(self.prefectures)) != len(self.prefectures):
            raise ValueError(f"prefectures: listed twice in {self.prefectures}")


class NationalConfig(_TierSections, tag="national", tag_field="role", kw_only=True, frozen=True):
    id: NodeId = "national"

    def __post_init__(self) -> None:
        if self.retention.archive_dir is not None and self.retention.signing_key is None:
            raise ValueError(
                "retention.signing_key: national has no other key to sign its checkpoints"
            )


class MunicipalityConfig(_Section, tag="municipality", tag_field="role", kw_only=True, frozen=True):
    origin: str
    signing_key: str
    outbox: str
    broker: BrokerConfig = BrokerConfig()
    max_updates: Positive = 500
    linger_s: Seconds = 0.05
    # A bundle's signed envelope stays under this and under broker.max_message_bytes,
    # with room for a centre's attestation: keep it at or below the centres'
    # limits.max_bundle_bytes.
    max_bundle_bytes: Annotated[int, msgspec.Meta(ge=8192)] = 8 << 20
    retain_confirmed: Positive = 100_000
    # The signed confirmed head goes to `jukisync.heads` at start, after each
    # confirmed batch and every this many seconds while the publisher runs.
    announce_interval_s: Seconds = 10.0

    def __post_init__(self) -> None:
        if not codes.is_valid_local_government_code(self.origin):
            raise ValueError(f"origin: {self.origin!r} is not a valid local government code")


TierConfig = AggregatorConfig | NationalConfig
NodeConfigFile = AggregatorConfig | NationalConfig | MunicipalityConfig


def _resolve(config: NodeConfigFile, base: Path) -> NodeConfigFile:
    """Paths relative to the config file's directory, so a config works from any cwd."""

    def path(p: str | None) -> str | None:
        return None if p is None else str((base / p).resolve())

    broker = msgspec.structs.replace(
        config.broker,
        ca_file=path(config.broker.ca_file),
        cert_file=path(config.broker.cert_file),
        key_file=path(config.broker.key_file),
    )
    if isinstance(config, MunicipalityConfig):
        return msgspec.structs.replace(
            config,
            broker=broker,
            signing_key=str(path(config.signing_key)),
            outbox=str(path(config.outbox)),
        )
    trust = TrustConfig(
        root_public_key=str(path(config.trust.root_public_key)),
        registry=str(path(config.trust.registry)),
    )
    query = config.query and QueryServiceConfig(
        policy=str(path(config.query.policy)), out_dir=path(config.query.out_dir)
    )
    retention = msgspec.structs.replace(
        config.retention,
        archive_dir=path(config.retention.archive_dir),
        signing_key=path(config.retention.signing_key),
    )
    resolved = msgspec.structs.replace(
        config,
        broker=broker,
        trust=trust,
        query=query,
        retention=retention,
        store=str(path(config.store)),
    )
    if isinstance(resolved, AggregatorConfig):
        return msgspec.structs.replace(resolved, signing_key=str(path(resolved.signing_key)))
    return resolved


def load(path: str | Path) -> NodeConfigFile:
    """Read and check a node config; raises ConfigError naming file, field and value."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from exc
    if "role" not in raw:
        raise ConfigError(path, "missing field `role` (aggregator, national or municipality)")
    try:
        config: NodeConfigFile = msgspec.convert(raw, NodeConfigFile)
    except msgspec.ValidationError as exc:
        where, what = configerrors.explain(exc, raw, NodeConfigFile)
        raise ConfigError(path, f"{where}: {what}" if where else what) from None
    return _resolve(config, path.parent)
