"""Exchanges, queues and messages of the RabbitMQ topology (DESIGN.md §5): the pure
naming and argument helpers (no I/O), then their declaration on a channel and the
removal of a throw-away namespace."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel
from pamqp import commands as spec
from yarl import URL

from jukisync.transport.amqp.options import AmqpOptions, QueueType, ssl_context
from jukisync.transport.base import (
    CONTROL_EXCHANGE,
    FORWARD_EXCHANGE,
    HEADS_EXCHANGE,
    QUERY_EXCHANGE,
    UPDATES_EXCHANGE,
    MessageTooLarge,
    TransportUnavailable,
    bundle_binding,
    control_key,
    forward_binding,
)

__all__ = [
    "CONTENT_TYPE",
    "DEAD_LETTER",
    "AccessRefused",
    "ExchangeSpec",
    "Names",
    "QueueSpec",
    "TopologyError",
    "Unroutable",
    "bundle_queue_name",
    "bundle_queue_spec",
    "check_message_size",
    "control_queue_name",
    "control_queue_spec",
    "declare_exchanges",
    "declare_queue",
    "exchange_specs",
    "forward_queue_spec",
    "heads_queue_name",
    "heads_queue_spec",
    "message_properties",
    "queue_arguments",
    "remove_topology",
]

DEAD_LETTER: Final = "jukisync.dead"  # the dead-letter exchange and the queue behind it
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
    queue_type: QueueType,
    *,
    dead_letter_exchange: str | None,
    delivery_limit: int | None,
    quorum_replicas: int | None = None,
) -> dict[str, Any]:
    """The `x-` arguments of a jukisync queue. They must not change for an existing
    queue: the broker refuses a re-declaration with other arguments."""
    args: dict[str, Any] = {"x-queue-type": queue_type}
    if dead_letter_exchange is not None:
        args["x-dead-letter-exchange"] = dead_letter_exchange
    if queue_type == "quorum" and delivery_limit is not None:
        args["x-delivery-limit"] = delivery_limit
    if queue_type == "quorum" and quorum_replicas is not None:
        args["x-quorum-initial-group-size"] = quorum_replicas
    return args


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


def _topology_error(exc: aiormq.exceptions.ChannelClosed, what: str) -> TopologyError:
    return TopologyError(f"broker refused to declare {what}: {exc}")


async def declare_exchanges(channel: AbstractChannel, names: Names) -> None:
    for exchange in exchange_specs(names):
        try:
            await channel.declare_exchange(exchange.name, exchange.kind, durable=True)
        except (
            aiormq.exceptions.ChannelPreconditionFailed,
            aiormq.exceptions.ChannelAccessRefused,
        ) as exc:
            raise _topology_error(exc, f"{exchange.kind} exchange {exchange.name!r}") from exc


async def declare_queue(
    channel: AbstractChannel, queue: QueueSpec, arguments: dict[str, Any]
) -> None:
    if queue.own_arguments is not None:
        kept = ("x-queue-type", "x-quorum-initial-group-size")
        arguments = {
            **{k: v for k, v in arguments.items() if k in kept},
            **dict(queue.own_arguments),
        }
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


async def remove_topology(
    url: str | Sequence[str],
    namespace: str,
    queues: Iterable[str],
    *,
    options: AmqpOptions | None = None,
) -> None:
    """Delete the namespace's exchanges, its dead-letter queue and `queues` (full names).

    For throw-away namespaces (tests, `jukisync demo --broker`); never on a live one.
    With several addresses (a cluster's nodes), the first that answers does it.
    """
    if not namespace:
        raise ValueError("refusing to remove the production (empty) namespace")
    names = Names(namespace)
    opts = options or AmqpOptions()
    urls = [url] if isinstance(url, str) else list(url)
    connection = None
    for i, address in enumerate(urls):
        try:
            connection = await aio_pika.connect(
                address,
                ssl_context=ssl_context(opts) if URL(address).scheme == "amqps" else None,
                client_properties={"connection_name": f"jukisync cleanup {namespace}"},
                timeout=opts.connect_timeout_s,
            )
            break
        except (OSError, aiormq.exceptions.AMQPConnectionError):
            if i == len(urls) - 1:
                raise
    assert connection is not None
    try:
        channel = connection.channel(publisher_confirms=False)
        await channel.initialize()
        for queue in {*queues, names.dead_queue}:
            await channel.queue_delete(queue)
        for exchange in [*(e.name for e in exchange_specs(names)), names.exchange(QUERY_EXCHANGE)]:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
