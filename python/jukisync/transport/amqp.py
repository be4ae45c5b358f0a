"""The RabbitMQ transport (DESIGN.md §1, §5) on aio-pika, for asyncio and uvloop alike.

Topology, declared idempotently whenever a connection opens (names optionally
prefixed by a namespace, e.g. for tests):

- `jukisync.updates` (topic) → one durable queue per centre and prefecture set, bound
  to `upd.<pref>.*` for each of its prefectures (`bundle_queue_name`);
- `jukisync.forward` (topic) → the national queue, bound to `fwd.#`;
- `jukisync.control` (direct) → one queue per publisher, `jukisync.control.<origin>`;
- `jukisync.heads` (topic) → one queue per tier node, `jukisync.heads.<node>`, bound by
  `heads_bindings`: head announcements and repair requests, hints only, so the queue
  keeps the newest `HEADS_MAX_LENGTH` (drop-head) and dead-letters nothing;
- `jukisync.dead` (fanout) → queue `jukisync.dead`, which operators read: every queue
  dead-letters there what a consumer nacks without requeue and, on quorum queues,
  what was delivered `delivery_limit` times without being acked (poison).

Queues are durable quorum queues by default (`queue_type="classic"` for a single-node
broker). Consumers get a channel each, with `basic_qos(prefetch)` and manual acks.
Messages are persistent, carry the connection's user as the broker-validated
`user_id`, and are published `mandatory` on one confirm channel, many in flight
(`asyncio.gather` over `publish_*`, or `publish_bundles` / `publish_forwards`); one
channel keeps them in order. A publish returns once the broker confirmed it, and
raises `TransportUnavailable` when it did not: nacked, unroutable (no queue bound
yet: the caller keeps the message instead of the broker dropping it), no confirm
in time, or the connection went away with the confirm outstanding. The caller then
retries from its outbox; at worst the broker got it and it arrives twice, which the
stores absorb.

Reconnection: one supervisor task per transport keeps a connection up, with capped,
jittered exponential backoff between attempts, and re-declares the topology each
time. Subscriptions survive it: each re-opens its channel and consumer on the new
connection. Deliveries of the lost channel are never acked on the new one (delivery
tags are per channel): their `ack` does nothing and the broker, which requeued them
when the channel died, delivers them again with `redelivered` set; those received but
not yet handed out are dropped for the same reason. Nothing is lost, and the only
doubles are redeliveries and retried publishes, both idempotent downstream.

Connection: credentials and vhost from the URL; `amqps://` for TLS, verified against
the system CAs or `AmqpOptions.ca_file`, with an optional client certificate
(`cert_file`, `key_file`; add `?auth=external` to the URL to log in by certificate
and set `user_id`). aiormq also honours `?heartbeat=<s>` (default 60). Each transport
names its connection (`client_properties.connection_name`) after its node, so
operators can see who is connected. Messages over `max_message_bytes` are refused
with `MessageTooLarge` before they reach the broker.

The pure protocol helpers (names, routing, queue arguments, backoff, message
properties) come first and do no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aio_pika
import aiormq
import aiormq.abc
import msgspec
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp import commands as spec
from yarl import URL

from jukisync.transport.base import (
    CONTROL_EXCHANGE,
    FORWARD_EXCHANGE,
    HEADS_EXCHANGE,
    QUERY_EXCHANGE,
    UPDATES_EXCHANGE,
    Delivery,
    MessageTooLarge,
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

__all__ = [
    "CONTENT_TYPE",
    "DEAD_LETTER",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AccessRefused",
    "AmqpDelivery",
    "AmqpNetwork",
    "AmqpOptions",
    "AmqpTransport",
    "ExchangeSpec",
    "MessageTooLarge",
    "Names",
    "QueueSpec",
    "QueueType",
    "TopologyError",
    "Unroutable",
    "access_refused",
    "backoff_delay",
    "bundle_queue_name",
    "bundle_queue_spec",
    "check_message_size",
    "control_queue_name",
    "control_queue_spec",
    "exchange_specs",
    "forward_queue_spec",
    "heads_queue_name",
    "heads_queue_spec",
    "message_properties",
    "queue_arguments",
    "remove_topology",
    "ssl_context",
    "url_user",
]

log = logging.getLogger("jukisync.transport.amqp")

QueueType = Literal["quorum", "classic"]

DEAD_LETTER: Final = "jukisync.dead"  # the dead-letter exchange and the queue behind it
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024  # RabbitMQ 4's own default limit
CONTENT_TYPE: Final = "application/msgpack"
_PERSISTENT: Final = 2


class Unroutable(TransportUnavailable):
    """The broker returned a mandatory message: no queue is bound for its routing key
    yet (e.g. the consuming node never started). The caller keeps it and retries."""


class TopologyError(Exception):
    """The broker refused a declaration (e.g. a queue exists with another type or
    other arguments, or the user may not configure it). Needs an operator."""


class AccessRefused(TopologyError):
    """The broker refused the login (user or password) or the vhost: a configuration
    error, reported at once instead of retried as if the broker were unreachable."""


def access_refused(exc: BaseException, url: str) -> AccessRefused | None:
    """`exc` as an AccessRefused when it is the broker refusing the credentials or the
    vhost of `url` (one line, no password), else None.

    aiormq raises ProbableAuthenticationError for ACCESS_REFUSED at login, and, for a
    vhost that does not exist or the user may not use (NOT_ALLOWED at Connection.Open),
    an InvalidFrameError saying it got Connection.Close instead of Connection.OpenOk
    (ConnectionNotAllowed when it arrives later)."""
    parsed = URL(url)
    user = url_user(url) or "(certificate)"
    vhost = parsed.path[1:] if len(parsed.path) > 1 else "/"
    if isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError
    ):
        return AccessRefused(
            f"the broker at {parsed.host}:{parsed.port} refused the login of user {user!r} "
            "(wrong user or password in broker.url)"
        )
    text = str(exc)
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed) or (
        isinstance(exc, aiormq.exceptions.InvalidFrameError)
        and "Connection.OpenOk" in text
        and "Connection.Close" in text
    ):
        return AccessRefused(
            f"the broker at {parsed.host}:{parsed.port} refused vhost {vhost!r} to user "
            f"{user!r} (no such vhost, or no permissions on it: broker.url)"
        )
    return None


# --- pure protocol helpers ------------------------------------------------------------


def _check_prefectures(prefectures: Sequence[str]) -> list[str]:
    prefs = sorted(set(prefectures))
    if not prefs:
        raise ValueError("a centre serves at least one prefecture")
    for p in prefs:
        if len(p) != 2 or not p.isdigit() or not 1 <= int(p) <= 47:
            raise ValueError(f"prefecture must be a 2-digit code 01..47, got {p!r}")
    return prefs


def bundle_queue_name(centre: str, prefectures: Sequence[str]) -> str:
    """The queue of one centre for one prefecture set: `jukisync.bundles.<centre>.<p>-<p>`.

    The set is part of the name so that changing a centre's prefectures starts a new
    queue, rather than leaving an old queue with bindings it no longer wants.
    """
    if not centre or any(c in centre for c in " \t\r\n"):
        raise ValueError(f"centre id must be a non-empty word, got {centre!r}")
    return f"jukisync.bundles.{centre}.{'-'.join(_check_prefectures(prefectures))}"


def heads_queue_name(node: str) -> str:
    """The queue of one tier node's head announcements and repair requests."""
    return f"jukisync.heads.{node}"


