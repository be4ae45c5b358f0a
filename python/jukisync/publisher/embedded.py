"""`jukisync.open_publisher`: the one entry point for a municipal system that embeds
the publisher in its own (synchronous) code.

    with jukisync.open_publisher("config/municipality.toml") as p:
        seq = p.add(update)        # durable in the outbox when it returns

Opening applies the config (key, bundle limits with room for the centres'
attestations), takes the outbox's lock (`lockfile.LockHeld` if another process has
it) and starts publishing in a background thread with its own event loop: bundles
are cut on linger, published with confirms, resend requests served. A broker that is
down is no error: updates are kept in the outbox and published once it returns
(store-and-forward). Leaving the block seals what is open and waits up to
`drain_timeout` seconds for the broker's confirms; whatever is still unconfirmed
stays in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from jukisync import clock
from jukisync.publisher.configured import load_config, open_configured, transport_for
from jukisync.publisher.input import UpdateLine
from jukisync.publisher.node import PublisherNode
from jukisync.publisher.origin import Checked, Publisher
from jukisync.wire.messages import Update

__all__ = ["EmbeddedPublisher", "open_publisher"]

log = logging.getLogger("jukisync.publisher")
T = TypeVar("T")


class EmbeddedPublisher:
    """A running publisher; use it through `open_publisher`. Thread-safe: `add` may
    be called from any thread (each call is handed to the publisher's own loop)."""

    def __init__(self, publisher: Publisher, node_factory: Any, drain_timeout: float) -> None:
        self._publisher = publisher
        self.drain_timeout = drain_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever,
            name=f"jukisync publisher {publisher.origin}",
            daemon=True,
        )
        self._thread.start()
        self._node: PublisherNode = self._call(self._start(node_factory))

    @property
    def origin(self) -> str:
        return self._publisher.origin

    async def _start(self, node_factory: Any) -> PublisherNode:
        node: PublisherNode = node_factory(self._publisher)
        await node.start()
        return node

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- accepting -------------------------------------------------------------------
    def add(self, update: Update | UpdateLine) -> int:
        """Validate, number and durably accept one update (an `UpdateLine`, the input
        format, or a wire `Update`); returns its sequence number. Raises
        `codes.CodeError` naming the field when the update is invalid (nothing is kept
        then)."""
        return self.add_many([update])[0]

    def add_many(self, updates: Sequence[Update | UpdateLine]) -> list[int]:
        """Accept several updates in one transaction, all or none."""
        now = clock.now_us()
        wire = [u.to_update(now) if isinstance(u, UpdateLine) else u for u in updates]
        # Checked in the caller's thread (errors are the caller's), once: the loop's
        # `add_many` takes them as they are.
        checked = [self._publisher.check(update) for update in wire]
        return self._call(self._add(checked))

    async def _add(self, updates: list[Checked]) -> list[int]:
        seqs = self._publisher.add_many(updates)
        self._node.notify()
        return seqs

    # --- state -----------------------------------------------------------------------
    def pending(self) -> tuple[int, int]:
        """(updates not yet in a bundle, sealed bundles the broker has not confirmed)."""
        return self._call(self._pending())

    async def _pending(self) -> tuple[int, int]:
        return self._publisher.open_count, self._publisher.unconfirmed_count()

    def drain(self, timeout: float | None = None) -> bool:
        """Seal what is open and wait (at most `timeout` seconds, default
        `drain_timeout`) until the broker confirmed everything. Whether it did."""
        bound = self.drain_timeout if timeout is None else timeout
        future = asyncio.run_coroutine_threadsafe(self._node.drain(), self._loop)
        try:
            future.result(bound)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return False
        return True

    # --- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Drain (bounded), stop publishing, release the outbox. Idempotent."""
        if not self._thread.is_alive():
            return
        try:
            if not self.drain():
                log.warning(
                    "publisher %s: not all confirmed within %.1f s; the outbox keeps them "
                    "for the next start",
                    self.origin,
                    self.drain_timeout,
                )
        finally:
            try:
                self._call(self._stop(), timeout=self.drain_timeout + 10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()
                self._publisher.close()

    async def _stop(self) -> None:
        await self._node.stop(graceful=False)
        await self._node.transport.close()

    def __enter__(self) -> EmbeddedPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_publisher(
    config: str | os.PathLike[str], *, drain_timeout: float = 30.0
) -> EmbeddedPublisher:
    """A publisher as the municipality config at `config` says, publishing to its
    broker (see the module's doc). Raises `PublisherConfigError` for a bad config or
    key, `lockfile.LockHeld` when another process publishes from the same outbox."""
    loaded = load_config(config)
    publisher = open_configured(loaded)
    try:
        return EmbeddedPublisher(
            publisher,
            lambda p: PublisherNode(
                p, transport_for(loaded), announce_s=loaded.announce_interval_s
            ),
            drain_timeout,
        )
    except BaseException:
        publisher.close()
        raise
