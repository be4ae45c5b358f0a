"""The raw ceiling: aio-pika alone carrying the same bytes over the same two hops, with no
processing, as the yardstick of the throughput phase."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aio_pika
import aio_pika.abc

from jukisync.sim.bench.options import BenchError, BenchOptions
from jukisync.sim.bench.results import RawResult
from jukisync.sim.bench.timing import windowed
from jukisync.sim.bench.workload import Bundle
from jukisync.transport.base import (
    bundle_key,
)

# --- the raw ceiling -------------------------------------------------------------------------


async def raw_ceiling(
    options: BenchOptions, namespace: str, streams: dict[str, list[Bundle]]
) -> RawResult:
    """The same envelopes over two hops through aio-pika, with no processing: each
    publisher publishes (confirms, `window` in flight) to the first queue; a relay
    consumes it, republishes each body to the second queue and acks once confirmed; a
    sink consumes and acks."""
    url = options.broker_urls[0]  # the raw ceiling runs through one node
    names = [f"{namespace}raw.{n}" for n in ("updates", "forward", "hop1", "hop2")]
    x_in, x_out, q_in, q_out = names
    arguments: dict[str, Any] = {"x-queue-type": options.queue_type}
    if options.quorum_replicas is not None:  # as many replicas as the tiers' queues
        arguments["x-quorum-initial-group-size"] = options.quorum_replicas
    total = sum(len(s) for s in streams.values())
    size = sum(len(b.envelope) for s in streams.values() for b in s)
    connections: list[aio_pika.abc.AbstractConnection] = []

    async def connect(role: str) -> aio_pika.abc.AbstractConnection:
        connection = await aio_pika.connect(
            url, client_properties={"connection_name": f"jukisync bench raw {role}"}
        )
        connections.append(connection)
        return connection

    try:
        setup = await (await connect("setup")).channel()
        exchanges = [
            await setup.declare_exchange(x, aio_pika.ExchangeType.TOPIC, durable=True)
            for x in (x_in, x_out)
        ]
        for queue, exchange in ((q_in, exchanges[0]), (q_out, exchanges[1])):
            declared = await setup.declare_queue(queue, durable=True, arguments=arguments)
            await declared.bind(exchange, "#")
        done = asyncio.Event()
        received = [0]
        finished = [0.0]
        relays: set[asyncio.Task[None]] = set()

        relay_in = await (await connect("relay")).channel()
        await relay_in.set_qos(prefetch_count=options.prefetch)
        relay_conn = connections[-1]
        relay_out = await relay_conn.channel(publisher_confirms=True)
        out_exchange = await relay_out.get_exchange(x_out)
        sink = await (await connect("sink")).channel()
        await sink.set_qos(prefetch_count=options.prefetch)

        async def relay(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            key = (message.routing_key or "").replace("upd.", "fwd.", 1)
            await out_exchange.publish(_raw_message(message.body), key, mandatory=True)
            await message.ack()

        async def on_hop1(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            task = asyncio.create_task(relay(message))
            relays.add(task)
            task.add_done_callback(relays.discard)

        async def on_hop2(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            received[0] += 1
            if received[0] == total:
                finished[0] = time.perf_counter()
                done.set()

        await (await relay_in.get_queue(q_in)).consume(on_hop1)
        await (await sink.get_queue(q_out)).consume(on_hop2)
        publishers = []
        for origin in streams:
            channel = await (await connect(f"publisher-{origin}")).channel(publisher_confirms=True)
            publishers.append((await channel.get_exchange(x_in), streams[origin]))

        async def publish(exchange: aio_pika.abc.AbstractExchange, bundles: list[Bundle]) -> None:
            async def one(bundle: Bundle) -> None:
                await exchange.publish(
                    _raw_message(bundle.envelope), bundle_key(bundle.origin), mandatory=True
                )

            await windowed((one(b) for b in bundles), options.window)

        started = time.perf_counter()
        await asyncio.gather(*(publish(x, b) for x, b in publishers))
        published = time.perf_counter()
        try:
            async with asyncio.timeout(options.timeout_s):
                await done.wait()
        except TimeoutError:
            raise BenchError(
                f"raw ceiling: {received[0]} of {total} messages arrived "
                f"within {options.timeout_s}s"
            ) from None
        elapsed = finished[0] - started
        return RawResult(
            messages=total,
            bytes=size,
            elapsed_s=round(elapsed, 3),
            publish_s=round(published - started, 3),
            bytes_per_s=round(size / elapsed, 1),
            messages_per_s=round(total / elapsed, 1),
        )
    finally:
        # Consumers first (a queue deleted under a consumer cancels it, loudly).
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close()
        with contextlib.suppress(Exception):
            cleanup = await aio_pika.connect(
                url, client_properties={"connection_name": "jukisync bench raw cleanup"}
            )
            try:
                channel = await cleanup.channel()
                for queue in (q_in, q_out):
                    await channel.queue_delete(queue)
                for name in (x_in, x_out):
                    await channel.exchange_delete(name)
            finally:
                await cleanup.close()


def _raw_message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/msgpack",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
