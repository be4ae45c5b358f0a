"""Channel helpers shared by the consumer, the transport and the query server: what
counts as a lost connection or a refused login, bounding an operation by its channel,
opening and closing channels."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractConnection
from yarl import URL

from jukisync.transport.amqp.options import url_user
from jukisync.transport.amqp.topology import AccessRefused, TopologyError

__all__ = [
    "LOST",
    "access_refused",
    "close_quietly",
    "closing_is_lost",
    "open_channel",
    "while_open",
]


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
def closing_is_lost(
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
    except (TopologyError, *LOST):
        raise
    except Exception as exc:
        if _gone(resource):
            raise ConnectionError(f"the channel or connection closed: {exc!r}") from exc
        raise


@contextlib.asynccontextmanager
async def while_open(channel: aiormq.abc.AbstractChannel, timeout: float) -> AsyncIterator[None]:
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
LOST: Final = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    TimeoutError,
)


async def open_channel(
    connection: AbstractConnection, *, confirms: bool
) -> tuple[AbstractChannel, aiormq.Channel]:
    channel = connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
    await channel.initialize()
    underlay = await channel.get_underlay_channel()
    if not isinstance(underlay, aiormq.Channel):  # pragma: no cover - aiormq's only kind
        raise TypeError(f"unexpected channel type {type(underlay)!r}")
    return channel, underlay


async def close_quietly(closable: AbstractChannel | AbstractConnection | None) -> None:
    if closable is None or closable.is_closed:
        return
    with contextlib.suppress(Exception):
        await closable.close()


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