HEADS_MAX_LENGTH: Final = 10_000


def control_queue_name(origin: str) -> str:
    """The queue of one publisher's control messages."""
    return f"jukisync.control.{origin}"


@dataclass(frozen=True, slots=True)
class Names:
    """Exchange and queue names, all prefixed by `namespace` (empty in production)."""

    namespace: str = ""

    def exchange(self, name: str) -> str:
        return self.namespace + name

    def queue(self, name: str) -> str:
        return self.namespace + name

    @property
    def updates(self) -> str:
        return self.exchange(UPDATES_EXCHANGE)

    @property
    def forward(self) -> str:
        return self.exchange(FORWARD_EXCHANGE)

    @property
    def control(self) -> str:
        return self.exchange(CONTROL_EXCHANGE)

    @property
    def heads(self) -> str:
        return self.exchange(HEADS_EXCHANGE)

    @property
    def dead(self) -> str:
        return self.exchange(DEAD_LETTER)

    @property
    def dead_queue(self) -> str:
        return self.queue(DEAD_LETTER)


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    kind: Literal["topic", "direct", "fanout"]


def exchange_specs(names: Names) -> tuple[ExchangeSpec, ...]:
    return (
        ExchangeSpec(names.updates, "topic"),
        ExchangeSpec(names.forward, "topic"),
        ExchangeSpec(names.control, "direct"),
        ExchangeSpec(names.heads, "topic"),
        ExchangeSpec(names.dead, "fanout"),
    )


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A durable queue (full name) and its bindings on one exchange (full name)."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    # Arguments of its own instead of the transport's (type kept): a queue of hints.
    own_arguments: tuple[tuple[str, Any], ...] | None = None


