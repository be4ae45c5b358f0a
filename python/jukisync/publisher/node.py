"""The async side of a publisher: cut bundles on time, publish them, serve resends.

`Publisher` (synchronous, durable) decides and keeps; `PublisherNode` drives it over a
`Transport`: a pump task cuts bundles whose linger time is up and publishes every
unconfirmed bundle with publisher confirms (then marks them confirmed), and a control
task answers the centres' resend requests from the retained bundles. While the
transport is unavailable the pump backs off and the publisher keeps accepting
(store-and-forward); the node may even start while the broker is down.

A bundle the transport refuses as too large (`MessageTooLarge`) cannot be delivered
by retrying, and skipping it would leave every centre waiting for it: the pump stops
publishing and records the failure (`failure`, and `drain` raises it), with the
bundle and what was published before it safe in the outbox. The operator raises the
transport's limit (`max_message_bytes`) and starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import msgspec

from jukisync.publisher.origin import Publisher, PublisherError
from jukisync.publisher.outbox import OutboxEntry
from jukisync.transport.base import (
    MessageTooLarge,
    Subscription,
    Transport,
    TransportUnavailable,
    decode_resend,
    head_key,
)

__all__ = ["PublisherFailed", "PublisherNode"]

log = logging.getLogger("jukisync.publisher")


class PublisherFailed(Exception):
    """The pump stopped for good (e.g. a bundle too large for the transport); the
    outbox keeps every bundle not yet confirmed."""


class PublisherNode:
    def __init__(
        self,
        publisher: Publisher,
        transport: Transport,
        *,
        window: int = 64,
        retry_s: float = 0.2,
        max_message_bytes: int | None = None,
        announce_s: float | None = 10.0,
        max_resend: int = 1000,
    ) -> None:
        self.publisher = publisher
        self.transport = transport
        self.window = window  # bundles in flight awaiting confirms
        self.retry_s = retry_s
        # The transport's message limit, if known: a window is cut before a bundle over
        # it, so nothing after that bundle is published ahead of it.
        self.max_message_bytes = (
            max_message_bytes if max_message_bytes is not None else transport.max_message_bytes
        )
        self.published = 0  # bundles confirmed by the transport
        self.published_updates = 0  # updates in those bundles
        self.resent = 0  # bundles published again on request
        self.announce_s = announce_s  # None: no head announcements
        self.max_resend = max_resend  # bundles served per resend request at most
        self.announced = 0  # head announcements some tier heard
        self._announce_wake = asyncio.Event()
        self.failure: PublisherFailed | None = None
        self.unavailable = False  # the last publish attempt found the broker unavailable
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._failed = asyncio.Event()
        self._control: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def origin(self) -> str:
        return self.publisher.origin

    async def start(self) -> None:
        """Start pumping and serving resends. A broker that is down now is no reason
        to refuse: the control queue is declared by its consumer once connected."""
        try:
            await self.transport.declare_control_queue(self.origin)
        except TransportUnavailable as exc:
            log.warning("publisher %s: broker unavailable at start (%s)", self.origin, exc)
        self._control = self.transport.consume_control(self.origin)
        self._spawn("pump", self._pump())
        self._spawn("control", self._serve_control(self._control))
        if self.announce_s is not None:
            self._spawn("announce", self._announce_loop(self.announce_s))
        self._wake.set()  # bundles left unconfirmed before a restart go out first

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"publisher {self.origin}:{name}"))

    def notify(self) -> None:
        """Call after `publisher.add*`: the pump re-checks what is due."""
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Seal what is open and wait until every bundle is confirmed; raises
        `PublisherFailed` if the pump stopped for good."""
        self.publisher.flush()
        self.notify()
        while self.publisher.unconfirmed_count() or self.publisher.open_count:
            if self.failure is not None:
                raise self.failure
            self._idle.clear()
            self._wake.set()
            idle = asyncio.ensure_future(self._idle.wait())
            failed = asyncio.ensure_future(self._failed.wait())
            try:
                await asyncio.wait([idle, failed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
                failed.cancel()
        if self.failure is not None:
            raise self.failure

    async def stop(self, *, graceful: bool = True) -> None:
        """Graceful: flush and publish what can be published now. Either way, what is
        still unconfirmed stays in the outbox for the next start."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if graceful and self.failure is None:  # after the pump: nothing published twice
            self.publisher.flush()
            with contextlib.suppress(TransportUnavailable, PublisherFailed):
                await self._publish_unconfirmed()
        if self._control is not None:
            await self._control.close()

    # --- pump ----------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            wait = self.publisher.wait_s()
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the
            # cancellation `stop` sends when the event is set at the same moment, and
            # the publisher then never exits.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            self.publisher.cut_due()
            try:
                await self._publish_unconfirmed()
            except TransportUnavailable as exc:
                if not self.unavailable:  # once per outage, not every retry
                    log.warning(
                        "publisher %s: broker unavailable (%s); %d bundles kept in the "
                        "outbox, retrying",
                        self.origin,
                        exc,
                        self.publisher.unconfirmed_count(),
                    )
                self.unavailable = True
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            except PublisherFailed as exc:
                log.error("publisher %s: %s", self.origin, exc)
                self.failure = exc
                self._failed.set()
                return
            if self.unavailable:
                log.info("publisher %s: broker available again", self.origin)
                self.unavailable = False
            if not self.publisher.open_count:
                self._idle.set()

    def _too_large(self, entry: OutboxEntry, exc: Exception | None = None) -> PublisherFailed:
        reason = str(exc) if exc is not None else f"over {self.max_message_bytes:,} bytes"
        return PublisherFailed(
            f"bundle seq {entry.first_seq}-{entry.last_seq} ({len(entry.envelope):,} bytes) "
            f"cannot be published: {reason}; publishing stopped, the outbox keeps it and "
            "every later bundle (raise the broker's max_message_bytes and start again)"
        )

    async def _publish_unconfirmed(self) -> None:
        while entries := self.publisher.unconfirmed(self.window):
            limit = self.max_message_bytes
            if limit is not None:
                for i, entry in enumerate(entries):
                    if len(entry.envelope) > limit:
                        if i == 0:
                            raise self._too_large(entry)
                        entries = entries[:i]  # those before it go out first
                        break
            results = await asyncio.gather(
                *(self.transport.publish_bundle(self.origin, e.envelope) for e in entries),
                return_exceptions=True,
            )
            done = [e for e, r in zip(entries, results, strict=True) if r is None]
            if done:
                self.publisher.confirm(done)
                self._announce_wake.set()
                self.published += len(done)
                self.published_updates += sum(e.last_seq - e.first_seq + 1 for e in done)
            for entry, result in zip(entries, results, strict=True):
                if isinstance(result, MessageTooLarge):
                    raise self._too_large(entry, result)
            for result in results:
                if isinstance(result, BaseException):
                    raise result  # TransportUnavailable: retried; anything else: a bug

    # --- head announcements ------------------------------------------------------------
    async def _announce_loop(self, interval_s: float) -> None:
        """At start, every `interval_s`, and after each confirmed batch: the signed
        confirmed head, so a tier that missed bundles learns it without new traffic."""
        while True:
            self._announce_wake.clear()
            await self.announce()
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see _pump
                async with asyncio.timeout(interval_s):
                    await self._announce_wake.wait()

    async def announce(self) -> bool:
        """Publish the head announcement now; False if nobody could hear it."""
        message = self.publisher.announcement()
        if message is None:
            return False
        try:
            await self.transport.publish_heads(head_key(self.origin), message)
        except TransportUnavailable:
            return False  # no tier listens (yet), or no broker: the next one will do
        self.announced += 1
        return True

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
                entries = self.publisher.resend(request.from_seq, self.max_resend)
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
            except MessageTooLarge as exc:
                log.error(
                    "publisher %s: cannot resend for %s: %s", self.origin, request.requester, exc
                )
                await delivery.ack()
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
