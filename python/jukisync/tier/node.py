"""Aggregator and national nodes, written once against the transport interface.

A node consumes deliveries, applies them to its `Store` in batches from a worker
thread (the Rust core releases the GIL, so the event loop keeps receiving and
forwarding meanwhile), and acks the batch (one `multiple` ack per channel) only after
it committed (DESIGN.md §3). Whatever arrived while a batch was being applied forms
the next one, bounded by deliveries (`max_batch`) and by the updates the bundles claim
(`max_batch_updates`, read from each envelope's head without decoding the updates), so
one transaction is never seconds of work holding back acks and forwards.

- `gap`: the store keeps the bundle in pending; an aggregator asks the origin to
  resend from its head at once. Every gap left open, and every origin announced
  beyond the node's head (`jukisync.heads`), is then repaired by `CatchUp`
  (`tier/catchup.py`): the origin, else the twin centre's change log, or for national
  the centres' re-forward, rate-limited and bounded.
- `rejected`: logged as a security event (not from the origin: the stream carries on)
  or as a halt of that origin (an operator must release or drop it).
- aggregator: every committed batch wakes the forwarder, which drains the store's
  forward outbox to national with publisher confirms (the outbox says each bundle's
  origin, for the routing key: nothing is decoded here) and only then marks them done
  — not in a durable commit of their own: the ids ride along with the next batch's
  commit (`Store.apply(forwarded=...)`), or, when nothing is applied for
  `forward_poll_s`, and at a graceful stop, are committed alone. A crash before that
  only forwards them again after the restart, which national answers `duplicate`: as
  before, nothing is lost (marked only after national's confirm) and nothing is
  applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jukisync._core import ApplyResult, KeyRegistry, Store, bundle_span
from jukisync.tier.catchup import CatchUp, CentreSigner
from jukisync.transport.base import (
    Delivery,
    Subscription,
    Transport,
    TransportUnavailable,
    ack_all,
)

__all__ = ["BatchObserver", "NodeConfig", "NodeFailed", "NodeStats", "TierNode"]

log = logging.getLogger("jukisync.node")
security_log = logging.getLogger("jukisync.security")

Role = Literal["aggregator", "national"]

# Called after each committed batch with its results and the seconds store.apply took.
BatchObserver = Callable[[Sequence[ApplyResult], float], None]


class NodeFailed(Exception):
    """The node stopped doing its work: its store failed, or its subscription ended
    (the broker refused its queue, or the transport was closed under it)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str  # the centre id for an aggregator; used as resend requester
    role: Role
    queue: str
    prefectures: Sequence[str] = ()  # aggregator: which prefectures it serves
    max_batch: int = 256  # deliveries per store.apply
    max_batch_updates: int = 50_000  # updates per store.apply (a larger bundle: alone)
    prefetch: int = 1024
    forward_batch: int = 512
    resend_interval_s: float = 1.0  # repair pass period; least spacing of requests per origin
    retry_s: float = 0.2  # back-off when the transport is unavailable
    forward_poll_s: float = 1.0  # how often the forward outbox is read without a wake-up
    heads_queue: str | None = None  # hear head announcements (and serve repairs) there
    announce_interval_s: float = 10.0  # aggregator: relay the heads it holds this often
    answer_wait_s: float = 5.0  # a request unanswered this long goes to the next source
    repair_max_bundles: int = 256  # bundles asked for (or served) per repair request
    max_requests_per_s: float = 20.0  # repair requests over all origins
    batch_log_s: float = 1.0  # at most one "applied" log line per this many seconds


@dataclass(slots=True)
class NodeStats:
    deliveries: int = 0
    batches: int = 0
    applied: int = 0  # bundles committed (including those released from pending)
    updates_applied: int = 0  # updates in bundles reported applied (not released ones)
    duplicates: int = 0
    gaps: int = 0
    security_events: int = 0
    halts: int = 0
    resend_requests: int = 0  # asked an origin
    repair_requests: int = 0  # asked the centres (twin, or re-forward for national)
    redeliveries: int = 0  # deliveries the broker marked redelivered
    forwarded: int = 0
    apply_s: float = 0.0  # wall time spent inside store.apply
    halted_origins: set[str] = field(default_factory=set)


def claimed_updates(envelope: bytes) -> int:
    """How many updates a received envelope claims to hold (its body's seq range, read
    without decoding the updates; 1 if unreadable): to size batches, nothing more."""
    span = bundle_span(envelope)
    return 1 if span is None else max(1, span[2] - span[1] + 1)