def bundle_queue_spec(names: Names, queue: str, prefectures: Sequence[str]) -> QueueSpec:
    prefs = _check_prefectures(prefectures)
    return QueueSpec(names.queue(queue), names.updates, tuple(bundle_binding(p) for p in prefs))


def forward_queue_spec(names: Names, queue: str) -> QueueSpec:
    return QueueSpec(names.queue(queue), names.forward, (forward_binding(),))


def heads_queue_spec(names: Names, queue: str, bindings: Sequence[str]) -> QueueSpec:
    own = (("x-max-length", HEADS_MAX_LENGTH), ("x-overflow", "drop-head"))
    return QueueSpec(names.queue(queue), names.heads, tuple(bindings), own)


def control_queue_spec(names: Names, origin: str) -> QueueSpec:
    return QueueSpec(names.queue(control_queue_name(origin)), names.control, (control_key(origin),))


def queue_arguments(
    queue_type: QueueType, *, dead_letter_exchange: str | None, delivery_limit: int | None
) -> dict[str, Any]:
    """The `x-` arguments of a jukisync queue. They must not change for an existing
    queue: the broker refuses a re-declaration with other arguments."""
    args: dict[str, Any] = {"x-queue-type": queue_type}
    if dead_letter_exchange is not None:
        args["x-dead-letter-exchange"] = dead_letter_exchange
    if queue_type == "quorum" and delivery_limit is not None:
        args["x-delivery-limit"] = delivery_limit
    return args


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Delay before reconnect attempt `attempt` (0-based): exponential from `base`,
    capped at `cap`, with "equal jitter" (`jitter` in [0, 1) spreads it over the upper
    half) so a fleet of nodes does not reconnect in lockstep after a broker restart."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 60))
    return ceiling / 2 + ceiling / 2 * jitter


def message_properties(
    *, message_id: str, user_id: str | None, app_id: str | None = None
) -> spec.Basic.Properties:
    """Properties of every jukisync message: persistent, typed, identified.

    One object per message: aiormq reads (and may set) its `message_id` to match
    broker returns to publishes.
    """
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=_PERSISTENT,
        message_id=message_id,
        user_id=user_id,
        app_id=app_id,
    )


def check_message_size(body: bytes, limit: int) -> None:
    if len(body) > limit:
        raise MessageTooLarge(
            f"message of {len(body):,} bytes exceeds the transport limit of {limit:,} bytes "
            "(AmqpOptions.max_message_bytes); not published"
        )


def url_user(url: str) -> str | None:
    """The user RabbitMQ authenticates for an AMQP URL (as aiormq logs in: PLAIN with
    the URL's user, `guest` if none), or None for `?auth=external` (certificate login:
    the user is the certificate's name; set `AmqpOptions.user_id`)."""
    parsed = URL(url)
    if parsed.query.get("auth", "plain").lower() == "external":
        return None
    return parsed.user or "guest"


class AmqpOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Tunables of a RabbitMQ transport; decodable from a config table.

    Credentials and vhost come from the URL (`amqp://user:pass@host:port/vhost`,
    `amqps://` for TLS). `ca_file`, `cert_file`, `key_file` configure TLS: a private CA,
    and a client certificate if the broker requires one.
    """

    namespace: str = ""  # prefix of every exchange and queue name (tests, staging)
    queue_type: QueueType = "quorum"  # "classic" for a single-node broker
    delivery_limit: int | None = 50  # quorum: dead-letter after this many deliveries
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    confirm_timeout_s: float = 30.0  # a publish not confirmed by then is unavailable
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 30.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    user_id: str | None = None  # default: the URL's user (what the broker validates)

    def __post_init__(self) -> None:
        if self.queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type must be 'quorum' or 'classic', got {self.queue_type!r}")
        if self.delivery_limit is not None and self.delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, got {self.delivery_limit}")
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")
        for field in ("confirm_timeout_s", "connect_timeout_s", "reconnect_min_s"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below "
                f"reconnect_min_s ({self.reconnect_min_s})"
            )
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")


def ssl_context(options: AmqpOptions) -> ssl.SSLContext:
    """A verifying TLS client context: system CAs or `ca_file`, optional client cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.ca_file)
    if options.cert_file is not None:
        context.load_cert_chain(options.cert_file, options.key_file)
    return context


