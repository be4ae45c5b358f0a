"""The RabbitMQ transport against a real broker: confirms, acks, redelivery, fan-out,
the three flows, prefetch, size limits, dead-lettering, reconnection without loss.

Pure protocol helpers are tested without a broker; the rest is marked `broker` and
runs inside a per-test namespace (see `conftest.amqp`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import aio_pika
import msgspec
import pytest
import uvloop
from yarl import URL

from conftest import AmqpKit
from externaltools import rabbitmqctl, require_rabbitmqctl, require_tool
from jukisync.sim.demo import DemoOptions, run_demo
from jukisync.transport.amqp import (
    CONTENT_TYPE,
    AccessRefused,
    AmqpDelivery,
    AmqpOptions,
    AmqpTransport,
    MessageTooLarge,
    Names,
    TopologyError,
    Unroutable,
    backoff_delay,
    bundle_queue_name,
    bundle_queue_spec,
    check_message_size,
    control_queue_spec,
    queue_arguments,
    remove_topology,
    split_urls,
    url_user,
)
from jukisync.transport.base import (
    Delivery,
    ResendRequest,
    Subscription,
    TransportClosed,
    TransportUnavailable,
    ack_all,
    decode_resend,
)

broker = pytest.mark.broker

YAMAGUCHI_CITY = "352039"
HAGI = "352047"
CHIYODA = "131016"
HIROSHIMA = "341002"

WAIT_S = 20.0  # generous bound for anything the broker should do promptly


async def take(subscription: Subscription, n: int, timeout: float = WAIT_S) -> list[AmqpDelivery]:
    got: list[AmqpDelivery] = []
    iterator = subscription.__aiter__()
    async with asyncio.timeout(timeout):
        while len(got) < n:
            delivery = await iterator.__anext__()
            assert isinstance(delivery, AmqpDelivery)
            got.append(delivery)
    return got


MARKER = b"marker: sent after everything else"


async def next_is_marker(subscription: Subscription) -> bool:
    """True if the next delivery is the marker the caller published after everything
    else: whatever should not have come would have come before it (queues are FIFO).
    An absence proved by order, not by waiting."""
    [delivery] = await take(subscription, 1)
    await delivery.ack()
    return delivery.body == MARKER


def bodies(deliveries: Sequence[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


async def raw_channel(kit: AmqpKit) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.Channel]:
    connection = await aio_pika.connect(
        kit.url, client_properties={"connection_name": kit.connection_name("raw")}
    )
    channel = connection.channel(publisher_confirms=True)
    await channel.initialize()
    assert isinstance(channel, aio_pika.Channel)
    return connection, channel


# --- cutting connections -------------------------------------------------------------


async def cut_by_broker(transport: AmqpTransport) -> None:
    """The broker closes the connection (as on a broker restart or an operator's
    `rabbitmqctl close_connection`), found by its connection name."""

    def run() -> int:
        listing = rabbitmqctl("list_connections", "pid", "client_properties")
        pids = [
            line.split("\t", 1)[0]
            for line in listing.splitlines()
            if f'{{"connection_name","{transport.name}"}}' in line
        ]
        for pid in pids:
            rabbitmqctl("close_connection", pid, "jukisync test: connection cut")
        return len(pids)

    assert await asyncio.to_thread(run) == 1, f"no single connection named {transport.name!r}"


async def cut_by_client(transport: AmqpTransport) -> None:
    """The client side fails the underlying aiormq connection (as on a socket error)."""
    connection = transport._connection  # test-only peek at the live connection
    assert connection is not None and connection.transport is not None
    await connection.transport.connection.close(ConnectionResetError("jukisync test: cut"))


Cutter = Callable[[AmqpTransport], Awaitable[None]]


@pytest.fixture(params=["broker-closes", "client-fails"])
def cut(request: pytest.FixtureRequest) -> Cutter:
    if request.param == "broker-closes":
        require_rabbitmqctl()
        return cut_by_broker
    return cut_by_client


# --- pure helpers (no broker) --------------------------------------------------------


def test_bundle_queue_name_names_centre_and_prefecture_set() -> None:
    name = bundle_queue_name("centre-a", ["35", "13", "35", "34"])
    assert name == "jukisync.bundles.centre-a.13-34-35"
    assert bundle_queue_name("centre-b", ["13", "34", "35"]) != name
    assert bundle_queue_name("centre-a", ["35"]) != name
    with pytest.raises(ValueError, match="2-digit"):
        bundle_queue_name("centre-a", ["3"])
    with pytest.raises(ValueError, match=r"01\.\.47"):
        bundle_queue_name("centre-a", ["48"])
    with pytest.raises(ValueError, match="at least one"):
        bundle_queue_name("centre-a", [])


def test_namespace_prefixes_every_name() -> None:
    names = Names("t1.")
    spec = bundle_queue_spec(names, "q", ["35", "13"])
    assert spec.name == "t1.q"
    assert spec.exchange == "t1.jukisync.updates"
    assert spec.bindings == ("upd.13.*", "upd.35.*")
    ctl = control_queue_spec(names, YAMAGUCHI_CITY)
    assert (ctl.name, ctl.exchange, ctl.bindings) == (
        "t1.jukisync.control.352039",
        "t1.jukisync.control",
        ("ctl.352039",),
    )
    assert (names.dead, names.dead_queue) == ("t1.jukisync.dead", "t1.jukisync.dead")


def test_queue_arguments() -> None:
    assert queue_arguments("quorum", dead_letter_exchange="d", delivery_limit=5) == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "d",
        "x-delivery-limit": 5,
    }
    # Classic queues have no delivery limit; the dead-letter queue itself has no DLX.
    assert queue_arguments("classic", dead_letter_exchange=None, delivery_limit=5) == {
        "x-queue-type": "classic"
    }


def test_quorum_replicas_argument_and_url_lists() -> None:
    args = queue_arguments(
        "quorum", dead_letter_exchange=None, delivery_limit=None, quorum_replicas=3
    )
    assert args == {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}
    assert queue_arguments(
        "classic", dead_letter_exchange=None, delivery_limit=None, quorum_replicas=3
    ) == {"x-queue-type": "classic"}
    assert split_urls(" amqp://a@h1/ ,amqp://a@h2/,") == ("amqp://a@h1/", "amqp://a@h2/")
    with pytest.raises(ValueError):
        split_urls(" , ")
    with pytest.raises(ValueError, match="mix"):
        AmqpTransport(["amqp://h1/", "amqps://h2/"], name="t")
    with pytest.raises(ValueError, match="different users"):
        AmqpTransport(["amqp://a:x@h1/", "amqp://b:x@h2/"], name="t")


async def test_fails_over_past_a_dead_address(amqp: AmqpKit) -> None:
    """The first address refuses connections (a lost cluster node): the transport
    moves on to the next one at once and works there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"
    transport = AmqpTransport(
        [dead, amqp.url], name=amqp.connection_name("failover"), options=amqp.options()
    )
    amqp.transports.append(transport)
    await transport.connect(timeout=30)
    assert transport.current_url == amqp.url
    assert transport.connections_opened == 1


