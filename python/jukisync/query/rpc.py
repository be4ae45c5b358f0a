"""Queries over RabbitMQ (DESIGN.md §5–6): request/reply on the direct exchange
`jukisync.query`, routed by node id (`national`, a centre id), with `reply_to` and
`correlation_id`.

The requester is the message's `user_id` property, which RabbitMQ validates against
the connection's login (a message claiming another user closes the sender's channel),
so an agency is identified by its broker credentials, never by anything it writes in
the request. A request without `user_id` is answered with a refusal, and logged.

The server hands each request to `QueryService.handle` in a worker thread of its own
pool, one per request it may hold (`prefetch`): the Rust core answers with the GIL
released and returns once the audit entry is durable, and the entries of the requests
in flight share one durable commit (group commit, `audit_commit.rs`), so the pool must
let them wait together. The reply is published after that commit and the request
acked after the reply is confirmed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from jukisync.query.service import (
    Denied,
    QueryService,
    Request,
    Response,
    decode_response,
    encode,
)
from jukisync.transport.amqp import AmqpTransport, url_user
from jukisync.transport.amqp.channels import LOST, close_quietly, closing_is_lost
from jukisync.transport.base import QUERY_EXCHANGE, REPLY_PREFIX, TransportClosed

__all__ = [
    "QUERY_EXCHANGE",
    "QueryClient",
    "QueryServer",
    "RpcError",
    "query_queue_name",
    "reply_queue_name",
]

log = logging.getLogger("jukisync.rpc")

UNIDENTIFIED = "(unidentified)"


def query_queue_name(node: str) -> str:
    return f"jukisync.query.{node}"


def reply_queue_name(user: str) -> str:
    """An agency's reply queue: named after its broker user, so that the broker
    permissions can give each agency its own (jukisync.transport.brokerusers)."""
    return f"{REPLY_PREFIX}{user}.{uuid.uuid4().hex}"


class RpcError(Exception):
    """The request could not be delivered or answered (not a refusal: those are answers)."""


class QueryServer:
    """Serves `service` to requests routed to `node` until closed, on the connection of
    the node's transport (so its TLS, credentials and namespace), consuming again on
    every new connection after a loss."""

    def __init__(
        self,
        transport: AmqpTransport,
        service: QueryService,
        *,
        node: str,
        prefetch: int = 32,
    ) -> None:
        self.transport = transport
        self.service = service
        self.node = node
        self.namespace = transport.names.namespace
        self.prefetch = prefetch
        self.served = 0
        # Replies carry the node's broker-validated login, so an agency can tell them
        # from a forgery by anyone else allowed to publish to it (QueryClient.node_users).
        self.user_id = transport.user_id
        self.subscribed = 0  # consumers registered so far: 2 after one resubscription
        self._channel: AbstractChannel | None = None
        self._follower: asyncio.Task[None] | None = None
        self._closed = False
        # Not asyncio's default pool (cores + 4 threads): every prefetched request needs
        # a thread to wait in for the shared commit, or the groups stay small.
        self._workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=prefetch, thread_name_prefix=f"query-{node}"
        )

    @property
    def consuming(self) -> bool:
        """Its consumer is registered on a live channel (for health)."""
        channel = self._channel
        return not self._closed and channel is not None and not channel.is_closed

    async def start(self) -> None:
        """Consume requests once the transport is connected; errors of this first
        subscription are raised, later losses are followed."""
        connection = await self.transport.wait_connection()
        closing = await self._subscribe(connection)
        self._follower = asyncio.create_task(
            self._follow(closing), name=f"query server {self.node}"
        )

    async def _subscribe(self, connection: AbstractConnection) -> asyncio.Future[Any]:
        """A channel with its consumer; returns a future done when the channel closes."""
        channel = connection.channel(publisher_confirms=True)
        await channel.initialize()
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            exchange = await channel.declare_exchange(
                self.namespace + QUERY_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
            )
            # Queries are answered now or not at all: a classic, non-durable queue that
            # goes with its server, so while no node serves, a request fails at once
            # ("no query service") instead of waiting for the agency's timeout.
            queue = await channel.declare_queue(
                self.namespace + query_queue_name(self.node), durable=False, auto_delete=True
            )
            await queue.bind(exchange, routing_key=self.node)
            await queue.consume(self._on_request)
        except BaseException:
            await close_quietly(channel)
            raise
        self._channel = channel
        self.subscribed += 1
        underlay = await channel.get_underlay_channel()
        return underlay.closing

    async def _follow(self, closing: asyncio.Future[Any]) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.wait([closing])
            finally:
                closing.cancel()  # only this observer
            self._channel = None
            log.warning("query server %s: channel lost; consuming again", self.node)
            while True:
                try:
                    connection = await self.transport.wait_connection()
                except TransportClosed:
                    return  # the node is shutting down
                try:
                    with closing_is_lost(connection):
                        closing = await self._subscribe(connection)
                except (*LOST, aiormq.exceptions.AMQPError) as exc:
                    # Also a connection the transport has not yet noticed is gone.
                    delay = self.transport.backoff(attempt)
                    attempt += 1
                    log.warning(
                        "query server %s: cannot consume (%s); retrying in %.2fs",
                        self.node,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                break

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        if not message.reply_to:
            log.warning("query without reply_to from %s dropped", message.user_id)
            await message.reject(requeue=False)
            return
        requester = message.user_id or UNIDENTIFIED
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._workers, self.service.handle, requester, message.body
            )
        except Exception as exc:
            # `handle` answers every request, however malformed, and logs it; this is
            # the store failing. Still answer (and ack), so that one request cannot
            # hold a prefetch slot for ever and starve the agencies.
            log.exception("query from %s could not be answered", requester)
            answer = encode(
                Denied(query="invalid", reason=f"internal_error: {type(exc).__name__}", audit_id=0)
            )
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            aio_pika.Message(answer, correlation_id=message.correlation_id, user_id=self.user_id),
            routing_key=message.reply_to,
        )
        await message.ack()
        self.served += 1

    async def close(self) -> None:
        """Stop answering (its queue goes with the channel); the connection is the
        node's and stays."""
        self._closed = True
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
        channel, self._channel = self._channel, None
        await close_quietly(channel)
        # Requests being answered finish (their entries commit) without holding the loop.
        await asyncio.to_thread(self._workers.shutdown, wait=True)


