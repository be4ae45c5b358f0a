"""Publishing on a transport's confirm channel: what each outcome of one publish means
to its caller, and many publishes settled together.

A publish returns once the broker confirmed it. Anything else raises: `Unroutable`
(no queue bound: the broker returned it), or `TransportUnavailable` (nacked, no
confirm in time, connection lost with the confirm outstanding), after which the
caller keeps the message and retries from its outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import aiormq
from pamqp import commands as spec

from jukisync.transport.amqp.channels import LOST, closing_is_lost, while_open
from jukisync.transport.amqp.topology import Unroutable
from jukisync.transport.base import TransportUnavailable

__all__ = ["publish_confirmed", "settle_all"]


async def publish_confirmed(
    channel: aiormq.Channel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: spec.Basic.Properties,
    timeout: float,
    recycle: Callable[[aiormq.Channel], None],
) -> None:
    """Publish `body` mandatory on `channel` and wait for its confirm, at most `timeout`
    seconds. `recycle(channel)` is called when the live channel nacked or never
    confirmed: on a cluster its view of a quorum queue may be stale, and a fresh
    channel is what the caller's retry needs."""
    try:
        with closing_is_lost(channel):
            async with while_open(channel, timeout):
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
        recycle(channel)
        raise TransportUnavailable(f"broker refused the message (nack): {exc}") from exc
    except TimeoutError as exc:
        if channel.is_closed:
            raise TransportUnavailable("connection lost before the publisher confirm") from exc
        recycle(channel)
        raise TransportUnavailable(f"no publisher confirm within {timeout}s") from exc
    except LOST as exc:
        raise TransportUnavailable(f"connection lost before the confirm: {exc}") from exc
    if not isinstance(result, spec.Basic.Ack):
        raise TransportUnavailable(f"unexpected publisher confirm {result!r}")


async def settle_all(publishes: Sequence[Awaitable[None]]) -> None:
    """Await every publish (all in flight at once); returns when every one was
    confirmed. If any was not, raises after all settled: the first error that is not
    `TransportUnavailable` as it is, else one `TransportUnavailable` counting them."""
    results = await asyncio.gather(*publishes, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if not isinstance(failure, TransportUnavailable):
            raise failure
    if failures:
        raise TransportUnavailable(
            f"{len(failures)} of {len(publishes)} publishes not confirmed: {failures[0]}"
        ) from failures[0]