def test_backoff_is_exponential_capped_and_jittered() -> None:
    delays = [backoff_delay(n, base=0.1, cap=5.0, jitter=0.0) for n in range(10)]
    assert delays[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert max(delays) == pytest.approx(2.5)
    assert backoff_delay(3, base=0.1, cap=5.0, jitter=0.999) == pytest.approx(0.8, rel=1e-2)
    assert backoff_delay(10_000, base=0.1, cap=5.0, jitter=0.5) <= 5.0


def test_size_check_and_options_validation() -> None:
    check_message_size(b"x" * 10, 10)
    with pytest.raises(MessageTooLarge, match="11 bytes exceeds the transport limit of 10"):
        check_message_size(b"x" * 11, 10)
    with pytest.raises(ValueError, match="queue_type"):
        AmqpOptions(queue_type="lazy")  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="prefetch"):
        msgspec.convert({"queue_type": "classic", "prefetch": 5}, AmqpOptions)
    with pytest.raises(msgspec.ValidationError, match="reconnect_max_s"):
        msgspec.convert({"reconnect_min_s": 2.0, "reconnect_max_s": 1.0}, AmqpOptions)
    assert msgspec.convert({"queue_type": "classic"}, AmqpOptions).queue_type == "classic"


def test_urls_and_tls_options_are_checked() -> None:
    with pytest.raises(ValueError, match="amqp:// or amqps://"):
        AmqpTransport("http://localhost/", name="x")
    with pytest.raises(ValueError, match="amqps://"):
        AmqpTransport("amqp://localhost/", name="x", options=AmqpOptions(ca_file="/ca.pem"))
    t = AmqpTransport("amqps://alice:secret@broker.example:5671/juki", name="x")
    assert t.user_id == "alice"  # what RabbitMQ validates against the login
    assert "secret" not in repr(t)
    assert AmqpTransport("amqp://localhost/", name="x").user_id == "guest"  # as aiormq logs in
    # Certificate login (`auth=external`): the user is the certificate's; say which.
    assert url_user("amqps://broker.example/?auth=external") is None
    t2 = AmqpTransport(
        "amqps://broker.example/?auth=external", name="x", options=AmqpOptions(user_id="centre-a")
    )
    assert t2.user_id == "centre-a"