class QueryClient:
    """An agency's side: `await client.ask(request, node="national")`.

    A reply is accepted only when its broker-validated `user_id` is the node's broker
    user: `node_users` maps node ids to them, and a node missing there is expected to
    log in under its own id (as `jukisync broker setup` creates it). Any other reply
    (another node, an agency allowed to publish where it should not) is dropped and
    counted in `forged_replies`; the genuine answer is still awaited."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        timeout_s: float = 30.0,
        node_users: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.node_users = dict(node_users or {})
        self.user_id = url_user(url)
        self.forged_replies = 0
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._replies: AbstractQueue | None = None
        self._waiting: dict[str, tuple[str, asyncio.Future[bytes]]] = {}

    async def __aenter__(self) -> QueryClient:
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": f"jukisync-agency-{self.user_id}"}
        )
        # on_return_raises: a request no node's queue is bound for fails at once.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        # Not declared: declaring needs the "configure" permission on the exchange,
        # which an agency does not have (it could delete it); the node declares it.
        self._exchange = await self._channel.get_exchange(
            self.namespace + QUERY_EXCHANGE, ensure=False
        )
        self._replies = await self._channel.declare_queue(
            self.namespace + reply_queue_name(self.user_id or "agency"),
            exclusive=True,
            auto_delete=True,
        )
        await self._replies.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def expected_user(self, node: str) -> str:
        """The broker user whose replies are accepted from `node`."""
        return self.node_users.get(node, node)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(message.correlation_id or "")
        if waiting is None:
            return
        expected, future = waiting
        if message.user_id != expected:
            self.forged_replies += 1
            log.warning(
                "reply from broker user %r dropped: answers come from %r",
                message.user_id,
                expected,
            )
            return
        del self._waiting[message.correlation_id or ""]
        if not future.done():
            future.set_result(message.body)

    async def ask(
        self, request: Request, *, node: str = "national", user_id: str | None = None
    ) -> Response:
        """Send one request and wait for its answer. `user_id` defaults to the login;
        another value is refused by the broker (the channel closes) and raises."""
        if self._exchange is None or self._replies is None:
            raise RpcError("use `async with QueryClient(...)`")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = (self.expected_user(node), future)
        message = aio_pika.Message(
            encode(request),
            correlation_id=correlation_id,
            reply_to=self._replies.name,
            user_id=user_id if user_id is not None else self.user_id,
        )
        try:
            await self._exchange.publish(message, routing_key=node, mandatory=True)
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
            # of the caller that arrives as the answer does.
            async with asyncio.timeout(self.timeout_s):
                body = await future
        except aio_pika.exceptions.DeliveryError as exc:
            raise RpcError(f"no query service for node {node!r}: {exc}") from exc
        except aio_pika.exceptions.ChannelClosed as exc:
            raise RpcError(f"the broker refused the request: {exc}") from exc
        except TimeoutError as exc:
            raise RpcError(f"no answer from {node!r} within {self.timeout_s} s") from exc
        finally:
            self._waiting.pop(correlation_id, None)
        return decode_response(body)