# --- I/O helpers ---------------------------------------------------------------------


def _cancelling() -> bool:
    """Whether the current task is being cancelled (as opposed to a CancelledError
    that aiormq set on a future because its channel or connection went away)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _gone(resource: AbstractConnection | aiormq.abc.AbstractChannel | None) -> bool:
    if resource is None:
        return False
    if isinstance(resource, AbstractConnection):
        transport = resource.transport
        return resource.is_closed or transport is None or transport.connection.is_closed
    return resource.is_closed


@contextlib.contextmanager
def _closing_is_lost(
    resource: AbstractConnection | aiormq.abc.AbstractChannel | None = None,
) -> Iterator[None]:
    """aiormq fails whatever waits on a channel or connection that closes with the
    close reason, CancelledError, or (when there was no reason) a bare Exception: turn
    those into ConnectionError. A real cancellation of this task goes through."""
    try:
        yield
    except asyncio.CancelledError as exc:
        if _cancelling():
            raise
        raise ConnectionError("the channel or connection closed under the operation") from exc
    except (TopologyError, *_LOST):
        raise
    except Exception as exc:
        if _gone(resource):
            raise ConnectionError(f"the channel or connection closed: {exc!r}") from exc
        raise


@contextlib.asynccontextmanager
async def _while_open(channel: aiormq.abc.AbstractChannel, timeout: float) -> AsyncIterator[None]:
    """Bound an operation on `channel`: it ends with TimeoutError when the channel
    closes, or after `timeout` seconds. aiormq hands frames to the connection's writer
    through a bounded queue; once that writer is gone with the queue full, a send would
    otherwise wait forever."""
    loop = asyncio.get_running_loop()
    active = True
    async with asyncio.timeout(timeout) as deadline:

        def expire(future: asyncio.Future[Any]) -> None:
            if active and not future.cancelled():
                deadline.reschedule(loop.time())

        closing = channel.closing
        closing.add_done_callback(expire)
        try:
            yield
        finally:
            active = False
            closing.remove_done_callback(expire)
            closing.cancel()  # only this observer; no effect on the channel


# Errors meaning "the connection or channel went away": the operation may be retried.
_LOST: Final = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    TimeoutError,
)


def _topology_error(exc: aiormq.exceptions.ChannelClosed, what: str) -> TopologyError:
    return TopologyError(f"broker refused to declare {what}: {exc}")


async def _declare_exchanges(channel: AbstractChannel, names: Names) -> None:
    for exchange in exchange_specs(names):
        try:
            await channel.declare_exchange(exchange.name, exchange.kind, durable=True)
        except (
            aiormq.exceptions.ChannelPreconditionFailed,
            aiormq.exceptions.ChannelAccessRefused,
        ) as exc:
            raise _topology_error(exc, f"{exchange.kind} exchange {exchange.name!r}") from exc


async def _declare_queue(
    channel: AbstractChannel, queue: QueueSpec, arguments: dict[str, Any]
) -> None:
    if queue.own_arguments is not None:
        arguments = {"x-queue-type": arguments["x-queue-type"], **dict(queue.own_arguments)}
    try:
        declared = await channel.declare_queue(queue.name, durable=True, arguments=arguments)
        for binding in queue.bindings:
            await declared.bind(queue.exchange, binding)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyError(
            f"queue {queue.name!r} exists with other arguments than {arguments} "
            f"({exc}); delete it or configure the same queue_type"
        ) from exc
    except (
        aiormq.exceptions.ChannelAccessRefused,
        aiormq.exceptions.ChannelNotFoundEntity,
    ) as exc:
        raise _topology_error(exc, f"queue {queue.name!r}") from exc


async def _open_channel(
    connection: AbstractConnection, *, confirms: bool
) -> tuple[AbstractChannel, aiormq.Channel]:
    channel = connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
    await channel.initialize()
    underlay = await channel.get_underlay_channel()
    if not isinstance(underlay, aiormq.Channel):  # pragma: no cover - aiormq's only kind
        raise TypeError(f"unexpected channel type {type(underlay)!r}")
    return channel, underlay


async def _close_quietly(closable: AbstractChannel | AbstractConnection | None) -> None:
    if closable is None or closable.is_closed:
        return
    with contextlib.suppress(Exception):
        await closable.close()


async def remove_topology(
    url: str, namespace: str, queues: Iterable[str], *, options: AmqpOptions | None = None
) -> None:
    """Delete the namespace's exchanges, its dead-letter queue and `queues` (full names).

    For throw-away namespaces (tests, `jukisync demo --broker`); never on a live one.
    """
    if not namespace:
        raise ValueError("refusing to remove the production (empty) namespace")
    names = Names(namespace)
    opts = options or AmqpOptions()
    connection = await aio_pika.connect(
        url,
        ssl_context=ssl_context(opts) if URL(url).scheme == "amqps" else None,
        client_properties={"connection_name": f"jukisync cleanup {namespace}"},
        timeout=opts.connect_timeout_s,
    )
    try:
        channel = connection.channel(publisher_confirms=False)
        await channel.initialize()
        for queue in {*queues, names.dead_queue}:
            await channel.queue_delete(queue)
        for exchange in [*(e.name for e in exchange_specs(names)), names.exchange(QUERY_EXCHANGE)]:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


# --- deliveries and subscriptions ----------------------------------------------------


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

    async def _settle(self, requeue: bool | None) -> None:
        # Settling twice would be a protocol error that closes the channel (and sends
        # back every delivery on it): settle once; later calls do nothing.
        if self._settled:
            return
        self._settled = True
        channel = self._channel
        if channel.is_closed:
            return  # requeued by the broker already; it comes again, redelivered
        try:
            with _closing_is_lost(channel):
                async with _while_open(channel, _SETTLE_TIMEOUT_S):
                    if requeue is None:
                        await channel.basic_ack(self._tag, wait=False)
                    else:
                        await channel.basic_nack(self._tag, requeue=requeue, wait=False)
        except _LOST:
            # The channel is gone, so the broker already requeued this delivery
            # (as after a crash): nothing left to do; it comes again, redelivered.
            log.debug("settling a delivery on a lost channel: it will be redelivered")


_CLOSED: Final = None  # wakes iterators when a subscription closes or fails
_SETTLE_TIMEOUT_S: Final = 30.0  # an ack the writer cannot take by then: channel wedged


class _AmqpSubscription(Subscription):
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
            with _closing_is_lost(connection):
                channel, underlay = await _open_channel(connection, confirms=False)
                await underlay.basic_qos(prefetch_count=self._prefetch)
                await _declare_exchanges(channel, self._owner.names)  # if deleted meanwhile
                await _declare_queue(channel, self._queue, self._owner.queue_arguments)
                cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def on_cancel(_: spec.Basic.Cancel) -> None:
                    if not cancelled.done():
                        cancelled.set_result(None)

                underlay.on_consumer_cancel_callbacks.add(on_cancel)
                await underlay.basic_consume(self._queue.name, self._on_message)
        except BaseException:
            await _close_quietly(channel)
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
            except _LOST as exc:
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
            await _close_quietly(channel)
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
        await _close_quietly(self._channel)
        self._channel = None
        self._buffer.put_nowait(_CLOSED)


# --- the transport ---------------------------------------------------------------------

_State = Literal["idle", "connecting", "up", "down", "closed"]
_STABLE_S: Final = 5.0  # a connection up this long resets the backoff


class AmqpTransport(Transport):
    """One node's connection to RabbitMQ (see the module docstring).

    `name` is shown to operators as the connection name (`rabbitmqctl list_connections
    client_properties`). The connection opens on first use, or with `connect()`.
    """

    def __init__(self, url: str, *, name: str, options: AmqpOptions | None = None) -> None:
        opts = options or AmqpOptions()
        parsed = URL(url)
        if parsed.scheme not in ("amqp", "amqps"):
            raise ValueError(f"broker URL must be amqp:// or amqps://, got {parsed.scheme!r}://")
        if parsed.scheme != "amqps" and (opts.ca_file or opts.cert_file):
            raise ValueError("ca_file/cert_file need an amqps:// broker URL")
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
        )
        self._ssl = ssl_context(opts) if parsed.scheme == "amqps" else None
        self._state: _State = "idle"
        self._changed = asyncio.Event()
        self._last_error: BaseException | None = None
        self._connection: AbstractConnection | None = None
        self._publisher: aiormq.Channel | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._subscriptions: set[_AmqpSubscription] = set()
        self._queues: dict[str, QueueSpec] = {}
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._random = random.Random()
        self.connections_opened = 0  # for operators and tests: reconnects = this - 1

    def __repr__(self) -> str:
        return f"<AmqpTransport {self.name!r} {self._state} {URL(self.url).with_password(None)}>"

    # --- connection state ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Up, with a usable publish channel (not merely not yet noticed to be down)."""
        publisher = self._publisher
        return self._state == "up" and publisher is not None and not publisher.is_closed

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _unavailable(self) -> str:
        error = self._last_error
        reason = f"{type(error).__name__}: {error}" if error is not None else "not connected"
        return f"broker {URL(self.url).with_password(None)} unavailable to {self.name!r} ({reason})"

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

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
                self._last_error = access_refused(exc, self.url) or exc
                self._set_state("down")
                delay = self.backoff(attempt)
                (log.warning if attempt % 10 == 0 else log.debug)(
                    "%s: cannot connect to %s (%s: %s); attempt %d, retrying in %.2fs",
                    self.name,
                    URL(self.url).with_password(None),
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
                await _close_quietly(connection)
            attempt = 0 if time.monotonic() - since >= _STABLE_S else attempt + 1
            delay = self.backoff(attempt)
            log.warning(
                "%s: connection to the broker lost (%s); reconnecting in %.2fs",
                self.name,
                self._last_error or "closed",
                delay,
            )
            await asyncio.sleep(delay)

    async def _open(self) -> AbstractConnection:
        with _closing_is_lost():
            return await self._open_connection()

    async def _open_connection(self) -> AbstractConnection:
        opts = self.options
        connection = await aio_pika.connect(
            self.url,
            ssl_context=self._ssl,
            client_properties={"connection_name": self.name},
            timeout=opts.connect_timeout_s,
        )
        try:
            await self._declare_topology(connection)
            _, self._publisher = await _open_channel(connection, confirms=True)
        except BaseException:
            await _close_quietly(connection)
            raise
        self._connection = connection
        self._last_error = None
        self.connections_opened += 1
        self._set_state("up")
        log.info("%s: connected to %s", self.name, URL(self.url).with_password(None))
        return connection

    async def _declare_topology(self, connection: AbstractConnection) -> None:
        """Exchanges (a conflict there fails the connection attempt: TopologyError), the
        dead-letter queue, and again every queue this transport declared before."""
        names = self.names
        channel, underlay = await _open_channel(connection, confirms=False)
        try:
            await _declare_exchanges(channel, names)
            # The operators' dead-letter queue is shared by every node of the namespace:
            # keep it as it is if it exists, whatever queue type its creator had.
            try:
                await underlay.queue_declare(names.dead_queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                await _close_quietly(channel)
                channel, underlay = await _open_channel(connection, confirms=False)
                arguments = queue_arguments(
                    self.options.queue_type, dead_letter_exchange=None, delivery_limit=None
                )
                await underlay.queue_declare(names.dead_queue, durable=True, arguments=arguments)
            await underlay.queue_bind(names.dead_queue, names.dead, routing_key="")
            for queue in list(self._queues.values()):
                try:
                    await _declare_queue(channel, queue, self.queue_arguments)
                except TopologyError as exc:
                    # It exists in some form; its consumer (if any) reports the conflict.
                    log.error("%s: %s", self.name, exc)
                    await _close_quietly(channel)
                    channel, underlay = await _open_channel(connection, confirms=False)
        finally:
            await _close_quietly(channel)

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
                    with _closing_is_lost(connection):
                        _, self._publisher = await _open_channel(connection, confirms=True)
                except _LOST as exc:
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
        await _close_quietly(connection)
        self._changed.set()

    def forget(self, subscription: _AmqpSubscription) -> None:
        self._subscriptions.discard(subscription)

    # --- topology --------------------------------------------------------------------
    async def _declare(self, queue: QueueSpec) -> None:
        connection = await self._ready()
        channel: AbstractChannel | None = None
        try:
            with _closing_is_lost(connection):
                channel, _ = await _open_channel(connection, confirms=False)
                await _declare_exchanges(channel, self.names)
                await _declare_queue(channel, queue, self.queue_arguments)
        except _LOST as exc:
            raise TransportUnavailable(f"declaring {queue.name!r}: {exc}") from exc
        finally:
            await _close_quietly(channel)
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
            with _closing_is_lost(connection):
                channel, underlay = await _open_channel(connection, confirms=False)
                result = await underlay.queue_declare(self.names.queue(queue), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        except _LOST as exc:
            raise TransportUnavailable(f"inspecting {queue!r}: {exc}") from exc
        finally:
            await _close_quietly(channel)
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
        timeout = self.options.confirm_timeout_s
        try:
            with _closing_is_lost(channel):
                async with _while_open(channel, timeout):
                    result = await channel.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=True,
                        timeout=timeout,
                        wait=False,
                    )
        except aiormq.exceptions.PublishError as exc:
            raise Unroutable(
                f"no queue bound for {routing_key!r} on {exchange!r}: the broker returned it"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise TransportUnavailable(f"broker refused the message (nack): {exc}") from exc
        except TimeoutError as exc:
            if channel.is_closed:
                raise TransportUnavailable("connection lost before the publisher confirm") from exc
            raise TransportUnavailable(f"no publisher confirm within {timeout}s") from exc
        except _LOST as exc:
            raise TransportUnavailable(f"connection lost before the confirm: {exc}") from exc
        if not isinstance(result, spec.Basic.Ack):
            raise TransportUnavailable(f"unexpected publisher confirm {result!r}")

    async def _publish_all(self, exchange: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish in order, all in flight at once; returns when every one is confirmed,
        raises `TransportUnavailable` (after all settled) if any was not."""
        for _, body in items:
            check_message_size(body, self.options.max_message_bytes)
        results = await asyncio.gather(
            *(self._publish(exchange, key, body) for key, body in items), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, TransportUnavailable):
                raise failure
        if failures:
            raise TransportUnavailable(
                f"{len(failures)} of {len(items)} publishes not confirmed: {failures[0]}"
            ) from failures[0]

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
    ) -> _AmqpSubscription:
        return self._subscribe(heads_queue_spec(self.names, queue, bindings), prefetch)

    # --- consuming -------------------------------------------------------------------
    def _subscribe(self, queue: QueueSpec, prefetch: int) -> _AmqpSubscription:
        self._start()
        self._queues[queue.name] = queue
        subscription = _AmqpSubscription(self, queue, prefetch)
        self._subscriptions.add(subscription)
        return subscription

    def consume_bundles(
        self, queue: str, prefectures: Sequence[str], *, prefetch: int = 256
    ) -> _AmqpSubscription:
        return self._subscribe(bundle_queue_spec(self.names, queue, prefectures), prefetch)

    def consume_forwards(self, queue: str, *, prefetch: int = 256) -> _AmqpSubscription:
        return self._subscribe(forward_queue_spec(self.names, queue), prefetch)

    def consume_control(self, origin: str, *, prefetch: int = 16) -> _AmqpSubscription:
        return self._subscribe(control_queue_spec(self.names, origin), prefetch)


def _future_error(future: asyncio.Future[Any]) -> BaseException | None:
    if not future.done() or future.cancelled():
        return None
    return future.exception()


class AmqpNetwork:
    """Transports on one broker and namespace, made by name like
    `InProcessNetwork.transport(name)`, so code that builds a whole network in one
    process (the demo, tests) can run it over RabbitMQ. `close()` closes them all;
    `remove()` also deletes a throw-away namespace's exchanges and queues."""

    def __init__(
        self, url: str, *, options: AmqpOptions | None = None, connection_prefix: str = "jukisync "
    ) -> None:
        self.url = url
        self.options = options or AmqpOptions()
        self.connection_prefix = connection_prefix
        self.transports: list[AmqpTransport] = []

    def transport(self, name: str) -> AmqpTransport:
        transport = AmqpTransport(
            self.url, name=f"{self.connection_prefix}{name}", options=self.options
        )
        self.transports.append(transport)
        return transport

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()

    async def remove(self) -> None:
        """Close, then delete the namespace's topology (refused for the empty one)."""
        queues = {q for t in self.transports for q in t.declared_queues}
        await self.close()
        if not any(t.connections_opened for t in self.transports):
            return  # never reached the broker: nothing was declared
        await remove_topology(
            self.url, self.options.namespace, sorted(queues), options=self.options
        )
