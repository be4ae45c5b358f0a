"""Transports: how bundles, forwards and control messages move between tiers.

`base` is the interface the nodes are written against; `inprocess` implements it on
asyncio queues (demo, tests); the RabbitMQ transport implements it over AMQP.
"""

from jukisync.transport.base import (
    Delivery,
    ResendRequest,
    Subscription,
    Transport,
    TransportClosed,
    TransportUnavailable,
)

__all__ = [
    "Delivery",
    "ResendRequest",
    "Subscription",
    "Transport",
    "TransportClosed",
    "TransportUnavailable",
]
