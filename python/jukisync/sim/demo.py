"""`jukisync demo` without the terminal: run the whole network once and judge it.

Every municipality of `synth.MUNICIPALITIES` (山口県's 19 plus some of 東京都, 広島県
and 福岡県) publishes its part of a synthetic population, then of a change stream;
two aggregation centres serve every prefecture (相互補完) and forward to the
national node. The network has converged when every tier holds every origin's chain
up to the publisher's head, and the per-prefecture digests of the centres and the
national store are all equal.

With `broker_url`, the nodes talk through RabbitMQ instead, in a namespace of their
own (a random prefix on every exchange and queue), removed at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jukisync import clock
from jukisync.publisher.bundling import BundlePolicy
from jukisync.sim import synth
from jukisync.sim.network import NATIONAL, Network, NetworkSpec, TierReport
from jukisync.transport.amqp import AmqpNetwork, AmqpOptions
from jukisync.wire.messages import Update

__all__ = [
    "DemoOptions",
    "DemoResult",
    "Progress",
    "amqp_network",
    "judge_network",
    "remove_namespace",
    "run_demo",
    "transport_line",
    "update_stream",
]

_CHUNK = 2_000  # updates handed to the publishers between two yields to the loop


@dataclass(frozen=True, slots=True)
class DemoOptions:
    data_dir: Path
    residents: int = 20_000
    changes: int = 20_000
    seed: int = 1
    bundle_size: int = 200
    linger_ms: float = 20.0
    timeout_s: float = 120.0  # give up waiting for convergence after this long
    broker_url: str | None = None  # RabbitMQ instead of the in-process broker


@dataclass(frozen=True, slots=True)
class Progress:
    """Updates so far: submitted to publishers, published, applied per tier."""

    total: int
    submitted: int
    published: int
    applied: dict[str, int]


@dataclass(slots=True)
class DemoResult:
    converged: bool
    updates: int
    elapsed_s: float
    origins: int
    prefectures: list[str]
    published: int
    tiers: list[TierReport]
    digests_equal: dict[str, bool]  # prefecture -> all tiers equal
    centres_agree: bool  # the two centres' digests are equal for every prefecture
    data_dir: str
    sample_code: str | None = None
    # Updates per second of store.apply at each tier (its own work, not waiting).
    throughput: dict[str, float] = field(default_factory=dict)
    transport: str = "in process"  # or "RabbitMQ at URL (namespace ...)"
    prefecture_names: dict[str, str] = field(default_factory=dict)  # "35" -> "山口県"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tiers"] = {t.name: asdict(t) for t in self.tiers}
        return data


def update_stream(
    population: synth.Population, changes: int, seed: int
) -> Iterator[tuple[str, Update]]:
    """`(origin, update)`: every resident's creation, then `changes` changes."""
    return itertools.chain(
        synth.initial_load(population),
        synth.generate_changes(
            population,
            changes,
            seed,
            max_span_days=synth.span_until(population.as_of, clock.now().date()),
        ),
    )


