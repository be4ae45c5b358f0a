"""A whole network in one process: publishers, aggregation centres, the national node.

Used by `jukisync demo` and the end-to-end tests. It lays out a data directory, makes
keys and a registry signed by a fresh root key, opens the stores (with their trust
files beside them, see `storedir`), wires every node to its own connection of one
in-process broker (or of RabbitMQ: pass `transports`, e.g. an `AmqpNetwork`), and
reports whether the tiers converged.

    data_dir/keys/                 key files (keys.save), root included, and the
                                   trust files the tier configs name (registry.bin, root.pub)
    data_dir/<centre>/             aggregator stores (+ registry.bin, root.pub)
    data_dir/national/             the national store (+ registry.bin, root.pub)
    data_dir/outbox/<origin>/      each publisher's outbox
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from jukisync import _core
from jukisync.config import (
    AggregatorConfig,
    HttpConfig,
    NationalConfig,
    ReplicationConfig,
    TierConfig,
    TierLimits,
    TrustConfig,
)
from jukisync.publisher.bundling import BundlePolicy
from jukisync.publisher.node import PublisherNode
from jukisync.publisher.origin import Publisher, Validator
from jukisync.tier.assembly import assemble_tier
from jukisync.tier.node import TierNode
from jukisync.transport.base import Transport
from jukisync.transport.inprocess import InProcessNetwork
from jukisync.trust import keys, storedir
from jukisync.wire.messages import Update

__all__ = ["Network", "NetworkSpec", "TierReport"]

NATIONAL = "national"


class TransportFactory(Protocol):
    """Makes each node's connection by name (`InProcessNetwork`, `AmqpNetwork`)."""

    def transport(self, name: str) -> Transport: ...


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    origins: Sequence[str]
    centres: Sequence[str] = ("centre-a", "centre-b")
    policy: BundlePolicy = field(default_factory=lambda: BundlePolicy(200, 0.05))
    outbox_sync: bool = False  # a throw-away demo need not fsync every commit
    max_batch: int = 256
    resend_interval_s: float = 0.5
    # Heads announced by publishers and relayed by centres this often, as the daemons'
    # `replication.announce_interval_s` (a drill shortens it to see catch-up quickly).
    announce_interval_s: float = 10.0
    answer_wait_s: float = 5.0
    map_size: int = 1 << 32

    @property
    def prefectures(self) -> list[str]:
        return sorted({o[:2] for o in self.origins})


@dataclass(slots=True)
class TierReport:
    """One tier's state at the end: what its store holds and whether it matches."""

    name: str
    role: str
    running: bool
    failure: str | None  # why the node stopped consuming, if its store failed
    bundles_applied: int
    updates_applied: int
    records: int
    duplicates: int
    gaps: int
    security_events: int
    halts: int
    halted_origins: list[str]
    apply_s: float  # time this node spent in store.apply (this run)
    heads_equal: bool  # every origin's chain head equals its publisher's
    digests: dict[str, str]  # prefecture -> digest of its active records
    # what `jukisync check` finds wrong in the store ("kind: detail"); empty when sound
    inconsistencies: list[str]
    # head announcements verified (the municipalities' and the centres' relays), and
    # seqs announced beyond what the tier applied: what a daemon knows exists
    heads_heard: int = 0
    behind_announced: int = 0


