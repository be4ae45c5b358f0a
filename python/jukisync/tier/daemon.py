"""The tier daemons: `jukisync run --config FILE`, an aggregation centre or the national
node over RabbitMQ (DESIGN.md §1, §3, §5).

Start-up, in order, each failure a `StartupError` with its exit code and one line:
1. lock the store directory (`daemon.lock`): one daemon per store;
2. the trust section: the root public key and the registry it must verify;
3. aggregator: its signing key (owner = the config's `id`, known to the registry);
4. open the store, writing the trust files beside it (`storedir`), so operator tools
   (`jukisync status|quarantine|lookup --store`) can open it while the daemon runs;
5. the HTTP endpoint (`/healthz`, `/metrics`) if `http.port` is not 0, so the node
   reports "starting" while it connects;
6. connect to the broker within `broker.connect_timeout_s` (or wait as long as it
   takes with `wait`), declare the topology and start consuming: the aggregator its
   queue for its prefecture set (`bundle_queue_name`), national its forward queue
   (`national_queue_name`).

Then it runs until `request_stop()` (the CLI wires SIGTERM and SIGINT to it) or until
the node fails (store failure, queue refused): stop consuming, finish the batch in
hand and commit it, forward what is waiting if national is reachable, close the
connection. A broker that goes away meanwhile is not a failure: the transport
reconnects and the node resumes (health says 503 meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from jukisync import _core, clock, lockfile
from jukisync.config import AggregatorConfig, TierConfig
from jukisync.exitcodes import ExitCode
from jukisync.query.rpc import QueryServer
from jukisync.tier import retention
from jukisync.tier.assembly import (
    StartupError,
    Trust,
    assemble_tier,
    load_trust,
    national_queue_name,
    open_store,
    queue_name,
    role_of,
)
from jukisync.tier.audit_metrics import AuditAnomalyCollector
from jukisync.tier.node import Role, TierNode
from jukisync.tier.observability import HttpEndpoint, NodeMetrics
from jukisync.tier.own_key import KeyRefused, rotate_own_key, signing_key_path
from jukisync.tier.registry_reload import RegistryHolder
from jukisync.transport.amqp import AmqpTransport, TopologyError
from jukisync.transport.base import TransportUnavailable
from jukisync.trust import keys, storedir

__all__ = [
    "Daemon",
    "StartupError",
    "TierConfig",
    "Trust",
    "load_trust",
    "national_queue_name",
    "open_store",
    "queue_name",
]

log = logging.getLogger("jukisync.daemon")

LOCK_FILE = "daemon.lock"


class _Quiet(logging.Filter):
    """Drops the transport's retry warnings while a bounded start-up connect is tried:
    if it fails, the one-line reason says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class Daemon:
    """One tier node's process: store, transport, node, health and metrics."""

    def __init__(
        self,
        config: TierConfig,
        *,
        connection_name: str | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # read again on SIGHUP for a rotated signing_key
        self.role: Role = role_of(config)
        self.connection_name = connection_name or (
            f"jukisync {self.role} {config.id} pid {os.getpid()}"
        )
        self.queue = queue_name(config)
        self.phase = "starting"  # starting, running, stopping, stopped
        self.node: TierNode | None = None
        self.transport: AmqpTransport | None = None
        self.http: HttpEndpoint | None = None
        self.queries: QueryServer | None = None
        self.registry: RegistryHolder | None = None
        self._stop: asyncio.Event | None = None
        self.stop_requested = False
        self._reload_pending = False  # a SIGHUP came before the registry holder existed
        self._retention_key: keys.KeyPair | None = None

    def reload_registry(self) -> bool:
        """SIGHUP: read, verify and swap in the registry of `trust.registry`."""
        if self.registry is None:
            # Starting: the registry read at start-up may already be the old one, so
            # read it again as soon as the node holds one (a SIGHUP is never lost).
            log.info("registry reload: asked while starting; done once the store is open")
            self._reload_pending = True
            return False

        def load() -> tuple[bytes, bytes]:
            trust = self.config.trust
            try:
                root = storedir.read_root_public(trust.root_public_key)
            except storedir.StoreDirError as exc:
                raise ValueError(str(exc)) from None
            return Path(trust.registry).read_bytes(), root

        changed = self.registry.reload(load)
        return self._reload_own_key() or changed

    def _reload_own_key(self) -> bool:
        """SIGHUP, after the registry: a centre takes a rotated key of its own from its
        config's key file (`tier/own_key.py`); True when it will attest with it."""
        node, holder, config = self.node, self.registry, self.config
        if not isinstance(config, AggregatorConfig) or node is None or holder is None:
            return False
        current = node.store.centre_key_id()
        try:
            path = signing_key_path(config, self.config_path)
            rotation = rotate_own_key(
                config.id, path, node.store, node.catchup, holder.registry_bytes
            )
        except KeyRefused as exc:
            holder.failures += 1
            log.error("signing key reload refused, keeping key %r: %s", current, exc)
            return False
        if rotation is None:
            log.info("signing key reload: key %r unchanged", current)
            return False
        log.info(
            "signing key rotated: %s attests with key %r from %s on (key %r before)",
            config.id,
            rotation.key_id,
            rotation.starts,
            current,
        )
        return True

    def request_stop(self) -> None:
        """Stop consuming, finish the batch in hand, commit, close (safe to call twice)."""
        self.stop_requested = True
        if self._stop is not None:
            self._stop.set()

    # --- health --------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): healthy only when `ok`, i.e. connected, consuming, no
        origin halted, none behind its announced head beyond the `[health]` bounds,
        no pending stuck. Otherwise `degraded` with `reasons` (or starting, stopping,
        unavailable, failed)."""
        node, transport = self.node, self.transport
        connected = transport is not None and transport.connected
        consuming = node is not None and node.consuming
        failure = node.failure if node is not None else None
        if failure is not None:
            status = "failed"
        elif self.phase in ("stopping", "stopped"):
            status = "stopping"
        elif connected and consuming:
            status = "ok"
        elif self.phase == "starting":
            status = "starting"
        else:
            status = "unavailable"  # connection lost: reconnecting
        details: dict[str, Any] = {
            "status": status,
            "role": self.role,
            "node": self.config.id,
            "queue": self.queue,
            "connected": connected,
            "consuming": consuming,
            "failure": None if failure is None else f"{type(failure).__name__}: {failure}",
            "registry_version": None if self.registry is None else self.registry.version,
            "signing_key_id": None if node is None else node.store.centre_key_id(),
        }
        if transport is not None and not connected and transport.last_error is not None:
            details["broker_error"] = str(transport.last_error)
        if node is not None:
            stats = node.store.stats()
            halted = node.store.halted()
            details["halted"] = sorted(halted)
            for key in ("pending", "forward_backlog", "quarantine_open", "applied_bundles"):
                details[key] = stats.get(key, 0)
            reasons, behind = self._divergence(node, halted)
            own_key = self._own_key_problem()
            if own_key is not None:
                reasons.insert(0, own_key)
            details["reasons"] = reasons
            details["behind"] = behind
            if status == "ok" and reasons:
                status = details["status"] = "degraded"
        return status == "ok", details

    def _own_key_problem(self, registry: _core.KeyRegistry | None = None) -> str | None:
        """Why national would refuse this centre's attestations, if it would: its
        signing key is not valid now in the registry in use (revoked, expired or left
        out by a reload). Start-up refuses such a key; a reload cannot be refused for
        it (the registry's keeper decides), so health says it instead."""
        node = self.node
        if node is None or node.catchup.signer is None:
            return None
        if registry is None:
            registry = node.catchup.registry
        if registry is None:
            return None
        signer = node.catchup.signer
        if registry.valid_at(signer.key_id, signer.centre, clock.now_us()):
            return None
        return (
            f"this centre's signing key {signer.key_id!r} is not valid now in registry "
            f"version {registry.version} (revoked, expired or removed): national refuses "
            "its attestations; the twin centre carries the flow"
        )

    def _check_own_key(self, registry: _core.KeyRegistry) -> None:
        """After a reload: say at once if the new registry disowns this centre's key."""
        problem = self._own_key_problem(registry)
        if problem is not None:
            log.error("%s: %s", self.config.id, problem)

    def _divergence(
        self, node: TierNode, halted: dict[str, str]
    ) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Why the node does not hold what exists, per origin (bounded by `[health]`)."""
        bounds = self.config.health
        reasons = [f"origin {o} halted: {why}" for o, why in sorted(halted.items())]
        # A tier that just started knows nothing of what exists until the heads come
        # round: it may not claim to be caught up before two announcement periods.
        settle = bounds.settle_s or 2 * self.config.replication.announce_interval_s
        since = node.catchup.listening_since
        if since is None:
            reasons.append("not yet hearing head announcements")
        elif time.monotonic() - since < settle:
            reasons.append(
                f"listening for head announcements ({time.monotonic() - since:.1f}s of {settle:g}s)"
            )
        behind: dict[str, dict[str, Any]] = {}
        for entry in node.catchup.lags():
            origin, lag = entry.origin, entry.lag
            stuck = node.catchup.stuck_s(origin)
            if lag.seqs:
                behind[origin] = {
                    "applied_seq": entry.applied_seq,
                    "announced_seq": entry.announced_seq,
                    "pending": entry.pending,
                    "lag_seqs": lag.seqs,
                    "lag_seconds": round(lag.seconds, 3),
                }
            if entry.diverged:
                reasons.append(
                    f"origin {origin}: head at seq {entry.applied_seq} differs from the "
                    "announced one (a fork or divergence: reconcile)"
                )
            if entry.halted:
                continue
            if lag.seqs > bounds.max_lag_seqs or lag.seconds > bounds.max_lag_s:
                reasons.append(
                    f"origin {origin} behind by {lag.seqs} seqs, {lag.seconds:.1f}s "
                    f"(applied {entry.applied_seq}, announced {entry.announced_seq})"
                )
            elif entry.pending and stuck > bounds.pending_stuck_s:
                reasons.append(
                    f"origin {origin}: {entry.pending} bundles in pending, head stuck at "
                    f"{entry.applied_seq} for {stuck:.0f}s"
                )
        for origin in sorted(node.catchup.book.conflicts):
            reasons.append(f"origin {origin}: two heads announced with one seq (a fork?)")
        return reasons, behind

    def _refresh_metrics(self, metrics: NodeMetrics) -> None:
        node, transport = self.node, self.transport
        metrics.set_state(
            up=node is not None and node.failure is None,
            connected=transport is not None and transport.connected,
            consuming=node is not None and node.consuming,
            reconnects=max(0, transport.connections_opened - 1) if transport is not None else 0,
        )

    # --- running -------------------------------------------------------------------------
    async def run(self, *, wait: bool = False) -> ExitCode:
        """Start, serve until stopped or failed, shut down. Returns the exit code;
        raises `StartupError` if it could not start."""
        self._stop = asyncio.Event()
        if self.stop_requested:
            self._stop.set()
        config = self.config
        try:
            lock = lockfile.hold(config.store, LOCK_FILE, "store")
        except lockfile.LockHeld as exc:
            raise StartupError(ExitCode.UNAVAILABLE, str(exc)) from None
        except OSError as exc:
            raise StartupError(
                ExitCode.CONFIG, f"store: {config.store}: {exc.strerror or exc}"
            ) from None
        try:
            return await self._run(wait)
        finally:
            self.phase = "stopped"
            if self.transport is not None:
                await self.transport.close()
            if self.http is not None:
                await self.http.close()
            lock.release()

    async def _run(self, wait: bool) -> ExitCode:
        config = self.config
        try:
            node_key = config.signing_key if isinstance(config, AggregatorConfig) else None
            self._retention_key = retention.policy_key(config.retention, node_key)
        except keys.KeyFileError as exc:
            raise StartupError(ExitCode.CONFIG, f"retention: {exc}") from None
        parts = await assemble_tier(config, connection_name=self.connection_name)
        assert isinstance(parts.transport, AmqpTransport)  # none handed in: the broker's
        self.transport, self.queries = parts.transport, parts.queries
        node = parts.node
        self.node = node
        # The registry the store was opened with (written beside it by open_store).
        self.registry = RegistryHolder(
            parts.store,
            config.store,
            storedir.load_registry(config.store).version,
            (Path(config.store) / storedir.REGISTRY_FILE).read_bytes(),
            also=[node.catchup.set_registry, self._check_own_key],
        )
        if self._reload_pending:
            self._reload_pending = False
            self.reload_registry()
        metrics = NodeMetrics(node)
        node.observers.append(metrics.observe)
        metrics.registry.register(self.registry)
        if self.queries is not None:
            policy = self.queries.service.policy
            metrics.registry.register(AuditAnomalyCollector(parts.store, policy.thresholds))
        if config.http.port:
            self.http = HttpEndpoint(
                config.http.listen,
                config.http.port,
                health=self.health,
                metrics=metrics,
                refresh=lambda: self._refresh_metrics(metrics),
            )
            try:
                await self.http.start()
            except OSError as exc:
                self.http = None
                raise StartupError(
                    ExitCode.CONFIG,
                    f"http: cannot listen on {config.http.listen}:{config.http.port}: "
                    f"{exc.strerror or exc}",
                ) from None
        if not await self._connect_and_start(wait):
            await node.stop(graceful=True)  # asked to stop before it was consuming
            return ExitCode.OK
        if node.failure is None and self.queries is not None and config.query is not None:
            assert self._stop is not None
            # On the node's connection: waits for it if it was lost meanwhile.
            if await _first(self.queries.start(), self._stop.wait()):
                log.info("%s: answering queries under %s", config.id, config.query.policy)
        pruning: asyncio.Task[None] | None = None
        if node.failure is None and self._retention_key is not None:
            pruning = asyncio.create_task(
                retention.run_policy(
                    parts.store, Path(config.store), self._retention_key, config.retention
                ),
                name="retention",
            )
        if node.failure is None:
            self.phase = "running"
            log.info(
                "%s %s: consuming %s%s (store %s)",
                self.role,
                config.id,
                self.transport.names.queue(self.queue),
                f" for prefectures {', '.join(config.prefectures)}"
                if isinstance(config, AggregatorConfig)
                else "",
                config.store,
            )
            assert self._stop is not None
            await _first(self._stop.wait(), node.failed.wait())
        self.phase = "stopping"
        if pruning is not None:
            pruning.cancel()  # a prune in hand finishes in its thread (one transaction)
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
        if self.queries is not None:
            await self.queries.close()  # stop answering before the store goes
        if node.failure is not None and not self.stop_requested:
            log.error("%s: node failed: %s; shutting down", config.id, node.failure)
        else:
            log.info("%s: stopping: finishing the batch in hand", config.id)
        started = time.monotonic()
        await node.stop(graceful=True)
        log.info(
            "%s: stopped in %.2fs (%d bundles applied, %d forwarded this run)",
            config.id,
            time.monotonic() - started,
            node.stats.applied,
            node.stats.forwarded,
        )
        if node.failure is not None:
            return ExitCode.FAILURE
        return ExitCode.OK

    async def _connect_and_start(self, wait: bool) -> bool:
        """Connect and start the node; False if a stop was asked meanwhile."""
        transport, node, stop = self.transport, self.node, self._stop
        assert transport is not None and node is not None and stop is not None
        timeout = None if wait else self.config.broker.connect_timeout_s
        quiet = _Quiet()
        transport_log = logging.getLogger("jukisync.transport.amqp")
        if not wait:
            transport_log.addFilter(quiet)
        try:
            while True:
                try:
                    if not await _first(transport.connect(timeout=timeout), stop.wait()):
                        return False
                    await node.start()
                    # Until the broker registered the consumer (or the node failed).
                    started = getattr(node.subscription, "wait_started", None)
                    if started is not None:
                        await _first(started(), _any(stop.wait(), node.failed.wait()))
                    return not stop.is_set()
                except TransportUnavailable as exc:
                    if not wait:
                        raise StartupError(
                            ExitCode.UNAVAILABLE,
                            f"broker unreachable within {timeout:g}s: {exc} "
                            "(--wait to wait for it)",
                        ) from None
                    # Lost again between connecting and declaring: go round.
                    log.warning("%s: broker unavailable (%s); waiting", self.config.id, exc)
                    if not await _first(asyncio.sleep(transport.backoff(0)), stop.wait()):
                        return False
                except TopologyError as exc:
                    raise StartupError(ExitCode.CONFIG, f"broker: {exc}") from None
        finally:
            transport_log.removeFilter(quiet)


async def _any(*waits: Awaitable[object]) -> None:
    """Until the first of `waits` is done."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first(main: Awaitable[object], stop: Awaitable[object]) -> bool:
    """Run `main` until done, unless `stop` finishes first; True if `main` finished
    (re-raising its exception), False if `stop` did."""
    main_task = asyncio.ensure_future(main)
    stop_task = asyncio.ensure_future(stop)
    try:
        await asyncio.wait([main_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (main_task, stop_task):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    if main_task.done() and not main_task.cancelled():
        main_task.result()  # re-raise
        return True
    return False
