"""Orchestration: the tier nodes (built by `tier.assembly`), the phases in order, the report."""

from __future__ import annotations

import asyncio
import cProfile
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping

import aio_pika
import aio_pika.abc
from yarl import URL

from jukisync.config import (
    AggregatorConfig,
    BrokerConfig,
    HttpConfig,
    NationalConfig,
    TierConfig,
    TierLimits,
    TrustConfig,
)
from jukisync.sim.bench.accounting import (
    Snapshot,
    broker_pids,
    cpu_of,
    disk_stats,
    fsync_ms,
    process_cpu,
)
from jukisync.sim.bench.ceiling import raw_ceiling
from jukisync.sim.bench.options import CENTRE, NATIONAL, BenchError, BenchOptions
from jukisync.sim.bench.results import (
    BenchResult,
    LatencyResult,
    Percentiles,
    PhaseUsage,
    RawResult,
    ThroughputResult,
    TierFigures,
    percentiles,
    targets_of,
)
from jukisync.sim.bench.timing import CommitClock, TimedTransport, windowed
from jukisync.sim.bench.workload import Bundle, Workload, interleave, make_workload
from jukisync.tier.assembly import assemble_tier
from jukisync.tier.node import TierNode
from jukisync.transport.amqp import AmqpNetwork
from jukisync.transport.base import (
    Transport,
)
from jukisync.trust import keys, storedir

log = logging.getLogger("jukisync.bench")

# How often a phase awaiting commits checks whether a node failed or halted an origin.
_STUCK_POLL_S = 0.2

# --- the network ---------------------------------------------------------------------------


