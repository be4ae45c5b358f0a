"""The in-process transport: routing, fan-out, acks, prefetch and redelivery."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from jukisync.transport.base import (
    Delivery,
    ResendRequest,
    TransportClosed,
    TransportUnavailable,
    decode_resend,
)
from jukisync.transport.inprocess import InProcessNetwork, topic_matches


async def take(subscription: object, n: int, timeout: float = 1.0) -> list[Delivery]:
    got: list[Delivery] = []
    iterator = subscription.__aiter__()  # type: ignore[attr-defined]
    for _ in range(n):
        got.append(await asyncio.wait_for(iterator.__anext__(), timeout))
    return got


async def nothing_more(subscription: object) -> bool:
    """True if nothing is delivered once every ready task has run: the in-process
    network delivers from memory, so an absence needs no wall-clock wait."""
    iterator = subscription.__aiter__()  # type: ignore[attr-defined]
    pending = asyncio.ensure_future(iterator.__anext__())
    for _ in range(20):
        await asyncio.sleep(0)
    came = pending.done()
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await pending
    return not came


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("upd.35.*", "upd.35.352039", True),
        ("upd.35.*", "upd.13.131016", False),
        ("upd.35.*", "upd.35.352039.x", False),
        ("fwd.#", "fwd.35.352039", True),
        ("fwd.#", "fwd", True),
        ("ctl.352039", "ctl.352039", True),
        ("ctl.352039", "ctl.352047", False),
        ("#.352039", "upd.35.352039", True),
    ],
)
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


async def test_each_centre_queue_gets_its_own_copy_by_prefecture() -> None:
    net = InProcessNetwork()
    a, b, pub = net.transport("a"), net.transport("b"), net.transport("pub")
    await a.declare_bundle_queue("a.q", ["35", "13"])
    await b.declare_bundle_queue("b.q", ["35"])
    await pub.publish_bundle("352039", b"yamaguchi")
    await pub.publish_bundle("131016", b"chiyoda")
    with pytest.raises(TransportUnavailable, match="no queue"):
        await pub.publish_bundle("011002", b"sapporo")  # nobody serves 01: refused
    sub_a = a.consume_bundles("a.q", ["35", "13"])
    sub_b = b.consume_bundles("b.q", ["35"])
    got_a = await take(sub_a, 2)
    got_b = await take(sub_b, 1)
    assert [(d.routing_key, d.body) for d in got_a] == [
        ("upd.35.352039", b"yamaguchi"),
        ("upd.13.131016", b"chiyoda"),
    ]
    assert [d.body for d in got_b] == [b"yamaguchi"]
    assert await nothing_more(sub_b)
    # Acking one queue's copy leaves the other's alone.
    for d in got_a:
        await d.ack()
    await sub_a.close()
    assert net.depth("a.q") == 0
    await sub_b.close()
    assert net.depth("b.q") == 1  # b's copy was not acked: it is back


async def test_unacked_deliveries_are_redelivered_in_order_after_close() -> None:
    net = InProcessNetwork()
    node, pub = net.transport("node"), net.transport("pub")
    await node.declare_forward_queue("n.q")
    for i in range(5):
        await pub.publish_forward("352039", bytes([i]))
    sub = node.consume_forwards("n.q")
    first = await take(sub, 3)
    await first[0].ack()
    await first[2].nack(requeue=True)  # explicitly given back: goes to the front
    await node.close()  # a crash: 1 was delivered but never settled
    with pytest.raises(TransportClosed):
        node.consume_forwards("n.q")
    again = net.transport("node-restarted").consume_forwards("n.q")
    redelivered = await take(again, 4)
    assert [d.body for d in redelivered] == [b"\x01", b"\x02", b"\x03", b"\x04"]
    assert [d.redelivered for d in redelivered] == [True, True, False, False]
    await first[1].ack()  # a stale ack after the close changes nothing
    assert net.depth("n.q") == 0  # all four are out with the new consumer


async def test_prefetch_bounds_unacked_deliveries() -> None:
    net = InProcessNetwork()
    node, pub = net.transport("node"), net.transport("pub")
    await node.declare_forward_queue("n.q")
    for i in range(3):
        await pub.publish_forward("352039", bytes([i]))
    sub = node.consume_forwards("n.q", prefetch=2)
    got = await take(sub, 2)
    assert await nothing_more(sub)
    await got[0].ack()
    assert [d.body for d in await take(sub, 1)] == [b"\x02"]


async def test_closing_a_subscription_ends_its_iteration() -> None:
    net = InProcessNetwork()
    node = net.transport("node")
    await node.declare_forward_queue("n.q")
    sub = node.consume_forwards("n.q")

    async def consume() -> int:
        return len([d async for d in sub])

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # the consumer is waiting inside the iteration
    await sub.close()
    assert await asyncio.wait_for(task, 1.0) == 0


async def test_control_messages_reach_only_their_origin() -> None:
    net = InProcessNetwork()
    yamaguchi, hagi, centre = net.transport("y"), net.transport("h"), net.transport("c")
    await yamaguchi.declare_control_queue("352039")
    await hagi.declare_control_queue("352047")
    await centre.request_resend(ResendRequest("352039", 17, "centre-a"))
    sub = yamaguchi.consume_control("352039")
    [delivery] = await take(sub, 1)
    assert decode_resend(delivery.body) == ResendRequest("352039", 17, "centre-a")
    assert await nothing_more(hagi.consume_control("352047"))


async def test_unavailable_broker_refuses_publishes() -> None:
    net = InProcessNetwork()
    node, pub = net.transport("node"), net.transport("pub")
    await node.declare_forward_queue("n.q")
    net.available = False
    with pytest.raises(TransportUnavailable):
        await pub.publish_forward("352039", b"x")
    net.available = True
    await pub.publish_forward("352039", b"y")
    assert net.depth("n.q") == 1