def _chunks(items: Iterable[tuple[str, Update]], size: int) -> Iterator[list[tuple[str, Update]]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _applied(network: Network) -> dict[str, int]:
    # Sum of chain-head seqs = updates applied, because seqs are contiguous from 1.
    return {t.name: sum(seq for seq, _ in t.store.chain_heads().values()) for t in network.tiers()}


def _progress(network: Network, total: int, submitted: int) -> Progress:
    published = sum(n.published_updates for n in network.pub_nodes.values())
    return Progress(total, submitted, published, _applied(network))


async def _report_progress(
    network: Network, total: int, submitted: list[int], callback: Callable[[Progress], None]
) -> None:
    while True:
        callback(_progress(network, total, submitted[0]))
        await asyncio.sleep(0.1)


async def run_demo(
    options: DemoOptions, on_progress: Callable[[Progress], None] | None = None
) -> DemoResult:
    population = synth.generate_population(options.residents, options.seed)
    spec = NetworkSpec(
        origins=[m.code for m in population.municipalities],
        policy=BundlePolicy(options.bundle_size, options.linger_ms / 1000),
    )
    amqp = amqp_network(options.broker_url)
    network = Network(options.data_dir, spec, transports=amqp)
    total = options.residents + options.changes
    submitted = [0]
    started = time.monotonic()
    try:
        await network.start()
    except BaseException:
        await network.stop()
        await remove_namespace(amqp)
        raise
    reporter = (
        asyncio.create_task(_report_progress(network, total, submitted, on_progress))
        if on_progress
        else None
    )
    sample: str | None = None
    try:
        stream = update_stream(population, options.changes, options.seed)
        for chunk in _chunks(stream, _CHUNK):
            submitted[0] += network.submit(chunk)
            sample = sample or chunk[0][1].juminhyo_code
            await asyncio.sleep(0)  # let the nodes move while the stream is fed
        async with asyncio.timeout(options.timeout_s):
            await network.drain_publishers()
        remaining = max(1.0, options.timeout_s - (time.monotonic() - started))
        heads_ok = await network.wait_converged(remaining)
        elapsed = time.monotonic() - started
        if on_progress:
            on_progress(_progress(network, total, submitted[0]))
        result = judge_network(network, heads_ok, submitted[0], elapsed, sample)
        result.transport = transport_line(options.broker_url, amqp)
    finally:
        if reporter:
            reporter.cancel()
        await network.stop()
        await remove_namespace(amqp)
    return result


def transport_line(broker_url: str | None, amqp: AmqpNetwork | None) -> str:
    """How the nodes talk, for the operator: the URL without its password."""
    if not broker_url or amqp is None:
        return "in process (one asyncio loop, an in-memory broker)"
    scheme, sep, rest = broker_url.partition("://")
    credentials, at, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0] + "@" if at else ""
    return f"RabbitMQ at {scheme}{sep}{user}{host} (namespace {amqp.options.namespace!r})"


def amqp_network(broker_url: str | None) -> AmqpNetwork | None:
    """RabbitMQ at `broker_url` in a namespace of the run's own (None: in process)."""
    if not broker_url:
        return None
    return AmqpNetwork(
        broker_url,
        options=AmqpOptions(namespace=f"jukisync-demo-{secrets.token_hex(4)}."),
        connection_prefix="jukisync demo ",
    )


async def remove_namespace(amqp: AmqpNetwork | None) -> None:
    """Close the demo's RabbitMQ connections and delete its namespace."""
    if amqp is None:
        return
    try:
        await amqp.remove()
    except Exception as exc:  # the broker went away: say what is left behind
        logging.getLogger("jukisync.demo").warning(
            "could not remove the demo's queues (namespace %r) from the broker: %s",
            amqp.options.namespace,
            exc,
        )


def judge_network(
    network: Network, heads_ok: bool, updates: int, elapsed: float, sample: str | None
) -> DemoResult:
    """Whether every tier holds every publisher's chain and the same records."""
    tiers = [network.report(t) for t in network.tiers()]
    prefectures = network.spec.prefectures
    digests_equal = {p: len({t.digests[p] for t in tiers}) == 1 for p in prefectures}
    centres = [t for t in tiers if t.role == "aggregator"]
    centres_agree = all(c.digests == centres[0].digests for c in centres)
    national = next(t for t in tiers if t.name == NATIONAL)
    converged = (
        heads_ok
        and all(t.heads_equal for t in tiers)
        and all(digests_equal.values())
        and centres_agree
        and all(t.records == national.records for t in tiers)
        and not any(t.inconsistencies for t in tiers)
    )
    return DemoResult(
        converged=converged,
        updates=updates,
        elapsed_s=round(elapsed, 3),
        origins=len(network.spec.origins),
        prefectures=prefectures,
        published=sum(n.published_updates for n in network.pub_nodes.values()),
        tiers=tiers,
        digests_equal=digests_equal,
        centres_agree=centres_agree,
        data_dir=os.fspath(network.data_dir),
        prefecture_names={p: synth.PREFECTURES.get(p, "") for p in prefectures},
        sample_code=sample,
        throughput={
            t.name: round(t.updates_applied / t.apply_s, 1) for t in tiers if t.apply_s > 0
        },
    )
