"""The transport interface every node is written against (DESIGN.md §1, §5).

Three flows, each with at-least-once delivery and the routing of DESIGN.md §5:
- bundles, publisher → aggregation centres: exchange `jukisync.updates`, routing key
  `upd.<pref>.<origin>`; each centre consumes its own queue bound to its prefectures,
  so two centres serving the same prefectures each get every bundle;
- forwards, centres → national: exchange `jukisync.forward`, key `fwd.<pref>.<origin>`;
- control, centres → one publisher: exchange `jukisync.control`, key `ctl.<origin>`
  (resend requests);
- heads, everyone → tiers: exchange `jukisync.heads` (topic), key `head.<pref>.<origin>`
  for signed head announcements (publishers, and centres relaying what they hold) and
  `repair.<pref>.<origin>` for requests that the centres serving that prefecture
  re-send a range from their change logs; each tier consumes its own queue, bound to
  `head.<pref>.*` of its prefectures (national: `head.*.*`) and, for a centre, to
  `repair.<pref>.*` (`heads_bindings`).

Contract for implementations:
- `publish_*` returns only once the broker has taken responsibility for the message
  (publisher confirm) and raises `TransportUnavailable` when it cannot, including
  when no queue is bound for it (mandatory: the caller keeps it and retries); publishes
  issued in order by one caller are routed in that order (as on one AMQP channel).
- A `Delivery` not acked when its subscription closes (or its node crashes) is
  delivered again, to the same queue; consumers must therefore be idempotent, which
  the stores are.
- A subscription hands out at most `prefetch` unacknowledged deliveries.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence

import msgspec

__all__ = [
    "CONTROL_EXCHANGE",
    "FORWARD_EXCHANGE",
    "HEADS_EXCHANGE",
    "QUERY_EXCHANGE",
    "REPLY_PREFIX",
    "UPDATES_EXCHANGE",
    "Delivery",
    "MessageTooLarge",
    "ResendRequest",
    "Subscription",
    "Transport",
    "TransportClosed",
    "TransportUnavailable",
    "ack_all",
    "bundle_binding",
    "bundle_key",
    "control_key",
    "decode_resend",
    "encode_resend",
    "forward_binding",
    "forward_key",
    "head_key",
    "heads_bindings",
    "repair_key",
]

UPDATES_EXCHANGE = "jukisync.updates"
FORWARD_EXCHANGE = "jukisync.forward"
CONTROL_EXCHANGE = "jukisync.control"
HEADS_EXCHANGE = "jukisync.heads"  # head announcements and repair requests
QUERY_EXCHANGE = "jukisync.query"  # request/reply for agencies (jukisync.rpc)
REPLY_PREFIX = "jukisync.replies."  # + "<agency's broker user>.<random>": its reply queues


class TransportUnavailable(Exception):
    """The broker cannot take the message now; the caller keeps it and retries."""


class MessageTooLarge(ValueError):
    """A message over the transport's size limit: refused before it reaches the broker
    (which would close the channel on it). Retrying cannot help."""


class TransportClosed(Exception):
    """The transport or subscription was closed by its owner."""


# --- routing keys (DESIGN.md §5) ---------------------------------------------------------


def bundle_key(origin: str) -> str:
    return f"upd.{origin[:2]}.{origin}"


def forward_key(origin: str) -> str:
    return f"fwd.{origin[:2]}.{origin}"


def control_key(origin: str) -> str:
    return f"ctl.{origin}"


def bundle_binding(prefecture: str) -> str:
    """The binding pattern of a centre's queue for one 2-digit prefecture."""
    return f"upd.{prefecture}.*"


def forward_binding() -> str:
    return "fwd.#"


def head_key(origin: str) -> str:
    return f"head.{origin[:2]}.{origin}"


def repair_key(origin: str) -> str:
    return f"repair.{origin[:2]}.{origin}"


def heads_bindings(prefectures: Sequence[str] | None) -> tuple[str, ...]:
    """A tier's heads queue bindings: a centre (its prefectures) hears the heads and
    the repair requests of those prefectures; national (None) every head."""
    if prefectures is None:
        return ("head.*.*",)
    prefs = sorted(set(prefectures))
    return (*(f"head.{p}.*" for p in prefs), *(f"repair.{p}.*" for p in prefs))


# --- control messages ----------------------------------------------------------------


class ResendRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Ask `origin` to publish again its bundles from the one holding `from_seq`.

    `requester` (a centre id) is informational: the broker-validated user id is what
    identifies a requester on RabbitMQ.
    """

    origin: str
    from_seq: int
    requester: str


_resend_decoder = msgspec.msgpack.Decoder(ResendRequest)
_encoder = msgspec.msgpack.Encoder()


def encode_resend(request: ResendRequest) -> bytes:
    return _encoder.encode(request)


def decode_resend(data: bytes) -> ResendRequest:
    return _resend_decoder.decode(data)


# --- deliveries and subscriptions ------------------------------------------------------


class Delivery(abc.ABC):
    """One received message. Ack only after its effect is committed."""

    body: bytes
    routing_key: str
    redelivered: bool

    @abc.abstractmethod
    async def ack(self) -> None: ...

    @abc.abstractmethod
    async def nack(self, requeue: bool = True) -> None:
        """Give the message back (requeue) or discard it (to the dead-letter exchange)."""

    @classmethod
    async def ack_batch(cls, deliveries: Sequence[Delivery]) -> None:
        """Ack deliveries of this type that came from one subscription, in the order
        received, with every earlier delivery of that subscription settled already or
        among them. One by one here; a transport that can ack them all at once (AMQP's
        `multiple`) overrides this."""
        for delivery in deliveries:
            await delivery.ack()


async def ack_all(deliveries: Sequence[Delivery]) -> None:
    """Ack a batch of one subscription's deliveries (see `Delivery.ack_batch`)."""
    if deliveries:
        await type(deliveries[0]).ack_batch(deliveries)


class Subscription(abc.ABC):
    """An open consumer on one queue: iterate for deliveries, close to stop.

    Closing returns every unacknowledged delivery to the queue.
    """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Transport(abc.ABC):
    """A node's connection to the message fabric."""

    # The largest message it takes, if it has a limit: publishing a larger one raises
    # `MessageTooLarge` (publishers check ahead, so nothing overtakes such a bundle).
    max_message_bytes: int | None = None

    # --- topology (idempotent, called by nodes at start) ----------------------------
    @abc.abstractmethod
    async def declare_bundle_queue(self, queue: str, prefectures: Sequence[str]) -> None:
        """A centre's durable queue, bound to `upd.<pref>.*` for each prefecture."""

    @abc.abstractmethod
    async def declare_forward_queue(self, queue: str) -> None:
        """The national queue, bound to every forward."""

    @abc.abstractmethod
    async def declare_control_queue(self, origin: str) -> None:
        """The publisher's queue of control messages (`ctl.<origin>`)."""

    # --- bundles: publisher → centres ------------------------------------------------
    @abc.abstractmethod
    async def publish_bundle(self, origin: str, envelope: bytes) -> None: ...

    @abc.abstractmethod
    def consume_bundles(
        self, queue: str, prefectures: Sequence[str], *, prefetch: int = 256
    ) -> Subscription: ...

    # --- forwards: centres → national ------------------------------------------------
    @abc.abstractmethod
    async def publish_forward(self, origin: str, envelope: bytes) -> None: ...

    @abc.abstractmethod
    def consume_forwards(self, queue: str, *, prefetch: int = 256) -> Subscription: ...

    # --- control: centres → publisher --------------------------------------------------
    @abc.abstractmethod
    async def request_resend(self, request: ResendRequest) -> None: ...

    @abc.abstractmethod
    def consume_control(self, origin: str, *, prefetch: int = 16) -> Subscription:
        """Deliveries whose body is an encoded `ResendRequest` (see `decode_resend`)."""

    # --- heads: announcements and repair requests -------------------------------------
    @abc.abstractmethod
    async def declare_heads_queue(self, queue: str, bindings: Sequence[str]) -> None:
        """A tier's queue on `jukisync.heads` (see `heads_bindings`)."""

    @abc.abstractmethod
    async def publish_heads(self, routing_key: str, message: bytes) -> None:
        """An encoded `HeadsMessage`; raises `TransportUnavailable` when no queue is
        bound for `routing_key` (nobody hears that prefecture)."""

    @abc.abstractmethod
    def consume_heads(
        self, queue: str, bindings: Sequence[str], *, prefetch: int = 64
    ) -> Subscription: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every subscription of this transport (unacked deliveries go back)."""
