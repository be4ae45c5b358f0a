"""Deliveries and the consumer that follows its transport across reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp import commands as spec

from jukisync.transport.amqp.channels import (
    LOST,
    close_quietly,
    closing_is_lost,
    open_channel,
    while_open,
)
from jukisync.transport.amqp.topology import (
    QueueSpec,
    TopologyError,
    declare_exchanges,
    declare_queue,
)
from jukisync.transport.base import Delivery, Subscription, TransportClosed

if TYPE_CHECKING:
    from jukisync.transport.amqp.connection import AmqpTransport

__all__ = ["AmqpDelivery", "AmqpSubscription"]

log = logging.getLogger("jukisync.transport.amqp")


class AmqpDelivery(Delivery):
    """One message from a queue. `user_id` is the broker-validated sender, if it set one."""

    __slots__ = (
        "_channel",
        "_settled",
        "_tag",
        "body",
        "exchange",
        "redelivered",
        "routing_key",
        "user_id",
    )

    def __init__(self, message: aiormq.abc.DeliveredMessage) -> None:
        delivery = message.delivery
        assert isinstance(delivery, spec.Basic.Deliver)
        self._channel = message.channel
        self._tag = delivery.delivery_tag or 0
        self._settled = False
        self.body: bytes = message.body
        self.routing_key: str = delivery.routing_key or ""
        self.exchange: str = delivery.exchange or ""
        self.redelivered: bool = bool(delivery.redelivered)
        self.user_id: str | None = message.header.properties.user_id

    @property
    def stale(self) -> bool:
        """Its channel is gone: the broker has requeued it and will deliver it again."""
        return self._channel.is_closed

    async def ack(self) -> None:
        await self._settle(None)

    async def nack(self, requeue: bool = True) -> None:
        await self._settle(requeue)

    @classmethod
    async def ack_batch(cls, deliveries: Sequence[Delivery]) -> None:
        """One `basic.ack` with `multiple` per channel, on its last delivery: it acks
        every earlier one on that channel, all of which are in `deliveries` or settled
        (the contract of `Delivery.ack_batch`). A batch spans two channels only across
        a reconnect; the lost channel's deliveries are requeued already."""
        last: dict[int, AmqpDelivery] = {}
        for delivery in deliveries:
            assert isinstance(delivery, AmqpDelivery)
            if not delivery._settled:
                delivery._settled = True
                last[id(delivery._channel)] = delivery
        for delivery in last.values():
            await delivery._send(None, multiple=True)

    async def _settle(self, requeue: bool | None) -> None:
        # Settling twice would be a protocol error that closes the channel (and sends
        # back every delivery on it): settle once; later calls do nothing.
        if self._settled:
            return
        self._settled = True
        await self._send(requeue)

    async def _send(self, requeue: bool | None, *, multiple: bool = False) -> None:
        channel = self._channel
        if channel.is_closed:
            return  # requeued by the broker already; it comes again, redelivered
        try:
            with closing_is_lost(channel):
                async with while_open(channel, _SETTLE_TIMEOUT_S):
                    if requeue is None:
                        await channel.basic_ack(self._tag, multiple=multiple, wait=False)
                    else:
                        await channel.basic_nack(self._tag, requeue=requeue, wait=False)
        except LOST:
            # The channel is gone, so the broker already requeued this delivery
            # (as after a crash): nothing left to do; it comes again, redelivered.
            log.debug("settling a delivery on a lost channel: it will be redelivered")


_CLOSED: Final = None  # wakes iterators when a subscription closes or fails
_SETTLE_TIMEOUT_S: Final = 30.0  # an ack the writer cannot take by then: channel wedged


