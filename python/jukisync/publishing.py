"""The async side of a publisher: cut bundles on time, publish them, serve resends.

`Publisher` (synchronous, durable) decides and keeps; `PublisherNode` drives it over a
`Transport`: a pump task cuts bundles whose linger time is up and publishes every
unconfirmed bundle with publisher confirms (then marks them confirmed), and a control
task answers the centres' resend requests from the retained bundles. While the
transport is unavailable the pump backs off and the publisher keeps accepting
(store-and-forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import msgspec

from jukisync.publisher import Publisher, PublisherError
from jukisync.transport.base import (
    Subscription,
    Transport,
    TransportUnavailable,
    decode_resend,
)

__all__ = ["PublisherNode"]

log = logging.getLogger("jukisync.publisher")


class PublisherNode:
    def __init__(
        self,
        publisher: Publisher,
        transport: Transport,
        *,
        window: int = 64,
        retry_s: float = 0.2,
    ) -> None:
        self.publisher = publisher
        self.transport = transport
        self.window = window  # bundles in flight awaiting confirms
        self.retry_s = retry_s
        self.published = 0  # bundles confirmed by the transport
        self.published_updates = 0  # updates in those bundles
        self.resent = 0  # bundles published again on request
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._control: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def origin(self) -> str:
        return self.publisher.origin

    async def start(self) -> None:
        await self.transport.declare_control_queue(self.origin)
        self._control = self.transport.consume_control(self.origin)
        self._spawn("pump", self._pump())
        self._spawn("control", self._serve_control(self._control))
        self._wake.set()  # bundles left unconfirmed before a restart go out first

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"publisher {self.origin}:{name}"))

    def notify(self) -> None:
        """Call after `publisher.add*`: the pump re-checks what is due."""
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Seal what is open and wait until every bundle is confirmed."""
        self.publisher.flush()
        self.notify()
        while self.publisher.unconfirmed_count() or self.publisher.open_count:
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    async def stop(self, *, graceful: bool = True) -> None:
        """Graceful: flush and publish what can be published now. Either way, what is
        still unconfirmed stays in the outbox for the next start."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if graceful:  # after the pump is gone, so nothing is published twice here
            self.publisher.flush()
            with contextlib.suppress(TransportUnavailable):
                await self._publish_unconfirmed()
        if self._control is not None:
            await self._control.close()

    # --- pump ----------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            wait = self.publisher.wait_s()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()
            self.publisher.cut_due()
            try:
                await self._publish_unconfirmed()
            except TransportUnavailable:
                log.warning("publisher %s: broker unavailable; keeping bundles", self.origin)
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            if not self.publisher.open_count:
                self._idle.set()

    async def _publish_unconfirmed(self) -> None:
        while entries := self.publisher.unconfirmed(self.window):
            await asyncio.gather(
                *(self.transport.publish_bundle(self.origin, e.envelope) for e in entries)
            )
            self.publisher.confirm(entries)
            self.published += len(entries)
            self.published_updates += sum(e.last_seq - e.first_seq + 1 for e in entries)

    # --- resend requests -------------------------------------------------------------------
    async def _serve_control(self, subscription: Subscription) -> None:
        async for delivery in subscription:
            try:
                request = decode_resend(delivery.body)
            except msgspec.DecodeError:
                log.warning("publisher %s: undecodable control message dropped", self.origin)
                await delivery.nack(requeue=False)
                continue
            if request.origin != self.origin:
                log.warning("publisher %s: resend for %s ignored", self.origin, request.origin)
                await delivery.ack()
                continue
            try:
                entries = self.publisher.resend(request.from_seq)
            except PublisherError as exc:
                log.error("publisher %s: cannot serve %s: %s", self.origin, request.requester, exc)
                await delivery.ack()
                continue
            try:
                for entry in entries:
                    await self.transport.publish_bundle(self.origin, entry.envelope)
            except TransportUnavailable:
                await delivery.nack(requeue=True)
                await asyncio.sleep(self.retry_s)
                continue
            self.resent += len(entries)
            log.info(
                "publisher %s: resent %d bundles from seq %d for %s",
                self.origin,
                len(entries),
                request.from_seq,
                request.requester,
            )
            await delivery.ack()
