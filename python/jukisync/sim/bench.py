"""The end-to-end benchmark over RabbitMQ (`jukisync bench`, issue 4).

N publishers → one aggregation centre → the national centre, all in this process,
through a real RabbitMQ: persistent messages, publisher confirms, manual acks after
the stores committed (durable LMDB, synced commits). The tier nodes are the real
`TierNode`s on the real `AmqpTransport`; the publishers publish real signed, chained
bundles of a synthetic population and change stream (`jukisync.synth`), generated and
signed before any clock starts (the outbox and signing of `Publisher` are not timed).

Phases, in one run and one namespace of the broker (removed at the end):

- **raw ceiling**: aio-pika alone carries the very bytes of the throughput phase over
  the same two hops (publish; consume and republish; consume), with the same queue
  type, persistence, confirms, prefetch and connections, and no processing at all;
- **throughput**: the publishers publish flat out (`window` bundles in flight each);
  updates/s and bytes/s from the first publish to the national commit of the last
  bundle, beside the raw ceiling's byte rate;
- **latency**: the publishers publish paced at `rate` updates/s in total (small
  bundles, evenly spread); p50/p99 of publish → national commit per bundle.

Commit times are taken where the contract puts them: a node acks a delivery only after
its batch committed (DESIGN.md §3), so the tier transports here are wrapped to note
when each bundle (origin, last seq) is acked. At the end both stores must hold every
origin's chain up to its head, with equal digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import aio_pika
import aio_pika.abc
import msgspec
from yarl import URL

from jukisync import _core
from jukisync.publisher.bundling import ChainHead, number, seal
from jukisync.sim import synth
from jukisync.tier.node import NodeConfig, TierNode
from jukisync.transport.amqp import AmqpNetwork, AmqpOptions, QueueType
from jukisync.transport.base import (
    Delivery,
    ResendRequest,
    Subscription,
    Transport,
    bundle_key,
)
from jukisync.trust import keys
from jukisync.wire.messages import Envelope, Update, encode

__all__ = [
    "TARGET_MAX_BUNDLE",
    "TARGET_P99_MS",
    "TARGET_PACED_RATE",
    "TARGET_RAW_RATIO",
    "TARGET_UPDATES_PER_S",
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "Bundle",
    "LatencyResult",
    "Mode",
    "Percentiles",
    "PhaseUsage",
    "RawResult",
    "Target",
    "ThroughputResult",
    "Workload",
    "make_workload",
    "percentiles",
    "probe_broker",
    "run_bench",
]

# The targets (2 cores, broker on the same machine).
TARGET_UPDATES_PER_S: Final = 100_000.0  # end to end ...
TARGET_MAX_BUNDLE: Final = 1_000  # ... with bundles of at most this many updates
TARGET_RAW_RATIO: Final = 0.5  # of the raw ceiling's byte rate
TARGET_P99_MS: Final = 50.0  # publish → national commit ...
TARGET_PACED_RATE: Final = 1_000.0  # ... at this many updates/s

CENTRE: Final = "centre-bench"
NATIONAL: Final = "national"

log = logging.getLogger("jukisync.bench")

Mode = Literal["all", "throughput", "latency"]


class BenchError(Exception):
    """The benchmark could not complete (a publish not confirmed, a phase timed out)."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    broker_url: str
    data_dir: Path
    publishers: int = 8
    updates: int = 500_000  # throughput phase
    bundle_size: int = 1_000  # throughput phase
    queue_type: QueueType = "quorum"
    mode: Mode = "all"
    raw: bool = True  # measure the raw ceiling (with the throughput phase)
    rate: float = TARGET_PACED_RATE  # latency phase: updates/s over all publishers
    latency_s: float = 15.0  # latency phase: how long it publishes
    latency_bundle_size: int = 10
    window: int = 64  # bundles in flight (awaiting confirms) per publisher
    prefetch: int = 256  # of each consumer (tier nodes and the raw relay and sink alike)
    max_batch: int = 256  # deliveries per store.apply
    forward_batch: int = 512  # forwards per round of the aggregator
    seed: int = 1
    settle_s: float = 1.0  # idle between phases, so one's aftermath does not land in the next
    timeout_s: float = 300.0  # per phase
    profile: Path | None = None  # cProfile of the event loop during the throughput phase

    def __post_init__(self) -> None:
        if not 1 <= self.publishers <= len(synth.MUNICIPALITIES):
            raise ValueError(f"publishers must be 1..{len(synth.MUNICIPALITIES)}")
        counts = ("updates", "bundle_size", "latency_bundle_size", "window", "prefetch")
        for name in (*counts, "max_batch", "forward_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rate <= 0 or self.latency_s <= 0 or self.timeout_s <= 0 or self.settle_s < 0:
            raise ValueError(
                "rate, latency_s and timeout_s must be positive, settle_s not negative"
            )

    @property
    def runs_throughput(self) -> bool:
        return self.mode in ("all", "throughput")

    @property
    def runs_latency(self) -> bool:
        return self.mode in ("all", "latency")

    @property
    def latency_updates(self) -> int:
        return round(self.rate * self.latency_s) if self.runs_latency else 0


# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bundle:
    origin: str
    last_seq: int
    updates: int
    envelope: bytes

    @property
    def key(self) -> tuple[str, int]:
        return (self.origin, self.last_seq)


@dataclass(slots=True)
class Workload:
    """Keys, registry and signed bundles, per origin in chain order, for each phase."""

    origins: list[str]
    prefectures: list[str]
    key_pairs: dict[str, keys.KeyPair]
    registry_bytes: bytes
    root_public: bytes
    throughput: dict[str, list[Bundle]]
    latency: dict[str, list[Bundle]]
    preload: dict[str, list[Bundle]]  # published untimed before the latency phase
    heads: dict[str, tuple[int, bytes]]  # every origin's chain head after both phases
    prepare_s: float = 0.0

    def registry(self) -> _core.KeyRegistry:
        return _core.KeyRegistry(self.registry_bytes, self.root_public)

    @staticmethod
    def count(bundles: dict[str, list[Bundle]]) -> tuple[int, int, int]:
        """(bundles, updates, envelope bytes)."""
        every = [b for group in bundles.values() for b in group]
        return len(every), sum(b.updates for b in every), sum(len(b.envelope) for b in every)


def _origins(n: int) -> list[synth.Municipality]:
    """The first `n` municipalities (山口県's first), weighted equally so that every
    publisher carries about the same share."""
    return [dataclasses.replace(m, weight=1.0) for m in synth.MUNICIPALITIES[:n]]


class _Signer:
    def __init__(self, pairs: dict[str, keys.KeyPair]) -> None:
        self.pairs = pairs
        self.heads: dict[str, ChainHead] = {}

    def bundles(self, stream: Iterable[tuple[str, Update]], size: int) -> dict[str, list[Bundle]]:
        """Each origin's updates of `stream`, in order, as signed bundles of `size`."""
        by_origin: dict[str, list[Update]] = {}
        for origin, update in stream:
            by_origin.setdefault(origin, []).append(update)
        out: dict[str, list[Bundle]] = {}
        for origin, updates in by_origin.items():
            out[origin] = [
                self.sign(origin, updates[i : i + size]) for i in range(0, len(updates), size)
            ]
        return out

    def sign(self, origin: str, updates: list[Update]) -> Bundle:
        head = self.heads.get(origin, ChainHead())
        sealed = seal(origin, head, number(updates, head.next_seq), keys.now_us())
        self.heads[origin] = sealed.head
        pair = self.pairs[origin]
        envelope = encode(
            Envelope(body=sealed.encoded, key_id=pair.key_id, sig=pair.sign(sealed.encoded))
        )
        return Bundle(origin, sealed.last_seq, len(updates), envelope)


def make_workload(options: BenchOptions) -> Workload:
    """A synthetic population of `updates // 2` residents in the chosen municipalities:
    the throughput phase loads them, then changes them (the other half of `updates`);
    the latency phase carries on with more changes. Without the throughput phase the
    residents are loaded (untimed) before the latency phase."""
    started = time.perf_counter()
    municipalities = _origins(options.publishers)
    origins = [m.code for m in municipalities]
    residents = max(1, options.updates // 2)
    population = synth.generate_population(residents, options.seed, municipalities)
    changes = (options.updates - residents if options.runs_throughput else 0) + (
        options.latency_updates
    )
    stream = itertools.chain(
        synth.initial_load(population), synth.generate_changes(population, changes, options.seed)
    )
    first = options.updates if options.runs_throughput else residents
    pairs = {o: keys.generate(o) for o in [*origins, CENTRE]}
    root = keys.generate("root")
    registry = keys.build_registry(
        [p.public.entry(not_before=0) for p in pairs.values()], root.secret, 1, keys.now_us()
    )
    signer = _Signer(pairs)
    head_part = signer.bundles(itertools.islice(stream, first), options.bundle_size)
    latency = signer.bundles(stream, options.latency_bundle_size)
    # Latency only: the residents the changes are about are loaded first, untimed.
    throughput, preload = (head_part, {}) if options.runs_throughput else ({}, head_part)
    return Workload(
        origins=origins,
        prefectures=sorted({o[:2] for o in origins}),
        key_pairs=pairs,
        registry_bytes=registry,
        root_public=root.public_key,
        throughput=throughput,
        latency=latency,
        preload=preload,
        heads={o: (h.last_seq, h.hash) for o, h in signer.heads.items()},
        prepare_s=time.perf_counter() - started,
    )


# --- commit clock: when each bundle was published and committed at each tier --------------


class _BodyOf(msgspec.Struct):
    body: bytes


class _SeqOf(msgspec.Struct):
    origin: str
    last_seq: int


_body_of = msgspec.msgpack.Decoder(_BodyOf)
_seq_of = msgspec.msgpack.Decoder(_SeqOf)


def bundle_id(envelope: bytes) -> tuple[str, int] | None:
    """(origin, last seq) named by an envelope's body; None if it does not decode."""
    try:
        head = _seq_of.decode(_body_of.decode(envelope).body)
    except msgspec.DecodeError:
        return None
    return (head.origin, head.last_seq)


class _Clock:
    """Times (perf_counter) of publishes and of commits at each tier, per bundle."""

    def __init__(self) -> None:
        self.published: dict[tuple[str, int], float] = {}
        self.committed: dict[str, dict[tuple[str, int], float]] = {}
        self._awaited: dict[str, set[tuple[str, int]]] = {}
        self._done: dict[str, asyncio.Event] = {}

    def committer(self, tier: str) -> Callable[[bytes], None]:
        times = self.committed.setdefault(tier, {})

        def note(envelope: bytes) -> None:
            now = time.perf_counter()
            key = bundle_id(envelope)
            if key is None or key in times:
                return  # a duplicate keeps the time of its first commit
            times[key] = now
            awaited = self._awaited.get(tier)
            if awaited is not None:
                awaited.discard(key)
                if not awaited:
                    self._done[tier].set()

        return note

    async def wait(self, tier: str, keys_: Iterable[tuple[str, int]], timeout: float) -> bool:
        """Until every bundle of `keys_` committed at `tier`; False on timeout."""
        committed = self.committed.setdefault(tier, {})
        awaited = {k for k in keys_ if k not in committed}
        if not awaited:
            return True
        done = asyncio.Event()
        self._awaited[tier], self._done[tier] = awaited, done
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._awaited.pop(tier, None)
            self._done.pop(tier, None)
        return True

    def missing(self, tier: str, keys_: Iterable[tuple[str, int]]) -> int:
        committed = self.committed.get(tier, {})
        return sum(1 for k in keys_ if k not in committed)


class _TimedDelivery(Delivery):
    __slots__ = ("_inner", "_note")

    def __init__(self, inner: Delivery, note: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._note = note
        self.body = inner.body
        self.routing_key = inner.routing_key
        self.redelivered = inner.redelivered

    async def ack(self) -> None:
        self._note(self.body)  # a node acks only after the batch committed
        await self._inner.ack()

    async def nack(self, requeue: bool = True) -> None:
        await self._inner.nack(requeue)


class _TimedSubscription(Subscription):
    def __init__(self, inner: Subscription, note: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._note = note

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            yield _TimedDelivery(delivery, self._note)

    async def close(self) -> None:
        await self._inner.close()


class _TimedTransport(Transport):
    """A tier's transport, noting when each consumed bundle is acked (= committed)."""

    def __init__(self, inner: Transport, note: Callable[[bytes], None]) -> None:
        self.inner = inner
        self._note = note

    async def declare_bundle_queue(self, queue: str, prefectures: Sequence[str]) -> None:
        await self.inner.declare_bundle_queue(queue, prefectures)

    async def declare_forward_queue(self, queue: str) -> None:
        await self.inner.declare_forward_queue(queue)

    async def declare_control_queue(self, origin: str) -> None:
        await self.inner.declare_control_queue(origin)

    async def publish_bundle(self, origin: str, envelope: bytes) -> None:
        await self.inner.publish_bundle(origin, envelope)

    def consume_bundles(
        self, queue: str, prefectures: Sequence[str], *, prefetch: int = 256
    ) -> Subscription:
        inner = self.inner.consume_bundles(queue, prefectures, prefetch=prefetch)
        return _TimedSubscription(inner, self._note)

    async def publish_forward(self, origin: str, envelope: bytes) -> None:
        await self.inner.publish_forward(origin, envelope)

    def consume_forwards(self, queue: str, *, prefetch: int = 256) -> Subscription:
        return _TimedSubscription(self.inner.consume_forwards(queue, prefetch=prefetch), self._note)

    async def request_resend(self, request: ResendRequest) -> None:
        await self.inner.request_resend(request)

    def consume_control(self, origin: str, *, prefetch: int = 16) -> Subscription:
        return self.inner.consume_control(origin, prefetch=prefetch)

    async def declare_heads_queue(self, queue: str, bindings: Sequence[str]) -> None:
        await self.inner.declare_heads_queue(queue, bindings)

    async def publish_heads(self, routing_key: str, message: bytes) -> None:
        await self.inner.publish_heads(routing_key, message)

    def consume_heads(
        self, queue: str, bindings: Sequence[str], *, prefetch: int = 64
    ) -> Subscription:
        return self.inner.consume_heads(queue, bindings, prefetch=prefetch)

    async def close(self) -> None:
        await self.inner.close()


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Percentiles:
    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def _rank(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    index = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[index]


def percentiles(seconds: Iterable[float]) -> Percentiles:
    ordered = sorted(seconds)
    if not ordered:
        return Percentiles(0, math.nan, math.nan, math.nan, math.nan)
    ms = [s * 1000 for s in ordered]
    return Percentiles(
        len(ms),
        round(_rank(ms, 50), 2),
        round(_rank(ms, 90), 2),
        round(_rank(ms, 99), 2),
        round(ms[-1], 2),
    )


@dataclass(frozen=True, slots=True)
class PhaseUsage:
    """Where a phase's time went: CPU of this process and of the local broker, and per
    tier the wall time inside `store.apply` (worker threads, GIL released) and how
    many batches (one write transaction each) it took."""

    wall_s: float
    cpu_s: float  # this process, user + system (all threads)
    broker_cpu_s: float | None  # the local broker's, if it could be read
    apply_s: dict[str, float]
    batches: dict[str, int]
    # The disk holding the stores (from /proc/diskstats; None if unknown): written by
    # everyone on it (stores, broker, others), and the share of the time it was busy.
    disk_written_mb: float | None
    disk_busy_pct: float | None


@dataclass(frozen=True, slots=True)
class RawResult:
    """aio-pika alone over the same two hops."""

    messages: int
    bytes: int
    elapsed_s: float
    publish_s: float  # until every publish was confirmed
    bytes_per_s: float
    messages_per_s: float


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    bundles: int
    updates: int
    bytes: int  # of the envelopes published
    elapsed_s: float  # first publish → national commit of the last bundle
    publish_s: float  # first publish → every publish confirmed
    aggregator_s: float  # first publish → aggregator commit of the last bundle
    updates_per_s: float
    bytes_per_s: float
    latency: Percentiles  # publish → national commit, under full load (queueing)
    aggregator_latency: Percentiles  # publish → aggregator commit
    usage: PhaseUsage


@dataclass(frozen=True, slots=True)
class LatencyResult:
    rate: float  # asked for, updates/s
    achieved_rate: float  # updates published / publishing time
    bundle_size: int
    bundles: int
    updates: int
    duration_s: float
    latency: Percentiles  # publish → national commit
    aggregator_latency: Percentiles  # publish → aggregator commit
    usage: PhaseUsage


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool
    met: bool
    note: str = ""


@dataclass(slots=True)
class TierFigures:
    name: str
    bundles_applied: int
    updates_applied: int
    batches: int
    apply_s: float  # wall time inside store.apply (a worker thread, GIL released)
    duplicates: int
    gaps: int
    rejected: int
    forwarded: int
    records: int
    heads_equal: bool
    failure: str | None


@dataclass(slots=True)
class BenchResult:
    broker: str
    namespace: str
    queue_type: str
    publishers: int
    bundle_size: int
    prepare_s: float
    # Median 4 KiB write + fdatasync in the data directory before and after the run:
    # the floor under every durable commit (LMDB syncs twice per commit), which on a
    # shared or virtual disk varies a lot from minute to minute.
    fsync_ms_before: float
    fsync_ms_after: float
    load_before: float  # 1-minute load average when the run started (others' work)
    converged: bool
    digests_equal: bool
    tiers: list[TierFigures]
    throughput: ThroughputResult | None = None
    raw: RawResult | None = None
    raw_ratio: float | None = None  # e2e bytes/s over the raw ceiling's
    latency: LatencyResult | None = None
    targets: list[Target] = field(default_factory=list)
    profile: str | None = None

    @property
    def targets_met(self) -> bool:
        return all(t.met for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets_met"] = self.targets_met
        return data


def _targets(result: BenchResult, options: BenchOptions) -> list[Target]:
    out: list[Target] = []
    if result.throughput is not None:
        big = options.bundle_size > TARGET_MAX_BUNDLE
        out.append(
            Target(
                "end-to-end throughput",
                result.throughput.updates_per_s,
                TARGET_UPDATES_PER_S,
                "updates/s",
                True,
                result.throughput.updates_per_s >= TARGET_UPDATES_PER_S and not big,
                f"bundles of {options.bundle_size} (target: ≤ {TARGET_MAX_BUNDLE})"
                + (": too large to count" if big else ""),
            )
        )
    if result.raw_ratio is not None:
        out.append(
            Target(
                "share of the raw ceiling's byte rate",
                result.raw_ratio,
                TARGET_RAW_RATIO,
                "×",
                True,
                result.raw_ratio >= TARGET_RAW_RATIO,
            )
        )
    if result.latency is not None:
        p99 = result.latency.latency.p99_ms
        paced = options.rate
        out.append(
            Target(
                "p99 publish → national commit",
                p99,
                TARGET_P99_MS,
                "ms",
                False,
                p99 <= TARGET_P99_MS and paced >= TARGET_PACED_RATE,
                f"paced at {paced:,.0f} updates/s (target at {TARGET_PACED_RATE:,.0f})",
            )
        )
    return out


# --- CPU accounting ------------------------------------------------------------------------


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _broker_pids(url: str) -> list[int]:
    """The local RabbitMQ server's Erlang VM (not `rabbitmqctl`'s), when the broker runs
    on this machine; only read, for its CPU time."""
    if URL(url).host not in ("127.0.0.1", "localhost", "::1"):
        return []
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if not Path(entry.path, "comm").read_text().startswith("beam"):
                    continue
                if b"rabbit boot" in Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" "):
                    pids.append(int(entry.name))
    return pids


def _cpu_of(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of processes (None if none could be read)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    read = False
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            read = True
    return total / ticks if read else None


def _disk_stats(directory: Path) -> tuple[int, int] | None:
    """(sectors written, ms spent doing I/O) of the block device holding `directory`."""
    dev = os.stat(directory).st_dev
    wanted = (os.major(dev), os.minor(dev))
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/diskstats").read_text().splitlines():
            fields = line.split()
            if (int(fields[0]), int(fields[1])) == wanted:
                return int(fields[9]), int(fields[12])
    return None


def _fsync_ms(directory: Path, rounds: int = 20) -> float:
    """Median time of a 4 KiB write + fdatasync in `directory`: what a durable commit
    costs at least on this disk now (each LMDB commit syncs twice)."""
    path = directory / ".fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(rounds):
            os.pwrite(fd, os.urandom(4096), (i % 8) * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return round(sorted(times)[len(times) // 2] * 1000, 2)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    wall: float
    cpu: float
    broker_cpu: float | None
    nodes: dict[str, tuple[float, int]]  # tier -> (apply_s, batches)
    disk: tuple[int, int] | None


# --- the raw ceiling -------------------------------------------------------------------------


async def _raw_ceiling(
    options: BenchOptions, namespace: str, streams: dict[str, list[Bundle]]
) -> RawResult:
    """The same envelopes over two hops through aio-pika, with no processing: each
    publisher publishes (confirms, `window` in flight) to the first queue; a relay
    consumes it, republishes each body to the second queue and acks once confirmed; a
    sink consumes and acks."""
    url = options.broker_url
    names = [f"{namespace}raw.{n}" for n in ("updates", "forward", "hop1", "hop2")]
    x_in, x_out, q_in, q_out = names
    arguments: dict[str, Any] = {"x-queue-type": options.queue_type}
    total = sum(len(s) for s in streams.values())
    size = sum(len(b.envelope) for s in streams.values() for b in s)
    connections: list[aio_pika.abc.AbstractConnection] = []

    async def connect(role: str) -> aio_pika.abc.AbstractConnection:
        connection = await aio_pika.connect(
            url, client_properties={"connection_name": f"jukisync bench raw {role}"}
        )
        connections.append(connection)
        return connection

    try:
        setup = await (await connect("setup")).channel()
        exchanges = [
            await setup.declare_exchange(x, aio_pika.ExchangeType.TOPIC, durable=True)
            for x in (x_in, x_out)
        ]
        for queue, exchange in ((q_in, exchanges[0]), (q_out, exchanges[1])):
            declared = await setup.declare_queue(queue, durable=True, arguments=arguments)
            await declared.bind(exchange, "#")
        done = asyncio.Event()
        received = [0]
        finished = [0.0]
        relays: set[asyncio.Task[None]] = set()

        relay_in = await (await connect("relay")).channel()
        await relay_in.set_qos(prefetch_count=options.prefetch)
        relay_conn = connections[-1]
        relay_out = await relay_conn.channel(publisher_confirms=True)
        out_exchange = await relay_out.get_exchange(x_out)
        sink = await (await connect("sink")).channel()
        await sink.set_qos(prefetch_count=options.prefetch)

        async def relay(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            key = (message.routing_key or "").replace("upd.", "fwd.", 1)
            await out_exchange.publish(_raw_message(message.body), key, mandatory=True)
            await message.ack()

        async def on_hop1(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            task = asyncio.create_task(relay(message))
            relays.add(task)
            task.add_done_callback(relays.discard)

        async def on_hop2(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            received[0] += 1
            if received[0] == total:
                finished[0] = time.perf_counter()
                done.set()

        await (await relay_in.get_queue(q_in)).consume(on_hop1)
        await (await sink.get_queue(q_out)).consume(on_hop2)
        publishers = []
        for origin in streams:
            channel = await (await connect(f"publisher-{origin}")).channel(publisher_confirms=True)
            publishers.append((await channel.get_exchange(x_in), streams[origin]))

        async def publish(exchange: aio_pika.abc.AbstractExchange, bundles: list[Bundle]) -> None:
            async def one(bundle: Bundle) -> None:
                await exchange.publish(
                    _raw_message(bundle.envelope), bundle_key(bundle.origin), mandatory=True
                )

            await _windowed((one(b) for b in bundles), options.window)

        started = time.perf_counter()
        await asyncio.gather(*(publish(x, b) for x, b in publishers))
        published = time.perf_counter()
        try:
            await asyncio.wait_for(done.wait(), options.timeout_s)
        except TimeoutError:
            raise BenchError(
                f"raw ceiling: {received[0]} of {total} messages arrived "
                f"within {options.timeout_s}s"
            ) from None
        elapsed = finished[0] - started
        return RawResult(
            messages=total,
            bytes=size,
            elapsed_s=round(elapsed, 3),
            publish_s=round(published - started, 3),
            bytes_per_s=round(size / elapsed, 1),
            messages_per_s=round(total / elapsed, 1),
        )
    finally:
        # Consumers first (a queue deleted under a consumer cancels it, loudly).
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close()
        with contextlib.suppress(Exception):
            cleanup = await aio_pika.connect(
                url, client_properties={"connection_name": "jukisync bench raw cleanup"}
            )
            try:
                channel = await cleanup.channel()
                for queue in (q_in, q_out):
                    await channel.queue_delete(queue)
                for name in (x_in, x_out):
                    await channel.exchange_delete(name)
            finally:
                await cleanup.close()


def _raw_message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/msgpack",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _interleave(streams: dict[str, list[Bundle]]) -> list[Bundle]:
    """Every origin's bundles in chain order, each origin spread evenly over the list."""
    keyed = [
        ((i + 0.5) / len(bundles), k, bundle)
        for k, bundles in enumerate(streams.values())
        for i, bundle in enumerate(bundles)
    ]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [bundle for _, _, bundle in keyed]


async def _windowed(coros: Iterator[Coroutine[Any, Any, None]], window: int) -> None:
    """Run `coros` started in order, at most `window` at a time; after a failure start
    no more, and raise it once the running ones settled."""
    slots = asyncio.Semaphore(window)
    tasks: list[asyncio.Task[None]] = []
    failed: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            failed.append(exc)

    for coro in coros:
        await slots.acquire()
        if failed:
            coro.close()
            break
        task = asyncio.create_task(coro)
        task.add_done_callback(finished)
        tasks.append(task)
    await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        raise failed[0]


# --- the network ---------------------------------------------------------------------------


class _Bench:
    def __init__(self, options: BenchOptions, workload: Workload) -> None:
        self.options = options
        self.workload = workload
        self.namespace = f"jukisync-bench-{secrets.token_hex(4)}."
        self.amqp = AmqpNetwork(
            options.broker_url,
            options=AmqpOptions(namespace=self.namespace, queue_type=options.queue_type),
            connection_prefix="jukisync bench ",
        )
        self.clock = _Clock()
        self.national: TierNode | None = None
        self.centre: TierNode | None = None
        self.publishers: dict[str, Transport] = {}
        self.broker_pids = _broker_pids(options.broker_url)

    def _store(self, name: str) -> _core.Store:
        path = self.options.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        if name == CENTRE:
            pair = self.workload.key_pairs[CENTRE]
            return _core.Store(
                str(path),
                role="aggregator",
                registry=self.workload.registry(),
                centre_id=CENTRE,
                centre_key=pair.secret,
                centre_key_id=pair.key_id,
            )
        return _core.Store(str(path), role="national", registry=self.workload.registry())

    async def start(self) -> None:
        opts = self.options
        self.national = TierNode(
            NodeConfig(
                name=NATIONAL,
                role="national",
                queue=f"{NATIONAL}.forwards",
                max_batch=opts.max_batch,
                prefetch=opts.prefetch,
            ),
            self._store(NATIONAL),
            _TimedTransport(self.amqp.transport(NATIONAL), self.clock.committer(NATIONAL)),
        )
        await self.national.start()
        self.centre = TierNode(
            NodeConfig(
                name=CENTRE,
                role="aggregator",
                queue=f"{CENTRE}.bundles",
                prefectures=self.workload.prefectures,
                max_batch=opts.max_batch,
                prefetch=opts.prefetch,
                forward_batch=opts.forward_batch,
            ),
            self._store(CENTRE),
            _TimedTransport(self.amqp.transport(CENTRE), self.clock.committer(CENTRE)),
        )
        await self.centre.start()
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
        keys_ = [b.key for b in bundles]
        timeout = self.options.timeout_s
        if not await self.clock.wait(NATIONAL, keys_, timeout):
            missing = self.clock.missing(NATIONAL, keys_)
            raise BenchError(
                f"{phase}: {missing} of {len(keys_)} bundles not committed at national "
                f"within {timeout}s{self._failures()}"
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
            *(_windowed((self._publish(b) for b in s), window) for s in streams.values())
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
                    _windowed((self._publish(b) for b in s), opts.window)
                    for s in self.workload.preload.values()
                )
            )
            await self._await_commits("preload", preload)
        count, updates, _ = Workload.count(streams)
        schedule = _interleave(streams)
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

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            time.perf_counter(),
            _process_cpu(),
            _cpu_of(self.broker_pids),
            {n.name: (n.stats.apply_s, n.stats.batches) for n in self._nodes()},
            _disk_stats(self.options.data_dir),
        )

    def _usage(self, before: _Snapshot) -> PhaseUsage:
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


async def probe_broker(url: str, timeout: float = 5.0) -> None:
    """Connect and disconnect once; raises (ConnectionError, aiormq errors) if it cannot."""
    connection = await aio_pika.connect(
        url, timeout=timeout, client_properties={"connection_name": "jukisync bench probe"}
    )
    await connection.close()


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
    fsync_before = _fsync_ms(options.data_dir)
    load_before = os.getloadavg()[0]
    raw: RawResult | None = None
    throughput: ThroughputResult | None = None
    latency: LatencyResult | None = None
    try:
        if options.runs_throughput and options.raw:
            say("raw ceiling: aio-pika over the same two hops")
            raw = await _raw_ceiling(options, bench.namespace, workload.throughput)
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
        broker=str(URL(options.broker_url).with_password(None)),
        namespace=bench.namespace,
        queue_type=options.queue_type,
        publishers=options.publishers,
        bundle_size=options.bundle_size,
        prepare_s=round(workload.prepare_s, 3),
        fsync_ms_before=fsync_before,
        fsync_ms_after=_fsync_ms(options.data_dir),
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
    result.targets = _targets(result, options)
    return result