class AmqpSubscription(Subscription):
    """A consumer that follows the transport across reconnects."""

    def __init__(self, owner: AmqpTransport, queue: QueueSpec, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._owner = owner
        self._queue = queue
        self._prefetch = prefetch
        self._buffer: asyncio.Queue[AmqpDelivery | None] = asyncio.Queue()
        self._channel: AbstractChannel | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._started = asyncio.Event()  # pulsed whenever a consumer (re)starts
        self.consumers_started = 0  # how many times a consumer was (re)started
        self._task = asyncio.create_task(self._run(), name=f"amqp consume {queue.name}")

    @property
    def queue(self) -> str:
        return self._queue.name

    @property
    def consuming(self) -> bool:
        """A consumer is registered on a live channel now (for health checks)."""
        channel = self._channel
        return not self._closed and channel is not None and not channel.is_closed

    async def wait_started(self, count: int = 1, timeout: float | None = None) -> None:
        """Until the consumer has been registered with the broker `count` times in all
        (1: subscribed; 2: resubscribed once after a loss...). For tests and health."""
        async with asyncio.timeout(timeout):
            while self.consumers_started < count:
                await self._started.wait()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                self._buffer.put_nowait(_CLOSED)  # for any other waiting iterator
                raise StopAsyncIteration
            if self._error is not None:
                self._buffer.put_nowait(_CLOSED)
                raise self._error
            item = await self._buffer.get()
            if item is None or item.stale:
                continue  # closed/failed (checked above) or from a lost channel
            return item

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        self._buffer.put_nowait(AmqpDelivery(message))

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except TransportClosed:
            self._buffer.put_nowait(_CLOSED)
        except Exception as exc:  # never leave an iterator waiting on a dead consumer
            log.exception("%s: consumer of %s failed", self._owner.name, self._queue.name)
            self._error = exc
            self._buffer.put_nowait(_CLOSED)

    async def _subscribe_on(
        self, connection: AbstractConnection
    ) -> tuple[AbstractChannel, aiormq.Channel, asyncio.Future[None]]:
        """Open a channel, bound its prefetch, declare the queue, start the consumer.
        Returns the channel and a future done when the broker cancels the consumer."""
        channel: AbstractChannel | None = None
        try:
            with closing_is_lost(connection):
                channel, underlay = await open_channel(connection, confirms=False)
                await underlay.basic_qos(prefetch_count=self._prefetch)
                await declare_exchanges(channel, self._owner.names)  # if deleted meanwhile
                await declare_queue(channel, self._queue, self._owner.queue_arguments)
                cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def on_cancel(_: spec.Basic.Cancel) -> None:
                    if not cancelled.done():
                        cancelled.set_result(None)

                underlay.on_consumer_cancel_callbacks.add(on_cancel)
                await underlay.basic_consume(self._queue.name, self._on_message)
        except BaseException:
            await close_quietly(channel)
            raise
        return channel, underlay, cancelled

    async def _consume(self) -> None:
        owner = self._owner
        attempt = 0
        while not self._closed:
            connection = await owner.wait_connection()
            try:
                channel, underlay, cancelled = await self._subscribe_on(connection)
            except TopologyError as exc:
                log.error("%s: cannot consume %s: %s", owner.name, self._queue.name, exc)
                self._error = exc
                self._buffer.put_nowait(_CLOSED)
                return
            except LOST as exc:
                if self._closed:
                    return
                delay = owner.backoff(attempt)
                attempt += 1
                log.warning(
                    "%s: could not consume %s (%s); retrying in %.2fs",
                    owner.name,
                    self._queue.name,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._channel = channel
            self.consumers_started += 1
            attempt = 0
            started, self._started = self._started, asyncio.Event()
            started.set()
            closing = underlay.closing
            try:
                await asyncio.wait([closing, cancelled], return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()  # only the observer; the channel is closed below
            self._channel = None
            await close_quietly(channel)
            if not self._closed:
                log.warning(
                    "%s: consumer of %s lost; resubscribing (unacked deliveries come again)",
                    owner.name,
                    self._queue.name,
                )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner.forget(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        # Closing the channel makes the broker requeue every delivery not acked on it.
        await close_quietly(self._channel)
        self._channel = None
        self._buffer.put_nowait(_CLOSED)
