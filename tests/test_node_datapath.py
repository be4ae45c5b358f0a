"""The tier node's data path: batches bounded by the updates they hold, forwards routed
by the origin the store's outbox names (the forwarder decodes nothing), and forwards
marked done in the next batch's commit instead of a durable commit of their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jukisync import _core
from jukisync.tier.node import NodeConfig, TierNode, claimed_updates
from jukisync.tier.observability import NodeMetrics
from jukisync.transport.base import Delivery, forward_key
from jukisync.transport.inprocess import InProcessNetwork
from netkit import YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

ORIGIN = YAMAGUCHI_CITY
CENTRE = "centre-east"
WAIT_S = 20.0


async def until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `condition` until it holds (bounded): no sleep stands in for an event."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class SpyStore:
    """A real store, with its forward outbox's calls recorded; `forward_batch` names
    another origin than the envelopes' own, so a forwarder that decoded them to route
    would be seen."""

    def __init__(self, store: _core.Store, claimed_origin: str) -> None:
        self.inner = store
        self.claimed_origin = claimed_origin
        self.done_calls: list[list[int]] = []
        self.marked_by_apply: list[list[int]] = []

    def forward_batch(self, limit: int = 1000, after: int = 0) -> list[tuple[int, str, bytes]]:
        return [
            (i, self.claimed_origin, env) for i, _, env in self.inner.forward_batch(limit, after)
        ]

    def forward_done(self, ids: list[int]) -> None:
        self.done_calls.append(list(ids))
        self.inner.forward_done(ids)

    def apply(self, envelopes: list[bytes], *, forwarded: list[int] = []) -> Any:  # noqa: B006
        if forwarded:
            self.marked_by_apply.append(list(forwarded))
        return self.inner.apply(envelopes, forwarded=forwarded)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def aggregator(tmp_path: Path, ring: KeyRing) -> _core.Store:
    key_id, secret = ring.add(CENTRE)
    return _core.Store(
        str(tmp_path / "centre"),
        role="aggregator",
        registry=ring.registry(),
        map_size=1 << 26,
        centre_id=CENTRE,
        centre_key=secret,
        centre_key_id=key_id,
    )


class FakeDelivery(Delivery):
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.routing_key = ""
        self.redelivered = False

    async def ack(self) -> None: ...
    async def nack(self, requeue: bool = True) -> None: ...


def test_a_batch_is_bounded_by_the_updates_its_bundles_hold(tmp_path: Path) -> None:
    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    sizes = [4, 4, 4, 25, 1, 1, 9, 3]
    bodies = [origin.bundle([update(ORIGIN, i) for i in range(n)]) for n in sizes]
    assert [claimed_updates(b) for b in bodies] == sizes
    assert claimed_updates(b"not an envelope") == 1
    config = NodeConfig(name=CENTRE, role="aggregator", queue="q", prefectures=("35",))
    node = TierNode(
        NodeConfig(**{**_fields(config), "max_batch_updates": 10, "max_batch": 3}),
        aggregator(tmp_path, ring),
        InProcessNetwork().transport(CENTRE),
    )
    deliveries = [FakeDelivery(b) for b in bodies]
    for d in deliveries[1:]:
        node._inbox.put_nowait(d)
    batches: list[list[int]] = []
    first: Delivery | None = deliveries[0]
    while first is not None:
        batch, held = node._fill_batch(first)
        batches.append([claimed_updates(d.body) for d in batch])
        if held is None and not node._inbox.empty():
            held = node._inbox.get_nowait()
        first = held
    # 4+4 (a third 4 would pass 10), 4 (25 would), 25 alone, 1+1 then 9 would pass,
    # 9, and 3 (9+3 > 10); max_batch (3) caps deliveries too.
    assert batches == [[4, 4], [4], [25], [1, 1], [9], [3]]


def _fields(config: NodeConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


async def test_forwards_are_routed_by_the_outbox_and_marked_in_the_next_commit(
    tmp_path: Path,
) -> None:
    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    store = SpyStore(aggregator(tmp_path, ring), claimed_origin="131016")
    network = InProcessNetwork()
    national = network.transport("national")
    await national.declare_forward_queue("national")
    forwards = national.consume_forwards("national", prefetch=100)
    received: list[Delivery] = []

    async def collect() -> None:
        async for delivery in forwards:
            received.append(delivery)
            await delivery.ack()

    collector = asyncio.create_task(collect())
    config = NodeConfig(
        name=CENTRE,
        role="aggregator",
        queue="centre-q",
        prefectures=("35",),
        forward_poll_s=3600.0,  # no idle round in this test: only commits carry marks
    )
    node = TierNode(config, store, network.transport(CENTRE))  # type: ignore[arg-type]
    metrics = NodeMetrics(node)
    await node.start()
    publisher = network.transport(ORIGIN)
    try:
        await publisher.publish_bundle(ORIGIN, origin.bundle([update(ORIGIN, 1)]))
        await until(lambda: len(received) == 1)
        # Routed by what the outbox said, not by the envelope's own origin.
        assert received[0].routing_key == forward_key("131016")
        assert _core.bundle_span(received[0].body) == (ORIGIN, 1, 1)
        [(first_id, _, _)] = store.inner.forward_batch()  # sent, not forgotten yet
        assert node.forwards_unmarked == 1
        assert _backlog_metric(metrics) == 0  # national has it: not backlog

        await publisher.publish_bundle(ORIGIN, origin.bundle([update(ORIGIN, 2)]))
        await until(lambda: len(received) == 2)
        await until(lambda: node.forwards_unmarked == 1)
        # The second batch's commit forgot the first forward: no commit of its own.
        assert store.marked_by_apply == [[first_id]]
        assert store.done_calls == []
        assert [i for i, _, _ in store.inner.forward_batch()] == [first_id + 1]
    finally:
        await node.stop()
        await forwards.close()
        collector.cancel()
    # A graceful stop commits the marks still waiting.
    assert store.done_calls == [[first_id + 1]]
    assert store.inner.forward_batch() == [] and store.inner.stats()["forward_backlog"] == 0


async def test_marks_are_committed_alone_when_nothing_is_applied(tmp_path: Path) -> None:
    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    store = SpyStore(aggregator(tmp_path, ring), claimed_origin=ORIGIN)
    network = InProcessNetwork()
    national = network.transport("national")
    await national.declare_forward_queue("national")
    config = NodeConfig(
        name=CENTRE, role="aggregator", queue="centre-q", prefectures=("35",), forward_poll_s=0.05
    )
    node = TierNode(config, store, network.transport(CENTRE))  # type: ignore[arg-type]
    await node.start()
    try:
        await network.transport(ORIGIN).publish_bundle(ORIGIN, origin.bundle([update(ORIGIN, 1)]))
        await until(lambda: store.inner.stats().get("applied_bundles", 0) == 1)
        await until(lambda: store.inner.stats()["forward_backlog"] == 0)
        assert len(store.done_calls) == 1 and node.forwards_unmarked == 0
    finally:
        await node.stop()


def _backlog_metric(metrics: NodeMetrics) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.render("")[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jukisync_forward_backlog":
                return float(sample.value)
    raise AssertionError("no jukisync_forward_backlog")
