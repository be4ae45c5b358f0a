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
time. Given several addresses (the nodes of one cluster), it tries them in turn: a
lost or refused connection moves on to the next node, and the backoff grows by one
step per round over all of them, so a dead node costs one attempt, not a wait.
Quorum queues replicate every message to a majority of their replicas before the
broker confirms it, so a confirmed publish survives the loss of a minority of nodes
(`quorum_replicas` sets the replica count of new queues). Subscriptions survive
reconnection: each re-opens its channel and consumer on the new connection.
Deliveries of the lost channel are never acked on the new one (delivery tags are
per channel): their `ack` does nothing and the broker, which requeued them
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

Modules: `options` (`AmqpOptions`, TLS, login user, backoff), `topology` (names,
queue and message specs, declaration), `channels` (lost connections, refused logins),
`consumer` (deliveries, subscriptions), `publishing` (confirms and what a failed
publish means), `connection` (`AmqpTransport`: supervision, declarations, publish and
consume calls), `network` (`AmqpNetwork`).
Everything is importable from `jukisync.transport.amqp` (the public names of `options`
and `topology` as they list them).
"""

from __future__ import annotations

from jukisync.transport.amqp import options, topology
from jukisync.transport.amqp.channels import access_refused
from jukisync.transport.amqp.connection import AmqpTransport
from jukisync.transport.amqp.consumer import AmqpDelivery, AmqpSubscription
from jukisync.transport.amqp.network import AmqpNetwork
from jukisync.transport.amqp.options import *  # noqa: F403 - listed by options.__all__
from jukisync.transport.amqp.topology import *  # noqa: F403 - listed by topology.__all__
from jukisync.transport.base import MessageTooLarge

__all__ = [
    "AmqpDelivery",
    "AmqpNetwork",
    "AmqpSubscription",
    "AmqpTransport",
    "MessageTooLarge",
    "access_refused",
]
__all__ += options.__all__
__all__ += topology.__all__
