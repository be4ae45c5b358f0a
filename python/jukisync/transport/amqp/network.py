"""`AmqpNetwork`: the transports of a whole network in one process, on one broker and
namespace (the demo, the bench, tests)."""

from __future__ import annotations

from collections.abc import Sequence

from jukisync.transport.amqp.connection import AmqpTransport
from jukisync.transport.amqp.options import AmqpOptions
from jukisync.transport.amqp.topology import remove_topology

__all__ = ["AmqpNetwork"]


class AmqpNetwork:
    """Transports on one broker and namespace, made by name like
    `InProcessNetwork.transport(name)`, so code that builds a whole network in one
    process (the demo, tests) can run it over RabbitMQ. `close()` closes them all;
    `remove()` also deletes a throw-away namespace's exchanges and queues."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        options: AmqpOptions | None = None,
        connection_prefix: str = "jukisync ",
    ) -> None:
        self.urls = (url,) if isinstance(url, str) else tuple(url)
        self.url = self.urls[0]
        self.options = options or AmqpOptions()
        self.connection_prefix = connection_prefix
        self.transports: list[AmqpTransport] = []

    def transport(self, name: str) -> AmqpTransport:
        transport = AmqpTransport(
            self.urls, name=f"{self.connection_prefix}{name}", options=self.options
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
            self.urls, self.options.namespace, sorted(queues), options=self.options
        )