# --- broker unreachable --------------------------------------------------------------


def _refused_urls(broker_url: str) -> list[tuple[str, str]]:
    """Broker URLs the broker refuses (wrong password, unknown user, unknown vhost),
    with the password a message must never show."""
    base = URL(broker_url)
    secret = "S3cret-never-shown"
    return [
        (str(base.with_password(secret)), secret),
        (str(base.with_user("no-such-user-jukisync").with_password(secret)), secret),
        # (the right password: shown only as part of a URL, never in one)
        (str(base.with_path("/no-such-vhost-jukisync")), f":{base.password or 'guest'}@"),
    ]


@pytest.mark.broker
@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("timeout", [None, 600.0])
async def test_refused_credentials_or_vhost_fail_at_once_without_the_password(
    broker_url: str, case: int, timeout: float | None
) -> None:
    """Not "unavailable" after the connect timeout, nor retried for ever under --wait
    (timeout None): AccessRefused (a TopologyError: the operator must fix the config)."""
    url, secret = _refused_urls(broker_url)[case]
    transport = AmqpTransport(
        url, name="pytest refused", options=AmqpOptions(connect_timeout_s=600)
    )
    try:
        with pytest.raises(AccessRefused) as refused:
            await asyncio.wait_for(transport.connect(timeout=timeout), 120)
    finally:
        await transport.close()
    message = str(refused.value)
    assert "\n" not in message and secret not in message
    assert ("vhost" in message) == (case == 2), message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_broker_surfaces_as_unavailable() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    transport = AmqpTransport(
        url, name="pytest unreachable", options=AmqpOptions(connect_timeout_s=2.0)
    )
    try:
        with pytest.raises(TransportUnavailable, match="unavailable"):
            await transport.publish_bundle(YAMAGUCHI_CITY, b"bundle")
        # Once an attempt has failed, callers are told at once (no waiting out backoff).
        with pytest.raises(TransportUnavailable):
            await transport.declare_bundle_queue("q", ["35"])
        with pytest.raises(TransportUnavailable):
            await transport.publish_forward(YAMAGUCHI_CITY, b"forward")
        with pytest.raises(TransportUnavailable):
            await transport.connect(timeout=0.2)
        assert not transport.connected
        assert transport.last_error is not None
    finally:
        await transport.close()
    with pytest.raises(TransportClosed):
        await transport.publish_bundle(YAMAGUCHI_CITY, b"bundle")


async def test_a_cancelled_connect_ends_even_as_the_state_changes() -> None:
    """A caller's cancellation of `connect(timeout=...)` arriving with a state change
    (as a daemon's stop meets a reconnect) ends it: on 3.11, `wait_for` returned the
    event's result and dropped the cancellation, and `connect` went on waiting (checked:
    this test fails with `wait_for` back in `connect`)."""
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    transport = AmqpTransport(
        url,
        name="pytest cancelled connect",
        # After the first refusal the supervisor stays quiet: only the test moves state.
        options=AmqpOptions(reconnect_min_s=600.0, reconnect_max_s=600.0),
    )
    try:
        task = asyncio.create_task(transport.connect(timeout=600.0))

        async def parked() -> None:  # refused once, and waiting for the next change
            while transport.last_error is None or not transport._changed._waiters:
                await asyncio.sleep(0.01)

        async with asyncio.timeout(WAIT_S):
            await parked()
        transport._set_state("connecting")  # the event fires ...
        task.cancel()  # ... in the same step as the cancellation
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT_S):
                await task
        assert task.cancelled()
    finally:
        await transport.close()


# --- publish, consume, ack -----------------------------------------------------------


