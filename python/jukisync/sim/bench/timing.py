"""Commit times: when each bundle was published, and when each tier acked it (after its
batch committed, DESIGN.md §3), taken by wrapping the tier transports; and publishing
with a bounded window in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any

from jukisync._core import bundle_span
from jukisync.transport.base import (
    Delivery,
    ResendRequest,
    Subscription,
    Transport,
    ack_all,
)

# --- commit clock: when each bundle was published and committed at each tier --------------


def bundle_id(envelope: bytes) -> tuple[str, int] | None:
    """(origin, last seq) named by an envelope's body; None if it does not decode.
    Read by the core from the body's first fields: the harness, on the nodes' event
    loop, must not walk every update of every bundle it times."""
    span = bundle_span(envelope)
    return None if span is None else (span[0], span[2])


class CommitClock:
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
            async with asyncio.timeout(timeout):
                await done.wait()
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

    @classmethod
    async def ack_batch(cls, deliveries: Sequence[Delivery]) -> None:
        inner: list[Delivery] = []
        for delivery in deliveries:
            assert isinstance(delivery, _TimedDelivery)
            delivery._note(delivery.body)
            inner.append(delivery._inner)
        await ack_all(inner)


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


class TimedTransport(Transport):
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


async def windowed(coros: Iterator[Coroutine[Any, Any, None]], window: int) -> None:
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