class _Bench:
    def __init__(self, options: BenchOptions, workload: Workload) -> None:
        self.options = options
        self.workload = workload
        urls = options.broker_urls
        self.broker = BrokerConfig(
            url=urls[0] if len(urls) == 1 else list(urls),
            namespace=f"jukisync-bench-{secrets.token_hex(4)}.",
            queue_type=options.queue_type,
            quorum_replicas=options.quorum_replicas,
            prefetch=options.prefetch,
        )
        self.namespace = self.broker.namespace
        self.amqp = AmqpNetwork(urls, options=self.broker, connection_prefix="jukisync bench ")
        self.clock = CommitClock()
        self.national: TierNode | None = None
        self.centre: TierNode | None = None
        self.publishers: dict[str, Transport] = {}
        self.broker_pids = broker_pids(urls[0])  # every local RabbitMQ VM

    def _configs(self) -> tuple[NationalConfig, AggregatorConfig]:
        """The two tiers' configs, as their daemons would read them, with the key and
        trust files they name written under the data directory."""
        key_dir = self.options.data_dir / "keys"
        storedir.write_trust(key_dir, self.workload.registry_bytes, self.workload.root_public)
        secret, _ = keys.save(self.workload.key_pairs[CENTRE], key_dir, overwrite=True)
        trust = TrustConfig(
            root_public_key=str(key_dir / storedir.ROOT_FILE),
            registry=str(key_dir / storedir.REGISTRY_FILE),
        )
        opts = self.options
        limits = TierLimits(
            map_size=1 << 34,
            max_batch=opts.max_batch,
            max_batch_updates=opts.max_batch_updates,
            forward_batch=opts.forward_batch,
        )
        http = HttpConfig(port=0)
        national = NationalConfig(
            id=NATIONAL,
            store=str(opts.data_dir / NATIONAL),
            trust=trust,
            broker=self.broker,
            http=http,
            limits=limits,
        )
        centre = AggregatorConfig(
            id=CENTRE,
            prefectures=self.workload.prefectures,
            store=str(opts.data_dir / CENTRE),
            signing_key=str(secret),
            trust=trust,
            broker=self.broker,
            http=http,
            limits=limits,
        )
        return national, centre

    async def _tier(self, config: TierConfig) -> TierNode:
        timed = TimedTransport(self.amqp.transport(config.id), self.clock.committer(config.id))
        parts = await assemble_tier(config, transport=timed)
        await parts.node.start()
        return parts.node

    async def start(self) -> None:
        national, centre = self._configs()
        self.national = await self._tier(national)
        self.centre = await self._tier(centre)
        for origin in self.workload.origins:
            transport = self.amqp.transport(f"publisher-{origin}")
            await transport.connect(timeout=self.amqp.options.connect_timeout_s)
            self.publishers[origin] = transport
        for transport in self.amqp.transports[:2]:
            await transport.connect(timeout=self.amqp.options.connect_timeout_s)

    async def stop(self) -> None:
        for node in (self.centre, self.national):
            if node is not None:
                await node.stop()

    def _published(self, bundle: Bundle) -> None:
        self.clock.published[bundle.key] = time.perf_counter()

    async def _publish(self, bundle: Bundle) -> None:
        self._published(bundle)
        await self.publishers[bundle.origin].publish_bundle(bundle.origin, bundle.envelope)

    async def _await_commits(self, phase: str, bundles: list[Bundle]) -> None:
        """Until national committed every bundle of `bundles`. Fails at once (not after
        the phase's timeout) when a node failed or halted one of their origins: a
        halted origin's later bundles wait in pending until an operator acts, so the
        phase could never complete."""
        keys_ = [b.key for b in bundles]
        origins = {b.origin for b in bundles}
        timeout = self.options.timeout_s
        waiting = asyncio.ensure_future(self.clock.wait(NATIONAL, keys_, timeout))
        try:
            while not waiting.done():
                await asyncio.wait({waiting}, timeout=_STUCK_POLL_S)
                self._raise_if_stuck(phase, origins)
            committed = waiting.result()
        finally:
            waiting.cancel()
        if not committed:
            missing = self.clock.missing(NATIONAL, keys_)
            raise BenchError(
                f"{phase}: {missing} of {len(keys_)} bundles not committed at national "
                f"within {timeout}s{self._failures()}"
            )

    def _raise_if_stuck(self, phase: str, origins: set[str]) -> None:
        for node in self._nodes():
            if node.failure is not None:
                raise BenchError(f"{phase}: the {node.name} node failed: {node.failure!r}")
            halted = sorted(node.stats.halted_origins & origins)
            if halted:
                reasons = node.store.halted()
                named = "; ".join(
                    f"origin {o}: {reasons.get(o, 'reason not recorded')}" for o in halted
                )
                raise BenchError(
                    f"{phase}: {node.name} halted {named} (its later bundles wait in "
                    "pending for an operator, so the run cannot complete)"
                )

    def _failures(self) -> str:
        failed = [f"{n.name}: {n.failure!r}" for n in self._nodes() if n.failure]
        return f" ({'; '.join(failed)})" if failed else ""

    def _nodes(self) -> list[TierNode]:
        return [n for n in (self.centre, self.national) if n is not None]

    def _latencies(self, tier: str, bundles: list[Bundle]) -> Percentiles:
        committed = self.clock.committed.get(tier, {})
        published = self.clock.published
        return percentiles(committed[b.key] - published[b.key] for b in bundles)

    async def throughput(self) -> ThroughputResult:
        streams = self.workload.throughput
        bundles = [b for s in streams.values() for b in s]
        count, updates, size = Workload.count(streams)
        window = self.options.window
        profile = cProfile.Profile() if self.options.profile else None
        before = self._snapshot()
        if profile is not None:
            profile.enable()
        started = time.perf_counter()
        await asyncio.gather(
            *(windowed((self._publish(b) for b in s), window) for s in streams.values())
        )
        published = time.perf_counter()
        await self._await_commits("throughput", bundles)
        if profile is not None:
            profile.disable()
            assert self.options.profile is not None
            profile.dump_stats(self.options.profile)
        usage = self._usage(before)
        national = self.clock.committed[NATIONAL]
        centre = self.clock.committed[CENTRE]
        finished = max(national[b.key] for b in bundles)
        elapsed = finished - started
        return ThroughputResult(
            bundles=count,
            updates=updates,
            bytes=size,
            elapsed_s=round(elapsed, 3),
            publish_s=round(published - started, 3),
            aggregator_s=round(max(centre[b.key] for b in bundles) - started, 3),
            updates_per_s=round(updates / elapsed, 1),
            bytes_per_s=round(size / elapsed, 1),
            latency=self._latencies(NATIONAL, bundles),
            aggregator_latency=self._latencies(CENTRE, bundles),
            usage=usage,
        )

    async def latency(self) -> LatencyResult:
        """The publishers together publish `rate` updates/s: bundle after bundle, each
        when the updates before it at that rate are out (each publisher's bundles in
        chain order, spread over the whole phase)."""
        opts = self.options
        streams = self.workload.latency
        preload = [b for s in self.workload.preload.values() for b in s]
        if preload:  # untimed: the residents the changes are about
            await asyncio.gather(
                *(
                    windowed((self._publish(b) for b in s), opts.window)
                    for s in self.workload.preload.values()
                )
            )
            await self._await_commits("preload", preload)
        count, updates, _ = Workload.count(streams)
        schedule = interleave(streams)
        before = self._snapshot()
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        due = 0.0  # seconds after `started`: updates published before it / rate
        for bundle in schedule:
            delay = started + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._publish(bundle)))
            due += bundle.updates / opts.rate
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise BenchError(f"latency: a publish failed: {outcome}") from outcome
        await self._await_commits("latency", schedule)
        usage = self._usage(before)
        published = [self.clock.published[b.key] for b in schedule]
        span = published[-1] - published[0] if published else 0.0
        duration = span + (schedule[-1].updates / opts.rate if schedule else 0.0)
        return LatencyResult(
            rate=opts.rate,
            achieved_rate=round(updates / duration, 1) if duration > 0 else 0.0,
            bundle_size=opts.latency_bundle_size,
            bundles=count,
            updates=updates,
            duration_s=round(duration, 3),
            latency=self._latencies(NATIONAL, schedule),
            aggregator_latency=self._latencies(CENTRE, schedule),
            usage=usage,
        )

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            time.perf_counter(),
            process_cpu(),
            cpu_of(self.broker_pids),
            {n.name: (n.stats.apply_s, n.stats.batches) for n in self._nodes()},
            disk_stats(self.options.data_dir),
        )

    def _usage(self, before: Snapshot) -> PhaseUsage:
        now = self._snapshot()
        broker = (
            round(now.broker_cpu - before.broker_cpu, 2)
            if now.broker_cpu is not None and before.broker_cpu is not None
            else None
        )
        wall = now.wall - before.wall
        disk = (
            (now.disk[0] - before.disk[0], now.disk[1] - before.disk[1])
            if now.disk is not None and before.disk is not None
            else None
        )
        return PhaseUsage(
            wall_s=round(wall, 3),
            cpu_s=round(now.cpu - before.cpu, 2),
            broker_cpu_s=broker,
            apply_s={t: round(v[0] - before.nodes[t][0], 3) for t, v in now.nodes.items()},
            batches={t: v[1] - before.nodes[t][1] for t, v in now.nodes.items()},
            disk_written_mb=round(disk[0] * 512 / 1e6, 1) if disk else None,
            disk_busy_pct=round(min(100.0, disk[1] / 10 / wall), 1) if disk and wall > 0 else None,
        )

    def tier_figures(self) -> tuple[list[TierFigures], bool, bool]:
        heads = self.workload.heads
        figures = []
        digests: list[dict[str, str]] = []
        for node in self._nodes():
            stats = node.store.stats()
            store_heads = node.store.chain_heads()
            digests.append({p: node.store.digest(p) for p in self.workload.prefectures})
            figures.append(
                TierFigures(
                    name=node.name,
                    bundles_applied=stats.get("applied_bundles", 0),
                    updates_applied=sum(seq for seq, _ in store_heads.values()),
                    batches=node.stats.batches,
                    apply_s=round(node.stats.apply_s, 3),
                    duplicates=stats.get("duplicates", 0),
                    gaps=stats.get("gaps", 0),
                    rejected=stats.get("rejected_security", 0) + stats.get("rejected_halt", 0),
                    forwarded=node.stats.forwarded,
                    records=stats.get("records", 0),
                    heads_equal=store_heads == heads,
                    failure=repr(node.failure) if node.failure else None,
                )
            )
        digests_equal = len(digests) == 2 and digests[0] == digests[1]
        converged = digests_equal and all(f.heads_equal and not f.failure for f in figures)
        return figures, converged, digests_equal