class TierNode:
    """An aggregation centre or the national centre on one store and one transport."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        transport: Transport,
        *,
        registry: KeyRegistry | None = None,
        signer: CentreSigner | None = None,
    ) -> None:
        if config.role == "aggregator" and not config.prefectures:
            raise ValueError("an aggregator serves at least one prefecture")
        self.config = config
        self.store = store
        self.transport = transport
        self.stats = NodeStats()
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()  # set with `failure`, for a supervisor to wait on
        self.observers: list[BatchObserver] = []  # metrics
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._applying = False
        self._stopping = False
        self._forward_wake = asyncio.Event()
        self._forward_lock = asyncio.Lock()
        # Forwards national confirmed, not yet forgotten durably (the next commit does),
        # and the last outbox id sent: the forwarder reads on after it meanwhile.
        self._forwarded_unmarked: list[int] = []
        self._sent_through = 0
        self.catchup = CatchUp(self, registry=registry, signer=signer)
        self._heads_subscription: Subscription | None = None
        self._batch_log = _BatchLog()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stopping and self.failure is None

    @property
    def subscription(self) -> Subscription | None:
        return self._subscription

    @property
    def consuming(self) -> bool:
        """Running with a live consumer on its queue (where the transport can tell)."""
        subscription = self._subscription
        if not self.running or subscription is None:
            return False
        return bool(getattr(subscription, "consuming", True))

    # --- lifetime ----------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        await asyncio.to_thread(self._log_recovered)
        if cfg.role == "aggregator":
            await self.transport.declare_bundle_queue(cfg.queue, cfg.prefectures)
            self._subscription = self.transport.consume_bundles(
                cfg.queue, cfg.prefectures, prefetch=cfg.prefetch
            )
        else:
            await self.transport.declare_forward_queue(cfg.queue)
            self._subscription = self.transport.consume_forwards(cfg.queue, prefetch=cfg.prefetch)
        self._spawn("receive", self._receive(self._subscription))
        self._spawn("apply", self._apply_loop())
        if cfg.role == "aggregator":
            self._spawn("forward", self._forward_loop())
            self._forward_wake.set()  # forwards left over from before a restart
        self._heads_subscription = await self.catchup.start()

    def _log_recovered(self) -> None:
        """What the store holds from before this start: pending, forwards, halts."""
        stats = self.store.stats()
        halted = self.store.halted()
        if stats.get("pending") or stats.get("forward_backlog") or halted:
            log.info(
                "%s: recovered from the store: %d bundles in pending, %d waiting to be "
                "forwarded, %d origins halted%s",
                self.name,
                stats.get("pending", 0),
                stats.get("forward_backlog", 0),
                len(halted),
                f" ({', '.join(sorted(halted))})" if halted else "",
            )
            for origin in halted:
                self.stats.halted_origins.add(origin)
        for origin, (seq, _) in self.store.chain_heads().items():
            if self.store.pending(origin):
                self.catchup.on_gap(origin)  # the repair pass follows these up
                log.info("%s: %s: head %d, bundles waiting in pending", self.name, origin, seq)

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks[name] = asyncio.create_task(self._guard(name, coro), name=f"{self.name}:{name}")

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run one of the node's tasks; a failure is kept in `failure`, not swallowed."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: %s task failed; the node no longer does its work", self.name, name)
            if self.failure is None:
                self.failure = exc
            self.failed.set()

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop consuming. Graceful: finish the batch in progress and the forwards.

        Not graceful (a crash in tests): cancel everything at once. Whatever was not
        acked goes back to the queue, as when a daemon is killed.
        """
        if self._stopping:
            return
        self._stopping = True
        receive = self._tasks.pop("receive", None)
        if receive:
            receive.cancel()
        apply = self._tasks.pop("apply", None)
        if apply:
            if not graceful or not self._applying:
                apply.cancel()
            await _settle(apply)
        forward = self._tasks.pop("forward", None)
        if forward:
            if graceful:
                async with self._forward_lock:
                    forward.cancel()
                    await _settle(forward)
                await self._drain_forwards(retry=False)
                if self._forwarded_unmarked:
                    await self._mark_forwarded()
            else:
                forward.cancel()
                await _settle(forward)
        for task in self._tasks.values():
            task.cancel()
            await _settle(task)
        self._tasks.clear()
        if receive:
            await _settle(receive)
        if self._subscription is not None:
            await self._subscription.close()
        if self._heads_subscription is not None:
            await self._heads_subscription.close()

    # --- receiving and applying --------------------------------------------------------
    async def _receive(self, subscription: Subscription) -> None:
        try:
            async for delivery in subscription:
                self.stats.deliveries += 1
                if delivery.redelivered:
                    self.stats.redeliveries += 1
                self._inbox.put_nowait(delivery)  # bounded by the subscription's prefetch
        except Exception as exc:  # e.g. TopologyError: the broker refused the queue
            raise NodeFailed(f"{self.name}: consuming {self.config.queue} failed: {exc}") from exc
        if not self._stopping:
            # Nobody asked it to stop, yet no delivery will ever come: fail visibly.
            raise NodeFailed(f"{self.name}: subscription to {self.config.queue} ended")

    async def _apply_loop(self) -> None:
        held: Delivery | None = None  # the delivery that did not fit the last batch
        while not self._stopping:
            first = held if held is not None else await self._inbox.get()
            self._applying = True
            try:
                batch, held = self._fill_batch(first)
                await self._apply(batch)
            finally:
                self._applying = False

    def _fill_batch(self, first: Delivery) -> tuple[list[Delivery], Delivery | None]:
        """A batch starting at `first` of what has arrived, within `max_batch`
        deliveries and `max_batch_updates` claimed updates (a bundle larger than that
        goes alone), and the delivery that would have overflowed it, if any."""
        cfg = self.config
        batch = [first]
        updates = claimed_updates(first.body)
        while len(batch) < cfg.max_batch and not self._inbox.empty():
            delivery = self._inbox.get_nowait()
            updates += claimed_updates(delivery.body)
            if updates > cfg.max_batch_updates:
                return batch, delivery
            batch.append(delivery)
        return batch, None

    async def _apply(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        forwarded, self._forwarded_unmarked = self._forwarded_unmarked, []
        try:
            results = await asyncio.to_thread(
                self.store.apply, [d.body for d in batch], forwarded=forwarded
            )
        except Exception:
            # The store itself failed (disk full, map full...): nothing was committed.
            # Give the batch back and stop applying (the task ends) rather than spin.
            self._forwarded_unmarked[:0] = forwarded
            for delivery in batch:
                await delivery.nack(requeue=True)
            raise
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.apply_s += elapsed
        for result in results:
            self._account(result)
        self._log_batch(results, sum(d.redelivered for d in batch))
        for observer in self.observers:
            try:
                observer(results, elapsed)
            except Exception:  # metrics must never stop the node
                log.exception("%s: batch observer failed", self.name)
        await ack_all(batch)
        if self.config.role == "aggregator":
            self._forward_wake.set()
        for result in results:
            if result.status == "gap":
                await self._on_gap(result)

    def _account(self, result: ApplyResult) -> None:
        stats = self.stats
        status = result.status
        if status == "applied":
            stats.applied += 1 + result.released
            stats.updates_applied += result.updates
            if result.origin is not None:
                self.catchup.on_applied(result.origin)
                # An applied bundle means the origin flows again (released, superseded).
                stats.halted_origins.discard(result.origin)
            if result.pending_rejected is not None:
                self._account_rejected(result.pending_rejected, " (found while draining pending)")
        elif status == "duplicate":
            stats.duplicates += 1
        elif status == "gap":
            stats.gaps += 1
        else:
            self._account_rejected(result, "")

    def _account_rejected(self, result: ApplyResult, where: str) -> None:
        stats = self.stats
        if result.kind == "security":
            stats.security_events += 1
            security_log.warning(
                "%s: security event%s: bundle claiming origin %s seq %s-%s rejected (%s); "
                "quarantine #%s; the origin's genuine stream carries on",
                self.name,
                where,
                result.origin,
                result.first_seq,
                result.last_seq,
                result.reason,
                result.quarantine_id,
            )
            return
        stats.halts += 1
        if result.origin is not None:
            stats.halted_origins.add(result.origin)
        log.error(
            "%s: origin %s HALTED%s at seq %s-%s: %s; quarantine #%s awaits an operator "
            "(jukisync quarantine release|drop)",
            self.name,
            result.origin,
            where,
            result.first_seq,
            result.last_seq,
            result.reason,
            result.quarantine_id,
        )

    def _log_batch(self, results: Sequence[ApplyResult], redelivered: int = 0) -> None:
        """One info line per applied batch, or a summary per `batch_log_s` when busy
        (also called with no results, to flush a summary once things are quiet)."""
        line = self._batch_log.add(results, redelivered, time.monotonic(), self.config.batch_log_s)
        if line is not None:
            log.info("%s: %s", self.name, line)

    # --- gaps ------------------------------------------------------------------------
    async def _on_gap(self, result: ApplyResult) -> None:
        if result.origin is None:
            return
        new = result.origin not in self.catchup.gap_origins
        self.catchup.on_gap(result.origin)
        if result.resend_from is None:  # the origin is halted: resending cannot help
            return
        if new:
            log.warning(
                "%s: gap in %s: bundle seq %s-%s arrived before seq %s; kept in pending",
                self.name,
                result.origin,
                result.first_seq,
                result.last_seq,
                result.resend_from,
            )
        if self.config.role == "aggregator":
            await self.catchup.ask(result.origin, result.resend_from)

    # --- forwarding (aggregator) -------------------------------------------------------
    async def _forward_loop(self) -> None:
        while True:
            # Also look now and then without a wake-up: an operator's `quarantine
            # release` (another process) queues forwards this node did not apply.
            # (asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the stop's
            # cancellation when the wake-up is set at the same moment.)
            woken = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.forward_poll_s):
                    woken = await self._forward_wake.wait()
            self._forward_wake.clear()
            async with self._forward_lock:
                await self._drain_forwards()
                # Nothing applied for a while: no commit is coming to carry the marks.
                # (Also bound what a crash would make this node forward again.)
                unmarked = len(self._forwarded_unmarked)
                if unmarked and (not woken or unmarked >= 4 * self.config.forward_batch):
                    await self._mark_forwarded()

    async def _drain_forwards(self, *, retry: bool = True) -> None:
        """Forward everything waiting; without `retry`, give up when national is
        unreachable (stopping: the forwards stay in the store for the next start)."""
        while True:
            items = await asyncio.to_thread(
                self.store.forward_batch, self.config.forward_batch, self._sent_through
            )
            if not items:
                return
            try:
                # Started in chain order, routed in that order (transport contract), so
                # national sees each origin's bundles from this centre in order.
                await asyncio.gather(
                    *(self.transport.publish_forward(origin, env) for _, origin, env in items)
                )
            except TransportUnavailable:
                log.warning("%s: national unreachable; forwards kept", self.name)
                if not retry:
                    return
                await asyncio.sleep(self.config.retry_s)
                continue
            # Outbox ids grow with every commit, so everything up to the last one read
            # has been sent: read on after it while the marks wait for a commit.
            self._sent_through = items[-1][0]
            self._forwarded_unmarked.extend(i for i, _, _ in items)
            self.stats.forwarded += len(items)

    async def _mark_forwarded(self) -> None:
        """Forget the confirmed forwards in a commit of their own (idle, stopping)."""
        ids, self._forwarded_unmarked = self._forwarded_unmarked, []
        try:
            await asyncio.to_thread(self.store.forward_done, ids)
        except BaseException:
            self._forwarded_unmarked[:0] = ids
            raise

    @property
    def forwards_unmarked(self) -> int:
        """Forwards national confirmed that the store still counts in its backlog."""
        return len(self._forwarded_unmarked)


