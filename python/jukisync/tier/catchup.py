"""A tier knowing it is behind, and asking for what it lacks (DESIGN.md §3a).

`CatchUp` belongs to a `TierNode` and does three things:

- **hears heads**: consumes the node's heads queue (`jukisync.heads`), verifies each
  announcement against the key registry (`trust.heads.verify_head`) and keeps the
  highest per origin (`HeadBook`); an aggregator also relays, every
  `announce_interval_s`, the head it holds of every origin of its prefectures, signed
  with its centre key, so a tier that starts after an origin went quiet still learns
  what exists;
- **repairs**: every `resend_interval_s` it compares, per origin, its chain head with
  the highest announced head and with what waits in pending. Behind, not halted, and
  its head unmoved for `answer_wait_s` (so bundles merely in flight cost nothing), it
  asks for the range from its head on. An aggregator asks the origin first
  (`ctl.<origin>`, served from the outbox); when that is unroutable or brings nothing
  within `answer_wait_s`, it asks its twin (`repair.<pref>.<origin>`, served from the
  twin's change log as signed, attested envelopes re-published on the updates
  exchange), and alternates while nothing comes. National asks the centres to
  re-forward. Each request asks for at most `repair_max_bundles` bundles; the next
  one goes, to the source that answered, when those arrived (so an announcement far
  ahead costs one bounded request per interval, never a storm), and a
  `RequestLimiter` caps requests per origin and overall;
- **serves repairs** (aggregator): a repair request of another tier for an origin of
  its prefectures is answered from the change log, rate-limited per requester and
  origin.

Announcements are hints only: nothing is applied from them, only signed envelopes are.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from jukisync import _core, clock
from jukisync.tier import retention
from jukisync.tier.lag import HeadBook, Lag, RequestLimiter, lag
from jukisync.transport.base import (
    ResendRequest,
    Subscription,
    TransportUnavailable,
    head_key,
    heads_bindings,
    repair_key,
)
from jukisync.trust.heads import HeadRejected, sign_head, verify_head
from jukisync.wire.messages import (
    Head,
    HeadAnnouncement,
    RepairRequest,
    decode_body,
    decode_envelope,
    decode_heads_message,
    encode,
)

if TYPE_CHECKING:
    from jukisync.tier.node import TierNode

__all__ = ["CatchUp", "CentreSigner", "OriginLag"]

log = logging.getLogger("jukisync.catchup")

Source = Literal["origin", "twin", "centres"]


@dataclass(frozen=True, slots=True)
class CentreSigner:
    """The centre's own key, to sign the heads it relays."""

    centre: str
    key_id: str
    secret: bytes


@dataclass(frozen=True, slots=True)
class OriginLag:
    origin: str
    applied_seq: int
    announced_seq: int
    pending: int  # bundles waiting in pending
    lag: Lag
    halted: bool
    diverged: bool = False  # applied the announced seq, yet with another hash


@dataclass(slots=True)
class _Asked:
    from_seq: int
    source: Source
    at: float  # monotonic


