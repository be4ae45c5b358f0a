"""The one way to build a tier node (aggregation centre or national) from its config.

`assemble_tier(config)` reads the trust files, opens the store with the config's
limits (writing the trust files beside it, see `storedir`), makes the broker
transport from `[broker]` (URL, TLS, namespace, queue type, timeouts), names the
node's queue (`queue_name`) and builds the `TierNode` on them, plus, with a `[query]`
section, the `QueryServer` on the same transport connection. The daemon, the demo
network, the end-to-end bench and the tests all call it, so each runs the production
queue names, limits and broker options; they differ only in what they hand in
(another transport, e.g. in-process or timed; a store already open, for a restart).

Every failure is a `StartupError` carrying its exit code and one line naming the
config field.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from jukisync import _core
from jukisync.config import AggregatorConfig, TierConfig, TrustConfig
from jukisync.exitcodes import ExitCode
from jukisync.query.policy import Policy, PolicyError, load_policy
from jukisync.query.rpc import QueryServer
from jukisync.query.service import QueryService
from jukisync.tier.catchup import CentreSigner
from jukisync.tier.node import NodeConfig, Role, TierNode
from jukisync.transport.amqp import AmqpTransport, bundle_queue_name, heads_queue_name
from jukisync.transport.base import Transport
from jukisync.trust import keys, storedir

__all__ = [
    "StartupError",
    "TierConfig",
    "TierParts",
    "Trust",
    "assemble_tier",
    "broker_transport",
    "load_trust",
    "national_queue_name",
    "open_store",
    "queue_name",
    "role_of",
]


class StartupError(Exception):
    """The node cannot start; `code` is the exit code, the message one line."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def role_of(config: TierConfig) -> Role:
    return "aggregator" if isinstance(config, AggregatorConfig) else "national"


def national_queue_name(node_id: str) -> str:
    """The national node's queue of forwarded bundles."""
    return f"jukisync.forwards.{node_id}"


def queue_name(config: TierConfig) -> str:
    """The queue a tier node consumes: an aggregator's for its prefecture set, the
    national node's of forwards."""
    if isinstance(config, AggregatorConfig):
        return bundle_queue_name(config.id, config.prefectures)
    return national_queue_name(config.id)


@dataclass(frozen=True, slots=True)
class Trust:
    registry_bytes: bytes
    root_public: bytes
    registry: _core.KeyRegistry


def load_trust(trust: TrustConfig) -> Trust:
    """The registry, verified against the root public key of the config."""
    try:
        root = storedir.read_root_public(trust.root_public_key)
    except storedir.StoreDirError as exc:
        raise StartupError(ExitCode.CONFIG, f"trust.root_public_key: {exc}") from None
    try:
        data = Path(trust.registry).read_bytes()
    except OSError as exc:
        raise StartupError(
            ExitCode.CONFIG, f"trust.registry: {trust.registry}: {exc.strerror or exc}"
        ) from None
    try:
        registry = _core.KeyRegistry(data, root)
    except _core.JukisyncError as exc:
        raise StartupError(
            ExitCode.CONFIG, f"trust.registry: {trust.registry} does not verify: {exc}"
        ) from None
    return Trust(data, root, registry)


def _centre_key(config: AggregatorConfig, registry: _core.KeyRegistry) -> keys.KeyPair:
    try:
        pair = keys.load(config.signing_key)
    except keys.KeyFileError as exc:
        raise StartupError(ExitCode.CONFIG, f"signing_key: {exc}") from None
    if pair.owner != config.id:
        raise StartupError(
            ExitCode.CONFIG,
            f"signing_key: {config.signing_key} belongs to {pair.owner!r}, not to this "
            f"centre {config.id!r}",
        )
    known = registry.key_for(pair.key_id)
    if known != (config.id, pair.public_key):
        raise StartupError(
            ExitCode.CONFIG,
            f"signing_key: key {pair.key_id!r} of {config.id!r} is not in the registry "
            f"(version {registry.version}): national would refuse its attestations",
        )
    if not registry.valid_at(pair.key_id, config.id, keys.now_us()):
        raise StartupError(
            ExitCode.CONFIG,
            f"signing_key: key {pair.key_id!r} is not valid now in the registry "
            f"(version {registry.version}): expired, revoked or not yet valid",
        )
    return pair


