"""An in-process transport on asyncio: the broker semantics the nodes rely on, no broker.

`InProcessNetwork` plays the broker: exchanges with topic (or direct) bindings to
named queues, fan-out so each bound queue gets its own copy (a message no queue is bound for is
refused, as a mandatory publish is), per-consumer prefetch,
manual acks, and redelivery of every unacked message when its subscription or its
transport is closed — so stopping a node mid-stream in a test loses what a crash
would lose on RabbitMQ, and nothing more. `network.available = False` makes publishes
fail with `TransportUnavailable`, as an unreachable broker would.

Everything runs on one event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from jukisync.transport.base import (
    CONTROL_EXCHANGE,
    FORWARD_EXCHANGE,
    HEADS_EXCHANGE,
    UPDATES_EXCHANGE,
    Delivery,
    ResendRequest,
    Subscription,
    Transport,
    TransportClosed,
    TransportUnavailable,
    bundle_binding,
    bundle_key,
    control_key,
    encode_resend,
    forward_binding,
    forward_key,
)

__all__ = ["InProcessNetwork", "InProcessTransport", "topic_matches"]


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more words."""
    return _match(pattern.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


@dataclass(slots=True)
class _Message:
    body: bytes
    routing_key: str
    redelivered: bool = False


@dataclass(eq=False, slots=True)
class _Queue:
    name: str
    ready: deque[_Message] = field(default_factory=deque)
    # Woken on every enqueue, ack and close so waiting consumers re-check.
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def put(self, message: _Message) -> None:
        async with self.changed:
            self.ready.append(message)
            self.changed.notify_all()


@dataclass(frozen=True, slots=True)
class _Binding:
    exchange: str
    pattern: str
    queue: str


class InProcessNetwork:
    """The broker of an in-process network. Create transports with `transport(name)`."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._bindings: set[_Binding] = set()
        self.available = True
        self.published = 0

    def transport(self, name: str) -> InProcessTransport:
        return InProcessTransport(self, name)

    # --- broker operations ---------------------------------------------------------
    def declare(self, queue: str, exchange: str, patterns: Sequence[str]) -> _Queue:
        q = self._queues.setdefault(queue, _Queue(queue))
        for pattern in patterns:
            self._bindings.add(_Binding(exchange, pattern, queue))
        return q

    def queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise TransportClosed(f"queue {name!r} is not declared") from None

    async def route(self, exchange: str, routing_key: str, body: bytes) -> int:
        """Copy the message to every bound queue; returns how many got it."""
        if not self.available:
            raise TransportUnavailable("in-process broker marked unavailable")
        targets = {
            b.queue
            for b in self._bindings
            if b.exchange == exchange and topic_matches(b.pattern, routing_key)
        }
        if not targets:
            # As a mandatory publish on RabbitMQ: refused rather than silently dropped,
            # so the publisher keeps the message until some queue is bound.
            raise TransportUnavailable(f"{exchange}: no queue bound for {routing_key}")
        for name in sorted(targets):
            await self._queues[name].put(_Message(body, routing_key))
        self.published += 1
        return len(targets)

    def depth(self, queue: str) -> int:
        """Messages ready in a queue (not counting those handed out and unacked)."""
        q = self._queues.get(queue)
        return len(q.ready) if q else 0


class _Delivery(Delivery):
    __slots__ = ("_subscription", "_tag", "body", "redelivered", "routing_key")

    def __init__(self, subscription: _Subscription, tag: int, message: _Message) -> None:
        self._subscription = subscription
        self._tag = tag
        self.body = message.body
        self.routing_key = message.routing_key
        self.redelivered = message.redelivered

    async def ack(self) -> None:
        await self._subscription.settle(self._tag, requeue=False)

    async def nack(self, requeue: bool = True) -> None:
        await self._subscription.settle(self._tag, requeue=requeue)


class _Subscription(Subscription):
    def __init__(self, owner: InProcessTransport, queue: _Queue, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._owner = owner
        self._queue = queue
        self._prefetch = prefetch
        self._unacked: dict[int, _Message] = {}
        self._tags = itertools.count()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        q = self._queue
        async with q.changed:
            while True:
                if self._closed:
                    raise StopAsyncIteration
                if q.ready and len(self._unacked) < self._prefetch:
                    message = q.ready.popleft()
                    tag = next(self._tags)
                    self._unacked[tag] = message
                    return _Delivery(self, tag, message)
                await q.changed.wait()

    async def settle(self, tag: int, *, requeue: bool) -> None:
        # A delivery settled after its subscription closed was already given back to
        # the queue (as after a channel loss on RabbitMQ): nothing left to do.
        message = self._unacked.pop(tag, None)
        if message is None:
            return
        async with self._queue.changed:
            if requeue:
                message.redelivered = True
                self._queue.ready.appendleft(message)
            self._queue.changed.notify_all()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner.forget(self)
        q = self._queue
        async with q.changed:
            # Back to the front, in the order they were first delivered.
            for tag in sorted(self._unacked, reverse=True):
                message = self._unacked[tag]
                message.redelivered = True
                q.ready.appendleft(message)
            self._unacked.clear()
            q.changed.notify_all()


class InProcessTransport(Transport):
    """One node's connection to an `InProcessNetwork`."""

    def __init__(self, network: InProcessNetwork, name: str) -> None:
        self.network = network
        self.name = name
        self._subscriptions: set[_Subscription] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"transport {self.name!r} is closed")

    def forget(self, subscription: _Subscription) -> None:
        self._subscriptions.discard(subscription)

    def _subscribe(self, queue: str, prefetch: int) -> Subscription:
        self._check_open()
        subscription = _Subscription(self, self.network.queue(queue), prefetch)
        self._subscriptions.add(subscription)
        return subscription

    # --- topology --------------------------------------------------------------------
    async def declare_bundle_queue(self, queue: str, prefectures: Sequence[str]) -> None:
        self._check_open()
        self.network.declare(queue, UPDATES_EXCHANGE, [bundle_binding(p) for p in prefectures])

    async def declare_forward_queue(self, queue: str) -> None:
        self._check_open()
        self.network.declare(queue, FORWARD_EXCHANGE, [forward_binding()])

    async def declare_control_queue(self, origin: str) -> None:
        self._check_open()
        self.network.declare(control_key(origin), CONTROL_EXCHANGE, [control_key(origin)])

    # --- flows ---------------------------------------------------------------------
    async def publish_bundle(self, origin: str, envelope: bytes) -> None:
        self._check_open()
        await self.network.route(UPDATES_EXCHANGE, bundle_key(origin), envelope)

    def consume_bundles(
        self, queue: str, prefectures: Sequence[str], *, prefetch: int = 256
    ) -> Subscription:
        self.network.declare(queue, UPDATES_EXCHANGE, [bundle_binding(p) for p in prefectures])
        return self._subscribe(queue, prefetch)

    async def publish_forward(self, origin: str, envelope: bytes) -> None:
        self._check_open()
        await self.network.route(FORWARD_EXCHANGE, forward_key(origin), envelope)

    def consume_forwards(self, queue: str, *, prefetch: int = 256) -> Subscription:
        self.network.declare(queue, FORWARD_EXCHANGE, [forward_binding()])
        return self._subscribe(queue, prefetch)

    async def request_resend(self, request: ResendRequest) -> None:
        self._check_open()
        key = control_key(request.origin)
        await self.network.route(CONTROL_EXCHANGE, key, encode_resend(request))

    def consume_control(self, origin: str, *, prefetch: int = 16) -> Subscription:
        key = control_key(origin)
        self.network.declare(key, CONTROL_EXCHANGE, [key])
        return self._subscribe(key, prefetch)

    async def declare_heads_queue(self, queue: str, bindings: Sequence[str]) -> None:
        self._check_open()
        self.network.declare(queue, HEADS_EXCHANGE, bindings)

    async def publish_heads(self, routing_key: str, message: bytes) -> None:
        self._check_open()
        await self.network.route(HEADS_EXCHANGE, routing_key, message)

    def consume_heads(
        self, queue: str, bindings: Sequence[str], *, prefetch: int = 64
    ) -> Subscription:
        self.network.declare(queue, HEADS_EXCHANGE, bindings)
        return self._subscribe(queue, prefetch)

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