class CatchUp:
    def __init__(
        self,
        node: TierNode,
        *,
        registry: _core.KeyRegistry | None = None,
        signer: CentreSigner | None = None,
    ) -> None:
        # A proxy, not a reference: no cycle keeps the node (and its store) alive after
        # its owner let go of it (LMDB: one environment per process until freed).
        self.node: TierNode = weakref.proxy(node)
        self.registry = registry
        self.signer = signer
        self.book = HeadBook()
        cfg = node.config
        self.limiter = RequestLimiter(
            interval_s=cfg.resend_interval_s, rate_per_s=cfg.max_requests_per_s, burst=16
        )
        self.serve_limiter = RequestLimiter(
            interval_s=cfg.resend_interval_s, rate_per_s=cfg.max_requests_per_s, burst=16
        )
        self.gap_origins: set[str] = set()  # origins that reported a gap
        self._asked: dict[str, _Asked] = {}
        self._created_at: dict[tuple[str, int], int] = {}  # (origin, seq) -> created_at
        self.heads_heard = 0
        self.heads_refused = 0
        self.repairs_served = 0  # bundles re-sent for another tier
        self.last_applied_us: dict[str, int] = {}  # origin -> wall time of the last apply
        # Behind origins -> (applied seq, since when it has not moved).
        self._progress: dict[str, tuple[int, float]] = {}
        self.listening_since: float | None = None  # monotonic: heads consumer registered

    # --- lifetime ----------------------------------------------------------------------
    async def start(self) -> Subscription | None:
        """Declare and consume the heads queue (if configured); spawn the loops."""
        node, cfg = self.node, self.node.config
        subscription = None
        if cfg.heads_queue is not None:
            bindings = heads_bindings(cfg.prefectures if cfg.role == "aggregator" else None)
            await node.transport.declare_heads_queue(cfg.heads_queue, bindings)
            subscription = node.transport.consume_heads(cfg.heads_queue, bindings)
            node._spawn("heads", self._hear(subscription))
            node._spawn("listening", self._note_listening(subscription))
            if cfg.role == "aggregator" and self.signer is not None:
                node._spawn("announce", self._relay_loop())
        node._spawn("repair", self._repair_loop())
        return subscription

    async def _note_listening(self, subscription: Subscription) -> None:
        started = getattr(subscription, "wait_started", None)
        if started is not None:
            await started()
        self.listening_since = time.monotonic()

    # --- what the node tells it ------------------------------------------------------
    def on_gap(self, origin: str) -> None:
        self.gap_origins.add(origin)

    def on_applied(self, origin: str) -> None:
        self.last_applied_us[origin] = clock.now_us()

    # --- lag -------------------------------------------------------------------------
    def origins(self) -> set[str]:
        """Origins known to exist beyond the store's heads: announced, or with a gap
        (call on the event loop: these sets change there)."""
        return set(self.book.origins()) | set(self.gap_origins)

    def lags(
        self, origins: set[str] | None = None, gap_origins: set[str] | None = None
    ) -> list[OriginLag]:
        """Each origin held, announced, with a gap or halted, with its lag. Reads the
        store: from a worker thread pass `origins` and `gap_origins` taken on the loop."""
        if origins is None:
            origins = self.origins()
        known = {o: self.book.known(o) for o in origins}
        gapped = set(self.gap_origins) if gap_origins is None else gap_origins
        store = self.node.store
        heads = store.chain_heads()
        halted = store.halted()
        now = clock.now_us()
        out = []
        for origin in sorted(origins | set(halted) | set(heads)):
            applied, applied_hash = heads.get(origin, (0, b""))
            # Only origins that reported a gap (or are halted) can have bundles waiting:
            # no pending read per origin held (a national store holds every origin).
            waiting = store.pending(origin) if origin in gapped or origin in halted else []
            top = max((last for _, last in waiting), default=0)
            head = known.get(origin)
            out.append(
                OriginLag(
                    origin,
                    applied,
                    head.seq if head else 0,
                    len(waiting),
                    lag(applied, head, top, now),
                    origin in halted,
                    head is not None and head.seq == applied and head.hash != applied_hash,
                )
            )
        return out

    def stuck_s(self, origin: str) -> float:
        """How long `origin` has been behind (or had bundles in pending) with its head
        unmoved, as of the last repair pass."""
        progress = self._progress.get(origin)
        return 0.0 if progress is None else time.monotonic() - progress[1]

    # --- hearing heads and repair requests ---------------------------------------------
    async def _hear(self, subscription: Subscription) -> None:
        async for delivery in subscription:
            try:
                message = decode_heads_message(delivery.body)
            except msgspec.DecodeError as exc:
                log.warning("%s: undecodable message on the heads queue: %s", self.node.name, exc)
                self.heads_refused += 1
            else:
                if isinstance(message, HeadAnnouncement):
                    self._hear_head(message)
                else:
                    await self._serve(message)
            await delivery.ack()

    def _hear_head(self, announcement: HeadAnnouncement) -> None:
        if self.registry is None:
            return
        try:
            head = verify_head(announcement, self.registry, now_us=clock.now_us())
        except HeadRejected as exc:
            self.heads_refused += 1
            log.warning("%s: head announcement refused: %s", self.node.name, exc)
            return
        self.heads_heard += 1
        if self.book.observe(head):
            log.debug(
                "%s: %s announced at seq %d (by %s)",
                self.node.name,
                head.origin,
                head.seq,
                head.relayed_by or "the origin",
            )

    def set_registry(self, registry: _core.KeyRegistry) -> None:
        self.registry = registry

    # --- relaying (aggregator) ---------------------------------------------------------
    async def _relay_loop(self) -> None:
        while True:
            await self.relay()
            await asyncio.sleep(self.node.config.announce_interval_s)

    async def relay(self) -> int:
        """Announce, signed by this centre, the head it holds of each origin it serves;
        returns how many were heard by some tier."""
        signer, node = self.signer, self.node
        assert signer is not None
        heads = await asyncio.to_thread(node.store.chain_heads)
        messages = []
        for origin, (seq, hash_) in sorted(heads.items()):
            if origin[:2] not in node.config.prefectures:
                continue
            created_at = await self._created_at_of(origin, seq)
            if created_at is None:
                continue
            head = Head(
                origin=origin,
                seq=seq,
                hash=hash_,
                created_at=created_at,
                announced_at=clock.now_us(),
                relayed_by=signer.centre,
            )
            messages.append((head_key(origin), sign_head(head, signer.key_id, signer.secret)))
        # All in flight at once (one channel keeps them in order); unheard ones are fine.
        results = await asyncio.gather(
            *(node.transport.publish_heads(key, message) for key, message in messages),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, TransportUnavailable):
                raise result
        return sum(result is None for result in results)

    async def _created_at_of(self, origin: str, seq: int) -> int | None:
        key = (origin, seq)
        if key not in self._created_at:
            envelopes = await asyncio.to_thread(self.node.store.changes, origin, seq, 1)
            if not envelopes:
                return None
            body = decode_body(decode_envelope(envelopes[0]).body)
            if body.last_seq != seq:
                return None
            if len(self._created_at) > 100_000:
                self._created_at.clear()
            self._created_at[key] = body.created_at
        return self._created_at[key]

    # --- serving repairs (aggregator) ----------------------------------------------------
    async def _serve(self, request: RepairRequest) -> None:
        node, cfg = self.node, self.node.config
        if cfg.role != "aggregator" or request.requester == node.name:
            return
        if request.origin[:2] not in cfg.prefectures:
            return
        if not self.serve_limiter.allow((request.requester, request.origin), time.monotonic()):
            log.debug("%s: repair request of %s held back", node.name, request.requester)
            return
        limit = min(request.max_bundles, cfg.repair_max_bundles)
        try:
            # A range pruned after a checkpoint is read from its archive.
            envelopes = await asyncio.to_thread(
                retention.changes, node.store, request.origin, request.from_seq, limit
            )
        except retention.BeforeRetention as exc:
            log.error("%s: cannot serve %s: %s", node.name, request.requester, exc)
            return
        if not envelopes:
            log.info(
                "%s: %s asked for %s from seq %d: not held here",
                node.name,
                request.requester,
                request.origin,
                request.from_seq,
            )
            return
        publish = (
            node.transport.publish_forward
            if request.to == "national"
            else node.transport.publish_bundle
        )
        try:
            await asyncio.gather(*(publish(request.origin, e) for e in envelopes))
        except TransportUnavailable as exc:
            log.warning("%s: could not serve %s: %s", node.name, request.requester, exc)
            return
        self.repairs_served += len(envelopes)
        log.info(
            "%s: served %s: %d bundles of %s from seq %d from the change log (to the %s)",
            node.name,
            request.requester,
            len(envelopes),
            request.origin,
            request.from_seq,
            request.to,
        )

    # --- repairing -----------------------------------------------------------------------
    async def _repair_loop(self) -> None:
        while True:
            await asyncio.sleep(self.node.config.resend_interval_s)
            self.node._log_batch(())  # a summary held back while busy, now quiet
            await self.repair_once()

    async def repair_once(self) -> None:
        """One pass over the origins: ask for what is missing where it is due."""
        node, cfg = self.node, self.node.config
        lags = await asyncio.to_thread(self.lags, self.origins(), set(self.gap_origins))
        now = time.monotonic()
        for entry in lags:
            origin = entry.origin
            if entry.pending or entry.lag.seqs:
                progress = self._progress.get(origin)
                if progress is None or progress[0] != entry.applied_seq:
                    self._progress[origin] = (entry.applied_seq, now)
            else:
                self._progress.pop(origin, None)
            if entry.lag.seqs == 0:
                if self._asked.pop(origin, None) is not None:
                    self.limiter.forget(origin)
                    log.info("%s: %s caught up at seq %d", node.name, origin, entry.applied_seq)
                if not entry.pending:
                    self.gap_origins.discard(origin)
                continue
            if entry.halted:
                continue  # an operator's matter: asking cannot help
            quiet = now - self._progress[origin][1]  # since its head last moved
            asked = self._asked.get(origin)
            if asked is None and quiet < cfg.answer_wait_s:
                continue  # behind, but moving (or only just seen): traffic in flight
            if (
                asked is not None
                and asked.from_seq <= entry.applied_seq
                and quiet < 0.5 * (cfg.resend_interval_s)
            ):
                continue  # the answer is still coming in: ask for more once it stops
            await self.ask(origin, entry.applied_seq + 1, entry)

    async def ask(self, origin: str, from_seq: int, why: OriginLag | None = None) -> None:
        """Ask the next source for `origin` from `from_seq`, unless a request for the
        same range is still awaited or the limiter holds it back."""
        node, cfg = self.node, self.node.config
        now = time.monotonic()
        asked = self._asked.get(origin)
        progressed = asked is None or asked.from_seq != from_seq
        if not progressed and asked is not None and now - asked.at < cfg.answer_wait_s:
            return
        source: Source
        if cfg.role == "national":
            source = "centres"
        elif asked is None:
            source = "origin"
        elif progressed:
            source = asked.source  # it answered: ask it for the next range
        else:
            source = "twin" if asked.source == "origin" else "origin"
        if not self.limiter.allow(origin, now):
            return
        if asked is None and why is not None:
            log.warning(
                "%s: behind on %s: applied seq %d, announced %d, %d in pending (%d seqs, "
                "%.1fs behind)",
                node.name,
                origin,
                why.applied_seq,
                why.announced_seq,
                why.pending,
                why.lag.seqs,
                why.lag.seconds,
            )
        if source == "origin" and not await self._ask_origin(origin, from_seq):
            source = "twin"  # nobody listens for the origin: straight to the twin
        if source != "origin":
            await self._ask_centres(origin, from_seq, source)
        self._asked[origin] = _Asked(from_seq, source, now)

    async def _ask_origin(self, origin: str, from_seq: int) -> bool:
        node = self.node
        try:
            await node.transport.request_resend(ResendRequest(origin, from_seq, node.name))
        except TransportUnavailable as exc:
            log.info("%s: cannot ask %s to resend (%s)", node.name, origin, exc)
            return False
        node.stats.resend_requests += 1
        log.info("%s: asked %s to resend from seq %d", node.name, origin, from_seq)
        return True

    async def _ask_centres(self, origin: str, from_seq: int, source: Source) -> bool:
        node, cfg = self.node, self.node.config
        request = RepairRequest(
            origin=origin,
            from_seq=from_seq,
            max_bundles=cfg.repair_max_bundles,
            requester=node.name,
            to="national" if cfg.role == "national" else "centres",
        )
        try:
            await node.transport.publish_heads(repair_key(origin), encode(request))
        except TransportUnavailable as exc:
            log.warning("%s: no centre to ask for %s (%s)", node.name, origin, exc)
            return False
        node.stats.repair_requests += 1
        log.info(
            "%s: asked the %s to re-send %s from seq %d",
            node.name,
            "twin centre" if source == "twin" else "centres",
            origin,
            from_seq,
        )
        return True