def open_store(config: TierConfig, trust: Trust) -> _core.Store:
    """The node's store with the config's limits, the trust files written beside it."""
    pair = _centre_key(config, trust.registry) if isinstance(config, AggregatorConfig) else None
    limits = config.limits
    try:
        storedir.write_trust(config.store, trust.registry_bytes, trust.root_public)
        return _core.Store(
            config.store,
            role=role_of(config),
            registry=trust.registry,
            # an aggregator attests what it forwards with its own key
            centre_id=None if pair is None else config.id,
            centre_key=None if pair is None else pair.secret,
            centre_key_id=None if pair is None else pair.key_id,
            map_size=limits.map_size,
            max_bundle_bytes=limits.max_bundle_bytes,
            pending_limit=limits.pending_limit,
            # a centre carries only the prefectures it serves (security event otherwise)
            prefectures=list(config.prefectures) if isinstance(config, AggregatorConfig) else None,
        )
    except OSError as exc:
        raise StartupError(
            ExitCode.CONFIG, f"store: {config.store}: {exc.strerror or exc}"
        ) from None
    except _core.JukisyncError as exc:
        raise StartupError(ExitCode.CONFIG, f"store: cannot open {config.store}: {exc}") from None


def broker_transport(config: TierConfig, name: str) -> AmqpTransport:
    """The node's RabbitMQ connection under `[broker]` (not yet connected)."""
    try:
        return AmqpTransport(config.broker.addresses, name=name, options=config.broker)
    except ValueError as exc:
        raise StartupError(ExitCode.CONFIG, f"broker: {exc}") from None


def _query_policy(config: TierConfig, transport: Transport | None) -> Policy | None:
    """The `[query]` policy, checked before anything is opened (None without one)."""
    if config.query is None:
        return None
    try:
        policy = load_policy(config.query.policy)
    except PolicyError as exc:
        raise StartupError(ExitCode.CONFIG, f"query.policy: {exc}") from None
    if transport is not None and not isinstance(transport, AmqpTransport):
        raise StartupError(ExitCode.CONFIG, "query: queries are served over RabbitMQ only")
    return policy


@dataclass(frozen=True, slots=True)
class TierParts:
    """A tier node and what it was built on; nothing is started or connected yet."""

    config: TierConfig
    queue: str  # the node's queue, unprefixed (the transport adds its namespace)
    store: _core.Store
    transport: Transport
    node: TierNode
    queries: QueryServer | None  # with a `[query]` section

    @property
    def role(self) -> Role:
        return role_of(self.config)


async def assemble_tier(
    config: TierConfig,
    *,
    transport: Transport | None = None,
    store: _core.Store | None = None,
    connection_name: str | None = None,
) -> TierParts:
    """Build the node of `config` (see the module docstring).

    `transport` replaces the broker connection made from `[broker]` (the demo's
    in-process broker, the bench's timing wrapper); `store` an already open store
    (a node restarted in the same process: LMDB opens an environment once per
    process). `connection_name` is what operators see on the broker.
    """
    role = role_of(config)
    policy = _query_policy(config, transport)
    if transport is None:  # not connected yet: this only checks `[broker]`
        name = connection_name or f"jukisync {role} {config.id} pid {os.getpid()}"
        transport = broker_transport(config, name)
    trust = load_trust(config.trust)
    signer = None
    if isinstance(config, AggregatorConfig):  # it relays heads signed with its key
        pair = _centre_key(config, trust.registry)
        signer = CentreSigner(config.id, pair.key_id, pair.secret)
    if store is None:
        store = await asyncio.to_thread(open_store, config, trust)
    queue = queue_name(config)
    limits, replication = config.limits, config.replication
    node = TierNode(
        NodeConfig(
            name=config.id,
            role=role,
            queue=queue,
            prefectures=config.prefectures if isinstance(config, AggregatorConfig) else (),
            max_batch=limits.max_batch,
            max_batch_updates=limits.max_batch_updates,
            prefetch=config.broker.prefetch,
            forward_batch=limits.forward_batch,
            heads_queue=heads_queue_name(config.id),
            resend_interval_s=replication.resend_interval_s,
            announce_interval_s=replication.announce_interval_s,
            answer_wait_s=replication.answer_wait_s,
            repair_max_bundles=replication.repair_max_bundles,
            max_requests_per_s=replication.max_requests_per_s,
        ),
        store,
        transport,
        registry=trust.registry,
        signer=signer,
    )
    queries = None
    if policy is not None and config.query is not None:
        # On the node's own connection: its TLS, credentials and namespace.
        assert isinstance(transport, AmqpTransport)
        service = QueryService(store, policy, out_dir=config.query.out_dir)
        queries = QueryServer(transport, service, node=config.id)
    return TierParts(config, queue, store, transport, node, queries)