async def _remove(amqp: AmqpNetwork) -> None:
    """Close the benchmark's connections and delete its namespace from the broker."""
    try:
        await amqp.remove()
    except Exception as exc:  # the broker went away: say what is left behind
        log.warning(
            "could not remove the benchmark's queues (namespace %r) from the broker: %s",
            amqp.options.namespace,
            exc,
        )


async def probe_broker(url: str, timeout: float = 5.0) -> str | None:
    """Connect and disconnect once; the broker's product and version from its server
    properties (None if it sent none). Raises (ConnectionError, aiormq errors) if it
    cannot connect."""
    connection = await aio_pika.connect(
        url, timeout=timeout, client_properties={"connection_name": "jukisync bench probe"}
    )
    try:
        transport = connection.transport
        properties = transport.connection.server_properties if transport is not None else {}
        return _server_version(properties)
    finally:
        await connection.close()


def _server_version(properties: Mapping[str, object]) -> str | None:
    def text(key: str) -> str | None:
        value = properties.get(key)
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return value if isinstance(value, str) else None

    version = text("version")
    if version is None:
        return None
    product = text("product")
    return f"{product} {version}" if product else version


async def run_bench(
    options: BenchOptions,
    workload: Workload | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run the phases `options` asks for; `workload` defaults to `make_workload(options)`
    (better made before the event loop starts: it takes a while and does no I/O).
    `progress` hears what is starting (for a terminal)."""
    say = progress or (lambda _: None)
    if workload is None:
        workload = make_workload(options)
    bench = _Bench(options, workload)
    fsync_before = fsync_ms(options.data_dir)
    load_before = os.getloadavg()[0]
    raw: RawResult | None = None
    throughput: ThroughputResult | None = None
    latency: LatencyResult | None = None
    try:
        if options.runs_throughput and options.raw:
            say("raw ceiling: aio-pika over the same two hops")
            raw = await raw_ceiling(options, bench.namespace, workload.throughput)
        say("starting the aggregator and national nodes")
        await bench.start()
        if options.runs_throughput:
            say("throughput: publishing flat out")
            throughput = await bench.throughput()
        if options.runs_latency:
            if throughput is not None:
                await asyncio.sleep(options.settle_s)
            say(f"latency: publishing at {options.rate:,.0f} updates/s for {options.latency_s:g} s")
            latency = await bench.latency()
    finally:
        await bench.stop()
        await _remove(bench.amqp)
    tiers, converged, digests_equal = bench.tier_figures()
    result = BenchResult(
        broker=",".join(str(URL(u).with_password(None)) for u in options.broker_urls),
        namespace=bench.namespace,
        queue_type=options.queue_type,
        quorum_replicas=options.quorum_replicas,
        publishers=options.publishers,
        bundle_size=options.bundle_size,
        prepare_s=round(workload.prepare_s, 3),
        fsync_ms_before=fsync_before,
        fsync_ms_after=fsync_ms(options.data_dir),
        load_before=round(load_before, 2),
        converged=converged,
        digests_equal=digests_equal,
        tiers=tiers,
        throughput=throughput,
        raw=raw,
        raw_ratio=(
            round(throughput.bytes_per_s / raw.bytes_per_s, 3)
            if throughput is not None and raw is not None
            else None
        ),
        latency=latency,
        profile=str(options.profile) if options.profile and throughput else None,
    )
    result.targets = targets_of(result, options)
    return result