class Network:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        spec: NetworkSpec,
        *,
        transports: TransportFactory | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.spec = spec
        self.broker = InProcessNetwork()  # unused when `transports` is given
        self.transports: TransportFactory = transports or self.broker
        self.publishers: dict[str, Publisher] = {}
        self.pub_nodes: dict[str, PublisherNode] = {}
        self.centres: dict[str, TierNode] = {}
        self.national: TierNode | None = None
        self.key_pairs: dict[str, keys.KeyPair] = {}
        self.registry_bytes = b""
        self.root_public = b""
        self.configs: dict[str, TierConfig] = {}  # each tier's, as a daemon would read it
        self._stopped: set[str] = set()

    # --- setting up ----------------------------------------------------------------------
    def make_keys(self) -> None:
        """A key per origin and centre, and a registry signed by a fresh root key."""
        key_dir = self.data_dir / "keys"
        root = keys.generate("root")
        keys.save(root, key_dir)
        for owner in [*self.spec.origins, *self.spec.centres]:
            pair = keys.generate(owner)
            keys.save(pair, key_dir)
            self.key_pairs[owner] = pair
        entries = keys.entries_for(
            (p.public for p in self.key_pairs.values()), self.spec.prefectures
        )
        self.registry_bytes = keys.build_registry(entries, root.secret, 1, keys.now_us())
        self.root_public = root.public_key
        storedir.write_trust(key_dir, self.registry_bytes, self.root_public)

    def registry(self) -> _core.KeyRegistry:
        return _core.KeyRegistry(self.registry_bytes, self.root_public)

    def open_publisher(self, origin: str, *, validate: Validator | None = None) -> Publisher:
        pair = self.key_pairs[origin]
        publisher = Publisher(
            origin,
            pair.secret,
            pair.key_id,
            self.data_dir / "outbox" / origin,
            policy=self.spec.policy,
            sync=self.spec.outbox_sync,
            validate=validate,
        )
        self.publishers[origin] = publisher
        return publisher

    async def replace_publisher(
        self, origin: str, *, validate: Validator | None = None
    ) -> Publisher:
        """The origin's publisher stopped and reopened on its outbox, e.g. with its
        checks broken (`validate=lambda u: None`: it signs whatever it is given)."""
        await self.pub_nodes[origin].stop()
        self.publishers[origin].close()
        publisher = self.open_publisher(origin, validate=validate)
        await self.start_publisher(origin)
        return publisher

    def tier_config(self, name: str) -> TierConfig:
        """The config of centre `name` (or national), as its daemon would read it; the
        network's transports replace its `[broker]`."""
        key_dir = self.data_dir / "keys"
        trust = TrustConfig(
            root_public_key=str(key_dir / storedir.ROOT_FILE),
            registry=str(key_dir / storedir.REGISTRY_FILE),
        )
        limits = TierLimits(map_size=self.spec.map_size, max_batch=self.spec.max_batch)
        replication = ReplicationConfig(
            resend_interval_s=self.spec.resend_interval_s,
            announce_interval_s=self.spec.announce_interval_s,
            answer_wait_s=self.spec.answer_wait_s,
        )
        store, http = str(self.data_dir / name), HttpConfig(port=0)
        if name == NATIONAL:
            return NationalConfig(
                id=name,
                store=store,
                trust=trust,
                http=http,
                limits=limits,
                replication=replication,
            )
        return AggregatorConfig(
            id=name,
            prefectures=self.spec.prefectures,
            store=store,
            signing_key=str(keys.paths_for(key_dir, self.key_pairs[name].key_id)[0]),
            trust=trust,
            http=http,
            limits=limits,
            replication=replication,
        )

    async def _start_tier(
        self, name: str, transport: str, store: _core.Store | None = None
    ) -> TierNode:
        config = self.configs.setdefault(name, self.tier_config(name))
        parts = await assemble_tier(
            config, transport=self.transports.transport(transport), store=store
        )
        await parts.node.start()
        if name == NATIONAL:
            self.national = parts.node
        else:
            self.centres[name] = parts.node
        return parts.node

    async def start(self, *, later: Collection[str] = ()) -> None:
        """Keys, stores and every node but those named in `later` (started with
        `start_tier`); queues are declared before anything is sent."""
        if not self.key_pairs:
            self.make_keys()
        for name in (NATIONAL, *self.spec.centres):
            if name not in later:
                await self._start_tier(name, name)
        for origin in self.spec.origins:
            await self.start_publisher(origin)

    async def start_tier(self, name: str) -> TierNode:
        """A node not started with the others (a centre that comes up late)."""
        return await self._start_tier(name, name)

    async def start_publisher(self, origin: str) -> PublisherNode:
        publisher = self.publishers.get(origin) or self.open_publisher(origin)
        node = PublisherNode(
            publisher,
            self.transports.transport(f"publisher-{origin}"),
            announce_s=self.spec.announce_interval_s,
        )
        await node.start()
        self.pub_nodes[origin] = node
        return node

    # --- running ---------------------------------------------------------------------
    def submit(self, updates: Iterable[tuple[str, Update]]) -> int:
        """Hand `(origin, update)` pairs to their publishers; returns how many."""
        groups: dict[str, list[Update]] = {}
        for origin, update in updates:
            groups.setdefault(origin, []).append(update)
        for origin, group in groups.items():
            self.publishers[origin].add_many(group)
            self.pub_nodes[origin].notify()
        return sum(len(g) for g in groups.values())

    async def drain_publishers(self) -> None:
        await asyncio.gather(*(n.drain() for n in self.pub_nodes.values()))

    def expected_heads(self) -> dict[str, tuple[int, bytes]]:
        return {
            o: (p.head.last_seq, p.head.hash)
            for o, p in self.publishers.items()
            if p.head.last_seq > 0
        }

    def tiers(self) -> list[TierNode]:
        nodes = list(self.centres.values())
        if self.national is not None:
            nodes.append(self.national)
        return nodes

    @property
    def stopped(self) -> frozenset[str]:
        """Tiers stopped (down for a drill): they do not count for convergence."""
        return frozenset(self._stopped)

    def running_tiers(self) -> list[TierNode]:
        return [t for t in self.tiers() if t.name not in self._stopped]

    def heads_equal(self, node: TierNode) -> bool:
        return node.store.chain_heads() == self.expected_heads()

    async def until(
        self, predicate: Callable[[], bool], timeout: float, poll_s: float = 0.05
    ) -> bool:
        """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)

    async def wait_converged(self, timeout: float) -> bool:
        """Until every running tier holds every publisher's chain up to its head.

        Gives up at once (False) when a node's store failed: it stopped consuming.
        """
        converged = await self.until(
            lambda: (
                any(t.failure for t in self.running_tiers())
                or all(self.heads_equal(t) for t in self.running_tiers())
            ),
            timeout,
        )
        return converged and not any(t.failure for t in self.running_tiers())

    def tier(self, name: str) -> TierNode:
        if name == NATIONAL and self.national is not None:
            return self.national
        return self.centres[name]

    async def stop_tier(self, name: str, *, graceful: bool = True) -> None:
        """Stop one centre (or national); it no longer counts for convergence."""
        await self.tier(name).stop(graceful=graceful)
        self._stopped.add(name)

    async def restart_tier(self, name: str) -> TierNode:
        """A stopped node back on its own store and queue, on a fresh connection (as a
        daemon restarted after a crash: its queue kept what it had not acked)."""
        node = await self._start_tier(name, f"{name}-restarted", self.tier(name).store)
        self._stopped.discard(name)
        return node

    async def replace_tier(self, name: str, store_dir: str | os.PathLike[str]) -> TierNode:
        """A stopped node brought up again on another store directory (a restored
        backup: the old one stays aside), with the rest of its config unchanged."""
        config = msgspec.structs.replace(self.configs[name], store=os.fspath(store_dir))
        self.configs[name] = config
        node = await self._start_tier(name, f"{name}-replaced")
        self._stopped.discard(name)
        return node

    async def stop(self) -> None:
        for node in self.pub_nodes.values():
            await node.stop()
        for centre in self.centres.values():
            await centre.stop()
        if self.national is not None:
            await self.national.stop()
        for publisher in self.publishers.values():
            publisher.close()

    # --- reporting -------------------------------------------------------------------
    def report(self, node: TierNode) -> TierReport:
        stats = node.store.stats()
        heads = node.store.chain_heads()
        return TierReport(
            name=node.name,
            role=node.config.role,
            running=node.name not in self._stopped,
            failure=repr(node.failure) if node.failure else None,
            bundles_applied=stats.get("applied_bundles", 0),
            updates_applied=sum(seq for seq, _ in heads.values()),
            records=stats.get("records", 0),
            duplicates=stats.get("duplicates", 0),
            gaps=stats.get("gaps", 0),
            security_events=stats.get("rejected_security", 0),
            halts=stats.get("rejected_halt", 0),
            halted_origins=sorted(node.store.halted()),
            apply_s=round(node.stats.apply_s, 3),
            heads_equal=heads == self.expected_heads(),
            digests={p: node.store.digest(p) for p in self.spec.prefectures},
            inconsistencies=[f"{kind}: {detail}" for kind, detail in node.store.check()],
            heads_heard=node.catchup.heads_heard,
            behind_announced=sum(entry.lag.seqs for entry in node.catchup.lags()),
        )
