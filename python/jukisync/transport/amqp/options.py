"""The tunables of a RabbitMQ transport (`AmqpOptions`, also the `[broker]` table of
a node config), and what follows from them alone: TLS context, login user, backoff."""

from __future__ import annotations

import ssl
from typing import Final, Literal

import msgspec
from yarl import URL

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AmqpOptions",
    "QueueType",
    "backoff_delay",
    "split_urls",
    "ssl_context",
    "url_user",
]

QueueType = Literal["quorum", "classic"]

DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024  # RabbitMQ 4's own default limit


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Delay before reconnect attempt `attempt` (0-based): exponential from `base`,
    capped at `cap`, with "equal jitter" (`jitter` in [0, 1) spreads it over the upper
    half) so a fleet of nodes does not reconnect in lockstep after a broker restart."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 60))
    return ceiling / 2 + ceiling / 2 * jitter


def split_urls(text: str) -> tuple[str, ...]:
    """The broker addresses of a comma-separated list (`--broker URL1,URL2,URL3`):
    the nodes of one RabbitMQ cluster. A URL never holds a bare comma (userinfo and
    path percent-encode it), so splitting on commas is unambiguous."""
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    if not urls:
        raise ValueError("no broker URL given")
    return urls


def url_user(url: str) -> str | None:
    """The user RabbitMQ authenticates for an AMQP URL (as aiormq logs in: PLAIN with
    the URL's user, `guest` if none), or None for `?auth=external` (certificate login:
    the user is the certificate's name; set `AmqpOptions.user_id`)."""
    parsed = URL(url)
    if parsed.query.get("auth", "plain").lower() == "external":
        return None
    return parsed.user or "guest"


class AmqpOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Tunables of a RabbitMQ transport; decodable from a config table.

    Credentials and vhost come from the URL (`amqp://user:pass@host:port/vhost`,
    `amqps://` for TLS). `ca_file`, `cert_file`, `key_file` configure TLS: a private CA,
    and a client certificate if the broker requires one.
    """

    namespace: str = ""  # prefix of every exchange and queue name (tests, staging)
    queue_type: QueueType = "quorum"  # "classic" for a single-node broker
    delivery_limit: int | None = 50  # quorum: dead-letter after this many deliveries
    # quorum: replicas of each new queue (`x-quorum-initial-group-size`); None leaves
    # it to the broker (RabbitMQ 3.x: every cluster node). 3 or 5 on larger clusters.
    # An existing queue keeps its own: the broker refuses a re-declaration that differs.
    quorum_replicas: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    confirm_timeout_s: float = 30.0  # a publish not confirmed by then is unavailable
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 30.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    user_id: str | None = None  # default: the URL's user (what the broker validates)

    def __post_init__(self) -> None:
        if self.queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type must be 'quorum' or 'classic', got {self.queue_type!r}")
        if self.delivery_limit is not None and self.delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, got {self.delivery_limit}")
        if self.quorum_replicas is not None and self.quorum_replicas < 1:
            raise ValueError(f"quorum_replicas must be at least 1, got {self.quorum_replicas}")
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")
        for field in ("confirm_timeout_s", "connect_timeout_s", "reconnect_min_s"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below "
                f"reconnect_min_s ({self.reconnect_min_s})"
            )
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")


def ssl_context(options: AmqpOptions) -> ssl.SSLContext:
    """A verifying TLS client context: system CAs or `ca_file`, optional client cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.ca_file)
    if options.cert_file is not None:
        context.load_cert_chain(options.cert_file, options.key_file)
    return context