@broker
async def test_publish_confirm_consume_ack(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    publisher = amqp.transport("publisher")
    queue = bundle_queue_name("centre-a", ["35"])
    await centre.declare_bundle_queue(queue, ["35"])
    sent = [f"bundle {i}".encode() for i in range(20)]
    await asyncio.gather(*(publisher.publish_bundle(YAMAGUCHI_CITY, b) for b in sent))
    assert await centre.queue_depth(queue) == 20  # confirmed = in the queue

    subscription = centre.consume_bundles(queue, ["35"], prefetch=32)
    got = await take(subscription, 20)
    assert bodies(got) == sent  # one channel: in publish order
    for d in got:
        assert d.routing_key == f"upd.35.{YAMAGUCHI_CITY}"
        assert d.redelivered is False
        assert d.user_id == "guest"  # broker-validated sender
        await d.ack()
    await subscription.close()

    assert await centre.queue_depth(queue) == 0
    await publisher.publish_bundle(YAMAGUCHI_CITY, MARKER)
    again = centre.consume_bundles(queue, ["35"])
    assert await next_is_marker(again)
    await again.close()


@broker
async def test_messages_are_persistent_and_identified(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    await amqp.transport("publisher").publish_bundle(YAMAGUCHI_CITY, b"bundle")
    connection, channel = await raw_channel(amqp)
    try:
        queue = await channel.declare_queue(f"{amqp.namespace}q", passive=True)
        message = await queue.get(no_ack=True)
    finally:
        await connection.close()
    assert message.body == b"bundle"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == CONTENT_TYPE
    assert message.user_id == "guest"
    assert message.message_id


@broker
async def test_publish_bundles_confirms_many_in_order(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    sent = [i.to_bytes(4, "big") for i in range(500)]
    await amqp.transport("publisher").publish_bundles(YAMAGUCHI_CITY, sent)
    subscription = centre.consume_bundles("q", ["35"], prefetch=500)
    assert bodies(await take(subscription, 500)) == sent


@broker
async def test_unacked_deliveries_come_back_redelivered(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    sent = [f"b{i}".encode() for i in range(5)]
    publisher = amqp.transport("publisher")
    await publisher.publish_bundles(YAMAGUCHI_CITY, sent)

    first = centre.consume_bundles("q", ["35"])
    got = await take(first, 5)
    await got[0].ack()
    await got[2].ack()
    await first.close()  # like a crash: whatever was not acked goes back
    await got[1].ack()  # too late: settling after close does nothing (no error)

    second = centre.consume_bundles("q", ["35"])
    back = await take(second, 3)
    assert bodies(back) == [b"b1", b"b3", b"b4"]
    assert all(d.redelivered for d in back)
    for d in back:
        await d.ack()
    await publisher.publish_bundle(YAMAGUCHI_CITY, MARKER)
    assert await next_is_marker(second)


@broker
async def test_a_batch_is_acked_with_one_multiple_ack(
    amqp: AmqpKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node acks its batch at once: one `basic.ack multiple` on the batch's last
    delivery settles all of it, and only it (the deliveries after stay unacked)."""
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    sent = [f"b{i}".encode() for i in range(12)]
    publisher = amqp.transport("publisher")
    await publisher.publish_bundles(YAMAGUCHI_CITY, sent)
    first = centre.consume_bundles("q", ["35"], prefetch=32)
    got = await take(first, 12)
    acks: list[tuple[int, bool]] = []
    channel = type(got[0]._channel)
    real_ack = channel.basic_ack

    async def spy(
        self: object, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> None:
        acks.append((delivery_tag, multiple))
        await real_ack(self, delivery_tag, multiple=multiple, wait=wait)  # type: ignore[arg-type]

    monkeypatch.setattr(channel, "basic_ack", spy)
    await got[0].ack()  # settled before: the batch is what follows it
    await ack_all(got[1:8])
    assert acks == [(got[0]._tag, False), (got[7]._tag, True)]
    await ack_all(got[1:8])  # settled already: nothing is sent twice
    assert len(acks) == 2
    await first.close()  # b8..b11 were not acked: they come back, and only they

    second = centre.consume_bundles("q", ["35"])
    back = await take(second, 4)
    assert bodies(back) == sent[8:] and all(d.redelivered for d in back)
    await ack_all(back)
    await publisher.publish_bundle(YAMAGUCHI_CITY, MARKER)
    assert await next_is_marker(second)


@broker
async def test_two_centres_on_the_same_prefectures_each_get_every_bundle(amqp: AmqpKit) -> None:
    a, b = amqp.transport("centre-a"), amqp.transport("centre-b")
    prefectures = ["35", "13"]
    qa, qb = bundle_queue_name("centre-a", prefectures), bundle_queue_name("centre-b", prefectures)
    await a.declare_bundle_queue(qa, prefectures)
    await b.declare_bundle_queue(qb, prefectures)
    publisher = amqp.transport("publisher")
    await publisher.publish_bundle(YAMAGUCHI_CITY, b"yamaguchi")
    await publisher.publish_bundle(CHIYODA, b"chiyoda")
    await publisher.publish_bundle(HAGI, b"hagi")
    for transport, queue in ((a, qa), (b, qb)):
        subscription = transport.consume_bundles(queue, prefectures)
        got = await take(subscription, 3)
        assert sorted(bodies(got)) == [b"chiyoda", b"hagi", b"yamaguchi"]
        for d in got:
            await d.ack()
        await publisher.publish_bundle(YAMAGUCHI_CITY, MARKER)
        assert await next_is_marker(subscription)


@broker
async def test_a_bundle_nobody_serves_is_kept_by_the_caller(amqp: AmqpKit) -> None:
    await amqp.transport("centre").declare_bundle_queue("q", ["35"])
    with pytest.raises(Unroutable, match=r"upd\.34\.341002"):
        await amqp.transport("publisher").publish_bundle(HIROSHIMA, b"nobody serves 34")
    # Unroutable is a TransportUnavailable: the publisher keeps it in its outbox.
    assert issubclass(Unroutable, TransportUnavailable)


@broker
async def test_forward_flow_reaches_national(amqp: AmqpKit) -> None:
    national = amqp.transport("national")
    await national.declare_forward_queue("national.forwards")
    centre = amqp.transport("centre")
    items = [(YAMAGUCHI_CITY, b"f1"), (CHIYODA, b"f2"), (YAMAGUCHI_CITY, b"f3")]
    await centre.publish_forwards(items)
    await centre.publish_forward(HIROSHIMA, b"f4")
    subscription = national.consume_forwards("national.forwards")
    got = await take(subscription, 4)
    assert [(d.routing_key, d.body) for d in got] == [
        ("fwd.35.352039", b"f1"),
        ("fwd.13.131016", b"f2"),
        ("fwd.35.352039", b"f3"),
        ("fwd.34.341002", b"f4"),
    ]


@broker
async def test_control_flow_reaches_only_its_origin(amqp: AmqpKit) -> None:
    yamaguchi, hagi = amqp.transport("publisher-352039"), amqp.transport("publisher-352047")
    await yamaguchi.declare_control_queue(YAMAGUCHI_CITY)
    await hagi.declare_control_queue(HAGI)
    centre = amqp.transport("centre")
    request = ResendRequest(YAMAGUCHI_CITY, 42, "centre-a")
    await centre.request_resend(request)
    with pytest.raises(Unroutable):  # no publisher of 131016 listens: the centre learns it
        await centre.request_resend(ResendRequest(CHIYODA, 1, "centre-a"))

    [delivery] = await take(yamaguchi.consume_control(YAMAGUCHI_CITY), 1)
    assert decode_resend(delivery.body) == request
    assert delivery.routing_key == "ctl.352039"
    assert delivery.user_id == "guest"
    await delivery.ack()
    marker = ResendRequest(HAGI, 1, "marker")
    await centre.request_resend(marker)
    [first] = await take(hagi.consume_control(HAGI), 1)
    assert decode_resend(first.body) == marker  # nothing of Yamaguchi's came before it


@broker
async def test_prefetch_bounds_unacked_deliveries(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    sent = [f"b{i}".encode() for i in range(10)]
    await amqp.transport("publisher").publish_bundles(YAMAGUCHI_CITY, sent)
    subscription = centre.consume_bundles("q", ["35"], prefetch=3)
    got = await take(subscription, 3)
    assert await centre.queue_depth("q") == 7  # the broker holds back the rest
    await got[0].ack()
    [fourth] = await take(subscription, 1)
    assert fourth.body == b"b3"
    assert await centre.queue_depth("q") == 6


@broker
async def test_oversized_message_is_refused_at_publish(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    publisher = amqp.transport("publisher", max_message_bytes=1024)
    with pytest.raises(MessageTooLarge, match="1,025 bytes exceeds"):
        await publisher.publish_bundle(YAMAGUCHI_CITY, b"x" * 1025)
    with pytest.raises(MessageTooLarge):  # one too large refuses the batch, none is sent
        await publisher.publish_bundles(YAMAGUCHI_CITY, [b"ok", b"x" * 2000])
    assert await centre.queue_depth("q") == 0
    await publisher.publish_bundle(YAMAGUCHI_CITY, b"x" * 1024)
    assert await centre.queue_depth("q") == 1


@broker
async def test_garbage_published_to_the_exchange_is_delivered_as_is(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    garbage = b"\xc1\x00not msgpack\xff"
    connection, channel = await raw_channel(amqp)
    try:
        exchange = await channel.get_exchange(f"{amqp.namespace}jukisync.updates")
        await exchange.publish(aio_pika.Message(garbage), routing_key=f"upd.35.{YAMAGUCHI_CITY}")
    finally:
        await connection.close()
    [delivery] = await take(centre.consume_bundles("q", ["35"]), 1)
    assert delivery.body == garbage  # the node's job to quarantine it
    assert delivery.user_id is None  # and nobody vouched for it
    await delivery.ack()


@broker
async def test_nack_requeues_or_dead_letters_for_operators(amqp: AmqpKit) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    await amqp.transport("publisher").publish_bundles(YAMAGUCHI_CITY, [b"poison", b"retry"])
    subscription = centre.consume_bundles("q", ["35"])
    poison, retry = await take(subscription, 2)
    await poison.nack(requeue=False)
    await retry.nack(requeue=True)
    [back] = await take(subscription, 1)
    assert (back.body, back.redelivered) == (b"retry", True)
    await back.ack()

    connection, channel = await raw_channel(amqp)
    try:
        dead = await channel.declare_queue(f"{amqp.namespace}jukisync.dead", passive=True)
        async with asyncio.timeout(WAIT_S), dead.iterator(no_ack=True) as messages:
            message = await anext(messages)
    finally:
        await connection.close()
    assert message.body == b"poison"
    deaths = message.headers["x-death"]
    assert isinstance(deaths, list) and isinstance(deaths[0], dict)
    death = deaths[0]
    assert death["reason"] == "rejected"
    assert death["queue"] == f"{amqp.namespace}q"


@broker
async def test_quorum_by_default_classic_selectable(amqp: AmqpKit) -> None:
    quorum = amqp.transport("quorum")
    await quorum.declare_bundle_queue("q", ["35"])
    classic = amqp.transport("classic", queue_type="classic")
    # The broker refuses to turn a quorum queue classic: clear error, no retrying.
    with pytest.raises(TopologyError, match="exists with other arguments"):
        await classic.declare_bundle_queue("q", ["35"])
    # A consumer told to use it the other way gets the same error from its iterator.
    with pytest.raises(TopologyError, match="exists with other arguments"):
        await take(classic.consume_bundles("q", ["35"]), 1)
    # A classic queue works end to end (single-node brokers).
    await classic.declare_bundle_queue("c", ["13"])
    await quorum.publish_bundle(CHIYODA, b"to classic")
    [d] = await take(classic.consume_bundles("c", ["13"]), 1)
    assert d.body == b"to classic"
    await d.ack()


@broker
async def test_connection_is_named_for_operators(amqp: AmqpKit) -> None:
    require_rabbitmqctl()
    transport = amqp.transport("centre-a")
    await transport.connect(timeout=WAIT_S)
    listing = await asyncio.to_thread(rabbitmqctl, "list_connections", "client_properties")
    assert f'{{"connection_name","{transport.name}"}}' in listing


@broker
async def test_consumer_comes_back_when_its_queue_is_deleted(amqp: AmqpKit) -> None:
    """The broker cancels a consumer whose queue is deleted (e.g. by an operator): the
    subscription declares the queue again and resumes."""
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    subscription = centre.consume_bundles("q", ["35"])
    await subscription.wait_started(1, WAIT_S)
    connection, channel = await raw_channel(amqp)
    try:
        await channel.queue_delete(f"{amqp.namespace}q")
    finally:
        await connection.close()
    await subscription.wait_started(2, WAIT_S)  # the queue is back, consumed again
    await amqp.transport("publisher").publish_bundle(YAMAGUCHI_CITY, b"after delete")
    [delivery] = await take(subscription, 1)
    assert delivery.body == b"after delete"
    assert subscription.consumers_started == 2


# --- reconnection --------------------------------------------------------------------


@broker
async def test_consumer_survives_a_connection_cut_without_loss(amqp: AmqpKit, cut: Cutter) -> None:
    centre = amqp.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    sent = [f"m{i:04d}".encode() for i in range(300)]
    await amqp.transport("publisher").publish_bundles(YAMAGUCHI_CITY, sent)

    subscription = centre.consume_bundles("q", ["35"], prefetch=16)
    seen: collections.Counter[bytes] = collections.Counter()
    doubles: list[AmqpDelivery] = []
    async with asyncio.timeout(60):
        async for delivery in subscription:
            assert isinstance(delivery, AmqpDelivery)
            if seen[delivery.body]:
                doubles.append(delivery)
            seen[delivery.body] += 1
            await delivery.ack()
            if sum(seen.values()) == 100:
                await cut(centre)  # mid-stream, with deliveries in flight
            if len(seen) == len(sent):
                break
    assert set(seen) == set(sent)  # nothing lost
    assert all(d.redelivered for d in doubles)  # doubled only by redelivery
    assert centre.connections_opened >= 2
    assert subscription.consumers_started >= 2
    await subscription.close()
    assert await centre.queue_depth("q") == 0


@broker
async def test_publishing_and_consuming_across_cuts_loses_nothing(
    amqp: AmqpKit, cut: Cutter
) -> None:
    centre = amqp.transport("centre")
    publisher = amqp.transport("publisher")
    await centre.declare_bundle_queue("q", ["35"])
    sent: list[bytes] = []
    attempts: collections.Counter[bytes] = collections.Counter()
    publish_failures = 0
    halfway = asyncio.Event()

    async def cut_both() -> None:
        await halfway.wait()
        await cut(publisher)
        await cut(centre)

    cutting = asyncio.ensure_future(cut_both())

    async def produce() -> None:
        # Like a publisher's pump: a window in flight, resent until all are confirmed.
        # Windows keep going out while the cuts happen, then two more after them.
        nonlocal publish_failures
        after_cut = 0
        while after_cut < 2 and len(sent) < 20_000:
            batch = [f"m{i:05d}".encode() for i in range(len(sent), len(sent) + 50)]
            sent.extend(batch)
            while True:
                attempts.update(batch)
                try:
                    await publisher.publish_bundles(YAMAGUCHI_CITY, batch)
                    break
                except TransportUnavailable:
                    publish_failures += 1
                    await publisher.connect(timeout=WAIT_S)  # until it is back
            if len(sent) >= 200:
                halfway.set()
            if cutting.done():
                after_cut += 1
            await asyncio.sleep(0.01)  # pace the stream, so the cuts land mid-stream

    seen: set[bytes] = set()
    fresh_copies: collections.Counter[bytes] = collections.Counter()
    progress = asyncio.Event()

    async def consume() -> None:
        async for delivery in centre.consume_bundles("q", ["35"], prefetch=32):
            if not delivery.redelivered:
                fresh_copies[delivery.body] += 1
            seen.add(delivery.body)
            await delivery.ack()
            progress.set()

    consuming = asyncio.ensure_future(consume())
    try:
        async with asyncio.timeout(120):
            await produce()
            await cutting
            while True:
                progress.clear()
                if seen >= set(sent):
                    break
                await progress.wait()
    finally:
        for task in (cutting, consuming):
            task.cancel()
    assert seen == set(sent)  # nothing lost
    # A body arrives afresh (not as a redelivery) at most once per time it was
    # published: the only doubles are redeliveries and the caller's own retries.
    assert all(fresh_copies[b] <= attempts[b] for b in sent)
    assert sum(attempts.values()) - len(sent) <= 50 * publish_failures
    assert publisher.connections_opened >= 2
    assert centre.connections_opened >= 2


@broker
async def test_a_confirmed_publish_is_queued_even_when_the_connection_drops(
    amqp: AmqpKit, cut: Cutter
) -> None:
    """Cut a publisher with hundreds of publishes in flight: each one either returns
    (and then its message is in the queue) or raises TransportUnavailable."""
    centre = amqp.transport("centre")
    publisher = amqp.transport("publisher")
    await centre.declare_bundle_queue("q", ["35"])
    sent: list[bytes] = []
    tasks: list[asyncio.Future[None]] = []

    def launch(n: int) -> None:
        for _ in range(n):
            body = f"m{len(sent):05d}".encode()
            sent.append(body)
            tasks.append(asyncio.ensure_future(publisher.publish_bundle(YAMAGUCHI_CITY, body)))

    async def cut_after_first_confirm() -> None:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        await cut(publisher)

    launch(100)
    cutting = asyncio.ensure_future(cut_after_first_confirm())
    while not cutting.done() and len(sent) < 20_000:  # publishes in flight until the cut
        launch(100)
        await asyncio.sleep(0.005)
    await cutting
    results = await asyncio.gather(*tasks, return_exceptions=True)
    unexpected = [r for r in results if r is not None and not isinstance(r, TransportUnavailable)]
    assert not unexpected
    confirmed = {b for b, r in zip(sent, results, strict=True) if r is None}
    assert confirmed  # the first one at least

    queued = await centre.queue_depth("q")
    got = await take(centre.consume_bundles("q", ["35"], prefetch=queued), queued)
    assert confirmed <= set(bodies(got))


@broker
async def test_publish_waits_for_reconnect_not_for_backoff(amqp: AmqpKit) -> None:
    """After a cut, the first publish fails or succeeds on the new connection: it never
    hangs on the dead one, and `connect()` returns once the transport is back."""
    centre = amqp.transport("centre")
    publisher = amqp.transport("publisher")
    await centre.declare_bundle_queue("q", ["35"])
    await publisher.publish_bundle(YAMAGUCHI_CITY, b"before")
    await cut_by_client(publisher)
    await publisher.connect(timeout=WAIT_S)
    await publisher.publish_bundle(YAMAGUCHI_CITY, b"after")
    assert publisher.connections_opened == 2
    got = await take(centre.consume_bundles("q", ["35"]), 2)
    assert bodies(got) == [b"before", b"after"]


# --- TLS ---------------------------------------------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@contextlib.asynccontextmanager
async def tls_front(
    upstream: str, server_cert: Path, server_key: Path, client_ca: Path
) -> AsyncIterator[int]:
    """A TLS listener on localhost that requires a client certificate signed by
    `client_ca` and relays to the broker: amqps:// end to end without reconfiguring
    the broker. Yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_ca)
    target = URL(upstream)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(relay, "localhost", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@broker
async def test_tls_with_private_ca_and_client_certificate(amqp: AmqpKit, tmp_path: Path) -> None:
    require_tool("openssl")
    server_cert, server_key = _self_signed(tmp_path, "localhost")
    client_cert, client_key = _self_signed(tmp_path, "centre-a")
    async with tls_front(amqp.url, server_cert, server_key, client_cert) as port:
        url = f"amqps://guest:guest@localhost:{port}/"
        good = amqp.options(
            ca_file=str(server_cert), cert_file=str(client_cert), key_file=str(client_key)
        )
        centre = AmqpTransport(url, name=amqp.connection_name("tls-centre"), options=good)
        amqp.transports.append(centre)
        await centre.declare_bundle_queue("q", ["35"])
        await centre.publish_bundle(YAMAGUCHI_CITY, b"over tls")
        [delivery] = await take(centre.consume_bundles("q", ["35"]), 1)
        assert delivery.body == b"over tls"
        await delivery.ack()

        # The server certificate is verified: not signed by a CA we trust -> refused.
        no_ca = AmqpTransport(url, name="pytest tls no-ca", options=amqp.options())
        # And the front requires our client certificate.
        no_cert = AmqpTransport(
            url, name="pytest tls no-cert", options=amqp.options(ca_file=str(server_cert))
        )
        for transport in (no_ca, no_cert):
            try:
                with pytest.raises(TransportUnavailable):  # after the first failed attempt
                    await transport.publish_bundle(YAMAGUCHI_CITY, b"refused")
            finally:
                await transport.close()
        assert "CERTIFICATE_VERIFY_FAILED" in str(no_ca.last_error)


# --- the demo network over RabbitMQ --------------------------------------------------


@broker
async def test_the_demo_network_converges_over_rabbitmq(broker_url: str, tmp_path: Path) -> None:
    result = await run_demo(
        DemoOptions(
            data_dir=tmp_path, residents=2_000, changes=2_000, timeout_s=120, broker_url=broker_url
        )
    )
    assert result.converged
    assert {t.name: t.updates_applied for t in result.tiers} == {
        "centre-a": 4_000,
        "centre-b": 4_000,
        "national": 4_000,
    }
    national = next(t for t in result.tiers if t.name == "national")
    # Both centres forward every bundle; national applies each once and counts the other
    # copy a duplicate (the slower centre's may still be in flight when the run ends).
    assert 0 < national.duplicates <= national.bundles_applied


# --- uvloop --------------------------------------------------------------------------


@broker
def test_runs_on_uvloop(broker_url: str) -> None:
    kit = AmqpKit(broker_url, "test_runs_on_uvloop")

    async def round_trip() -> list[bytes]:
        try:
            centre = kit.transport("centre")
            await centre.declare_bundle_queue("q", ["35"])
            await kit.transport("publisher").publish_bundles(YAMAGUCHI_CITY, [b"a", b"b"])
            got = await take(centre.consume_bundles("q", ["35"]), 2)
            for d in got:
                await d.ack()
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
            return bodies(got)
        finally:
            await kit.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(round_trip()) == [b"a", b"b"]


async def test_remove_topology_refuses_the_production_namespace() -> None:
    with pytest.raises(ValueError, match="production"):
        await remove_topology("amqp://guest:guest@127.0.0.1/", "", [])
