"""`AmqpTransport`: one node's supervised connection to RabbitMQ (reconnects with
backoff, re-declares its topology, publishes with confirms through `publishing`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from yarl import URL

from jukisync.transport.amqp.channels import (
    LOST,
    access_refused,
    close_quietly,
    closing_is_lost,
    open_channel,
)
from jukisync.transport.amqp.consumer import AmqpSubscription
from jukisync.transport.amqp.options import AmqpOptions, backoff_delay, ssl_context, url_user
from jukisync.transport.amqp.publishing import publish_confirmed, settle_all
from jukisync.transport.amqp.topology import (
    Names,
    QueueSpec,
    TopologyError,
    bundle_queue_spec,
    check_message_size,
    control_queue_spec,
    declare_exchanges,
    declare_queue,
    forward_queue_spec,
    heads_queue_spec,
    message_properties,
    queue_arguments,
)
from jukisync.transport.base import (
    ResendRequest,
    Transport,
    TransportClosed,
    TransportUnavailable,
    bundle_key,
    control_key,
    encode_resend,
    forward_key,
)

__all__ = ["AmqpTransport"]

log = logging.getLogger("jukisync.transport.amqp")

_State = Literal["idle", "connecting", "up", "down", "closed"]
_STABLE_S: Final = 5.0  # a connection up this long resets the backoff


class AmqpTransport(Transport):
    """One node's connection to RabbitMQ (see the module docstring).

    `name` is shown to operators as the connection name (`rabbitmqctl list_connections
    client_properties`). The connection opens on first use, or with `connect()`.
    """

    def __init__(
        self, url: str | Sequence[str], *, name: str, options: AmqpOptions | None = None
    ) -> None:
        opts = options or AmqpOptions()
        urls = (url,) if isinstance(url, str) else tuple(url)
        if not urls:
            raise ValueError("no broker URL given")
        schemes = {URL(u).scheme for u in urls}
        for scheme in schemes:
            if scheme not in ("amqp", "amqps"):
                raise ValueError(f"broker URL must be amqp:// or amqps://, got {scheme!r}://")
        if len(schemes) > 1:
            raise ValueError("broker URLs mix amqp:// and amqps://: use one scheme for all")
        (scheme,) = schemes
        if scheme != "amqps" and (opts.ca_file or opts.cert_file):
            raise ValueError("ca_file/cert_file need an amqps:// broker URL")
        if len({url_user(u) for u in urls}) > 1:
            raise ValueError("broker URLs name different users: one node logs in as one user")
        # The nodes of one cluster, tried in turn: a connection lost or refused moves
        # on to the next address (see `_supervise`).
        self.urls = urls
        self._url_index = 0
        url = urls[0]
        self.url = url
        self.name = name
        self.options = opts
        self.max_message_bytes = opts.max_message_bytes
        self.names = Names(opts.namespace)
        self.user_id = opts.user_id if opts.user_id is not None else url_user(url)
        self.queue_arguments = queue_arguments(
            opts.queue_type,
            dead_letter_exchange=self.names.dead,
            delivery_limit=opts.delivery_limit,
            quorum_replicas=opts.quorum_replicas,
        )
        self._ssl = ssl_context(opts) if scheme == "amqps" else None
        self._state: _State = "idle"
        self._changed = asyncio.Event()
        self._last_error: BaseException | None = None
        self._connection: AbstractConnection | None = None
        self._publisher: aiormq.Channel | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._subscriptions: set[AmqpSubscription] = set()
        self._queues: dict[str, QueueSpec] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._random = random.Random()
        self.connections_opened = 0  # for operators and tests: reconnects = this - 1

    def __repr__(self) -> str:
        where = URL(self.current_url).with_password(None)
        return f"<AmqpTransport {self.name!r} {self._state} {where}>"

    # --- connection state ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Up, with a usable publish channel (not merely not yet noticed to be down)."""
        publisher = self._publisher
        return self._state == "up" and publisher is not None and not publisher.is_closed

    @property
    def current_url(self) -> str:
        """The broker address connected to, or to be tried next."""
        return self.urls[self._url_index]

    def _next_url(self) -> None:
        self._url_index = (self._url_index + 1) % len(self.urls)

    @property
    def last_error(self) -> BaseException | None:
        return self._last_error

    @property
    def declared_queues(self) -> list[str]:
        """Full names of the queues this transport declared (or consumes)."""
        return sorted(self._queues)

    def backoff(self, attempt: int) -> float:
        opts = self.options
        return backoff_delay(
            attempt,
            base=opts.reconnect_min_s,
            cap=opts.reconnect_max_s,
            jitter=self._random.random(),
        )

    def _set_state(self, state: _State) -> None:
        if self._state == "closed":
            return
        self._state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _check_open(self) -> None:
        if self._state == "closed":
            raise TransportClosed(f"transport {self.name!r} is closed")

    def _start(self) -> None:
        self._check_open()
        if self._supervisor is None:
            self._set_state("connecting")
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"amqp supervisor {self.name}"
            )

    async def connect(self, timeout: float | None = None) -> None:
        """Wait until connected (retrying with backoff meanwhile), at most `timeout`
        seconds; raises `TransportUnavailable` then, or `TopologyError` at once if the
        broker refused the topology."""
        self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.connected:
            self._check_open()
            if isinstance(self._last_error, TopologyError):
                raise self._last_error
            changed = self._changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TransportUnavailable(self._unavailable())
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
            # that arrives as the event fires, and the caller would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    def _unavailable(self) -> str:
        error = self._last_error
        reason = f"{type(error).__name__}: {error}" if error is not None else "not connected"
        shown = URL(self.current_url).with_password(None)
        return f"broker {shown} unavailable to {self.name!r} ({reason})"

    async def _ready(self) -> AbstractConnection:
        """The connection, for an operation that should fail fast: wait for a connection
        attempt in progress, but not through the backoff after failed ones."""
        self._start()
        deadline = time.monotonic() + self.options.connect_timeout_s
        while True:
            self._check_open()
            if self.connected and self._connection is not None:
                return self._connection
            if isinstance(self._last_error, TopologyError):
                raise self._last_error
            remaining = deadline - time.monotonic()
            if self._state == "down" or remaining <= 0:
                raise TransportUnavailable(self._unavailable())
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see `connect`
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def wait_connection(self) -> AbstractConnection:
        """The connection, waiting as long as it takes (consumers)."""
        while True:
            self._check_open()
            if self.connected and self._connection is not None:
                return self._connection
            self._start()
            await self._changed.wait()

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            try:
                connection = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = access_refused(exc, self.current_url) or exc
                self._set_state("down")
                # One backoff step per round over the addresses: a dead node is
                # skipped at once, a dead cluster is retried ever more slowly.
                delay = self.backoff(attempt // len(self.urls))
                failed = URL(self.current_url).with_password(None)
                self._next_url()
                (log.warning if attempt % 10 == 0 else log.debug)(
                    "%s: cannot connect to %s (%s: %s); attempt %d, retrying in %.2fs",
                    self.name,
                    failed,
                    type(exc).__name__,
                    exc,
                    attempt + 1,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
                self._set_state("connecting")
                continue
            since = time.monotonic()
            try:
                await self._serve(connection)
            finally:
                self._connection = None
                self._publisher = None
                if self._state != "closed":
                    self._set_state("connecting")
                await close_quietly(connection)
            attempt = 0 if time.monotonic() - since >= _STABLE_S else attempt + 1
            if len(self.urls) > 1:
                self._next_url()  # the node may be gone: fail over to the next one
            delay = self.backoff(attempt // len(self.urls))
            log.warning(
                "%s: connection to the broker lost (%s); reconnecting in %.2fs",
                self.name,
                self._last_error or "closed",
                delay,
            )
            await asyncio.sleep(delay)

    async def _open(self) -> AbstractConnection:
        with closing_is_lost():
            return await self._open_connection()

    async def _open_connection(self) -> AbstractConnection:
        opts = self.options
        url = self.current_url
        connection = await aio_pika.connect(
            url,
            ssl_context=self._ssl,
            client_properties={"connection_name": self.name},
            timeout=opts.connect_timeout_s,
        )
        try:
            await self._declare_topology(connection)
            _, self._publisher = await open_channel(connection, confirms=True)
        except BaseException:
            await close_quietly(connection)
            raise
        self._connection = connection
        self._last_error = None
        self.connections_opened += 1
        self._set_state("up")
        log.info("%s: connected to %s", self.name, URL(url).with_password(None))
        return connection

    async def _declare_topology(self, connection: AbstractConnection) -> None:
        """Exchanges (a conflict there fails the connection attempt: TopologyError), the
        dead-letter queue, and again every queue this transport declared before."""
        names = self.names
        channel, underlay = await open_channel(connection, confirms=False)
        try:
            await declare_exchanges(channel, names)
            # The operators' dead-letter queue is shared by every node of the namespace:
            # keep it as it is if it exists, whatever queue type its creator had.
            try:
                await underlay.queue_declare(names.dead_queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                await close_quietly(channel)
                channel, underlay = await open_channel(connection, confirms=False)
                arguments = queue_arguments(
                    self.options.queue_type,
                    dead_letter_exchange=None,
                    delivery_limit=None,
                    quorum_replicas=self.options.quorum_replicas,
                )
                await underlay.queue_declare(names.dead_queue, durable=True, arguments=arguments)
            await underlay.queue_bind(names.dead_queue, names.dead, routing_key="")
            for queue in list(self._queues.values()):
                try:
                    await declare_queue(channel, queue, self.queue_arguments)
                except TopologyError as exc:
                    # It exists in some form; its consumer (if any) reports the conflict.
                    log.error("%s: %s", self.name, exc)
                    await close_quietly(channel)
                    channel, underlay = await open_channel(connection, confirms=False)
        finally:
            await close_quietly(channel)

    async def _serve(self, connection: AbstractConnection) -> None:
        """Until the connection closes; re-opens the publish channel if only it closed
        (a channel error, e.g. the broker refusing a message's user_id)."""
        transport = connection.transport
        assert transport is not None
        conn_closing = transport.connection.closing
        try:
            while True:
                publisher = self._publisher
                assert publisher is not None
                chan_closing = publisher.closing
                try:
                    await asyncio.wait(
                        [conn_closing, chan_closing], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    chan_closing.cancel()
                if conn_closing.done():
                    self._last_error = _future_error(conn_closing) or self._last_error
                    return
                self._last_error = _future_error(chan_closing)
                log.warning(
                    "%s: publish channel closed (%s); reopening", self.name, self._last_error
                )
                self._set_state("connecting")
                self._publisher = None
                await asyncio.sleep(self.backoff(0))
                try:
                    with closing_is_lost(connection):
                        _, self._publisher = await open_channel(connection, confirms=True)
                except LOST as exc:
                    self._last_error = exc
                    return
                self._set_state("up")
        finally:
            conn_closing.cancel()

    async def close(self) -> None:
        """Close every subscription (unacked deliveries go back), then the connection."""
        if self._state == "closed":
            return
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._set_state("closed")
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await supervisor
        connection, self._connection = self._connection, None
        self._publisher = None
        await close_quietly(connection)
        self._changed.set()

    def forget(self, subscription: AmqpSubscription) -> None:
        self._subscriptions.discard(subscription)

    # --- topology --------------------------------------------------------------------
    async def _declare(self, queue: QueueSpec) -> None:
        connection = await self._ready()
        channel: AbstractChannel | None = None
        try:
            with closing_is_lost(connection):
                channel, _ = await open_channel(connection, confirms=False)
                await declare_exchanges(channel, self.names)
                await declare_queue(channel, queue, self.queue_arguments)
        except LOST as exc:
            raise TransportUnavailable(f"declaring {queue.name!r}: {exc}") from exc
        finally:
            await close_quietly(channel)
        self._queues[queue.name] = queue  # re-declared on every reconnect

    async def declare_bundle_queue(self, queue: str, prefectures: Sequence[str]) -> None:
        await self._declare(bundle_queue_spec(self.names, queue, prefectures))

    async def declare_forward_queue(self, queue: str) -> None:
        await self._declare(forward_queue_spec(self.names, queue))

    async def declare_control_queue(self, origin: str) -> None:
        await self._declare(control_queue_spec(self.names, origin))

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in a queue (`queue` as given to the declare/consume calls;
        excludes those delivered and not yet acked)."""
        connection = await self._ready()
        channel: AbstractChannel | None = None
        try:
            with closing_is_lost(connection):
                channel, underlay = await open_channel(connection, confirms=False)
                result = await underlay.queue_declare(self.names.queue(queue), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        except LOST as exc:
            raise TransportUnavailable(f"inspecting {queue!r}: {exc}") from exc
        finally:
            await close_quietly(channel)
        return result.message_count or 0

    # --- publishing ------------------------------------------------------------------
    async def _publish(self, exchange: str, routing_key: str, body: bytes) -> None:
        check_message_size(body, self.options.max_message_bytes)
        try:
            await self._ready()
        except TopologyError as exc:  # to a publisher, as good as no broker: it keeps it
            raise TransportUnavailable(self._unavailable()) from exc
        channel = self._publisher
        if channel is None:
            raise TransportUnavailable(self._unavailable())
        properties = message_properties(
            message_id=f"{self._id_prefix}.{next(self._ids)}", user_id=self.user_id
        )
        await publish_confirmed(
            channel,
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            timeout=self.options.confirm_timeout_s,
            recycle=self._recycle_publisher,
        )

    def _recycle_publisher(self, channel: aiormq.Channel) -> None:
        """A nack or a missing confirm on a live channel: on a cluster, the channel's
        view of a quorum queue whose leader died may stay stale (RabbitMQ 3.10 keeps
        nacking or never confirms). Close it; `_serve` opens a fresh one, and the
        caller's retry goes out on that."""
        if channel is self._publisher and not channel.is_closed:
            log.warning("%s: reopening the publish channel after a refused publish", self.name)
            task = asyncio.ensure_future(channel.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _publish_all(self, exchange: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish in order, all in flight at once; returns when every one is confirmed,
        raises `TransportUnavailable` (after all settled) if any was not."""
        for _, body in items:
            check_message_size(body, self.options.max_message_bytes)
        await settle_all([self._publish(exchange, key, body) for key, body in items])

    async def publish_bundle(self, origin: str, envelope: bytes) -> None:
        await self._publish(self.names.updates, bundle_key(origin), envelope)

    async def publish_bundles(self, origin: str, envelopes: Sequence[bytes]) -> None:
        """Many bundles of one origin, in order, with their confirms awaited together."""
        key = bundle_key(origin)
        await self._publish_all(self.names.updates, [(key, e) for e in envelopes])

    async def publish_forward(self, origin: str, envelope: bytes) -> None:
        await self._publish(self.names.forward, forward_key(origin), envelope)

    async def publish_forwards(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Many `(origin, envelope)` forwards, in order, confirms awaited together."""
        await self._publish_all(self.names.forward, [(forward_key(o), e) for o, e in items])

    async def request_resend(self, request: ResendRequest) -> None:
        await self._publish(self.names.control, control_key(request.origin), encode_resend(request))

    async def declare_heads_queue(self, queue: str, bindings: Sequence[str]) -> None:
        await self._declare(heads_queue_spec(self.names, queue, bindings))

    async def publish_heads(self, routing_key: str, message: bytes) -> None:
        await self._publish(self.names.heads, routing_key, message)

    def consume_heads(
        self, queue: str, bindings: Sequence[str], *, prefetch: int = 64
    ) -> AmqpSubscription:
        return self._subscribe(heads_queue_spec(self.names, queue, bindings), prefetch)

    # --- consuming -------------------------------------------------------------------
    def _subscribe(self, queue: QueueSpec, prefetch: int) -> AmqpSubscription:
        self._start()
        self._queues[queue.name] = queue
        subscription = AmqpSubscription(self, queue, prefetch)
        self._subscriptions.add(subscription)
        return subscription

    def consume_bundles(
        self, queue: str, prefectures: Sequence[str], *, prefetch: int = 256
    ) -> AmqpSubscription:
        return self._subscribe(bundle_queue_spec(self.names, queue, prefectures), prefetch)

    def consume_forwards(self, queue: str, *, prefetch: int = 256) -> AmqpSubscription:
        return self._subscribe(forward_queue_spec(self.names, queue), prefetch)

    def consume_control(self, origin: str, *, prefetch: int = 16) -> AmqpSubscription:
        return self._subscribe(control_queue_spec(self.names, origin), prefetch)


def _future_error(future: asyncio.Future[Any]) -> BaseException | None:
    if not future.done() or future.cancelled():
        return None
    return future.exception()