@dataclass(slots=True)
class _BatchLog:
    """Counts applied batches between log lines (rate-limited summary when busy)."""

    bundles: int = 0
    updates: int = 0
    batches: int = 0
    redelivered: int = 0
    origins: set[str] = field(default_factory=set)
    last: float | None = None

    def add(
        self, results: Sequence[ApplyResult], redelivered: int, now: float, every_s: float
    ) -> str | None:
        for r in results:
            if r.status == "applied":
                self.bundles += 1 + r.released
                self.updates += r.updates
                if r.origin is not None:
                    self.origins.add(r.origin)
        if results:
            self.batches += 1
        self.redelivered += redelivered
        if not self.bundles or (self.last is not None and now - self.last < every_s):
            return None
        shown = ", ".join(sorted(self.origins)[:5]) + (", ..." if len(self.origins) > 5 else "")
        line = (
            f"applied {self.bundles} bundles ({self.updates} updates) of "
            f"{len(self.origins)} origins ({shown}) in {self.batches} batches"
            + (f"; {self.redelivered} deliveries were redeliveries" if self.redelivered else "")
        )
        self.bundles = self.updates = self.batches = self.redelivered = 0
        self.origins = set()
        self.last = now
        return line


async def _settle(task: asyncio.Task[None]) -> None:
    """Wait for a task to end, whatever way it ends (its failure is logged by the node)."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
