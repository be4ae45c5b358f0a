"""Least-privilege broker users (DESIGN.md §5): one RabbitMQ user per node, municipality,
agency and operator, each with configure/write/read permission patterns that allow
what its role does and nothing more.

RabbitMQ checks three permissions per resource name (a regular expression each):
*configure* to declare or delete a queue or exchange, *write* to publish to an exchange
(and, for `queue.bind`, on the queue), *read* to consume from a queue (and, for
`queue.bind`, on the exchange). So who may bind a queue to `jukisync.query` is who has
*read* on it — only the nodes that answer queries — and who may consume a node's query
queue is who has *read* on that queue — only that node. An agency may publish requests
to `jukisync.query` and declare and read its own reply queues
(`jukisync.replies.<user>.…`), nothing else: it can neither copy other agencies'
searches nor answer them. A reply reaches an agency through the default exchange,
which only the query nodes may write to, and the agency checks the reply's
broker-validated `user_id` (jukisync.query.rpc.QueryClient).

`plan` gives the `rabbitmqctl` commands for a set of users; rerunning them is harmless
(a user that exists gets its password set again, permissions are replaced).
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jukisync.transport.amqp import DEAD_LETTER
from jukisync.transport.base import (
    CONTROL_EXCHANGE,
    FORWARD_EXCHANGE,
    HEADS_EXCHANGE,
    QUERY_EXCHANGE,
    REPLY_PREFIX,
    UPDATES_EXCHANGE,
    bundle_key,
    head_key,
)

__all__ = [
    "Permissions",
    "Role",
    "User",
    "permissions",
    "plan",
    "shown",
    "topic_permissions",
]

# An unmatchable pattern: RabbitMQ grants nothing for "^$" (no resource has no name).
NOTHING = "^$"
REDACTED = "********"


class Role(enum.StrEnum):
    MUNICIPALITY = "municipality"  # a publisher: `id` is its 6-digit origin code
    CENTRE = "centre"  # an aggregator node: `id` is its node id
    NATIONAL = "national"  # the national node: `id` is its node id
    AGENCY = "agency"  # a requester of queries: `id` is its policy requester id
    OPERATOR = "operator"  # reads the dead-letter queue


@dataclass(frozen=True, slots=True)
class User:
    """One broker user: its login (for nodes and agencies, the id the others know it
    by: `user_id` is what the policy and QueryClient check), its role and, for
    municipalities and nodes, the id its queues are named after."""

    name: str
    role: Role
    id: str


@dataclass(frozen=True, slots=True)
class Permissions:
    configure: str
    write: str
    read: str


def _any(*names: str) -> str:
    unique = dict.fromkeys(names)  # the dead-letter exchange and queue share a name
    return "^(" + "|".join(unique) + ")$" if unique else NOTHING


def permissions(user: User, namespace: str = "") -> Permissions:
    """The patterns for `user`, with every jukisync name prefixed by `namespace`."""
    p = re.escape(namespace)
    q = re.escape
    exchanges = {
        "updates": p + q(UPDATES_EXCHANGE),
        "forward": p + q(FORWARD_EXCHANGE),
        "control": p + q(CONTROL_EXCHANGE),
        "dead": p + q(DEAD_LETTER),
        "query": p + q(QUERY_EXCHANGE),
        "heads": p + q(HEADS_EXCHANGE),
    }
    dead_queue = p + q(DEAD_LETTER)
    # Every transport declares the four exchanges and the shared dead-letter queue
    # (bound to its exchange) when it connects.
    topology = [exchanges[k] for k in ("updates", "forward", "control", "dead", "heads")]
    topology.append(dead_queue)
    if user.role is Role.MUNICIPALITY:
        control_queue = p + q(f"jukisync.control.{user.id}")
        return Permissions(
            configure=_any(*topology, control_queue),
            # heads: its signed chain head announcements
            write=_any(exchanges["updates"], exchanges["heads"], control_queue, dead_queue),
            read=_any(exchanges["control"], exchanges["dead"], control_queue),
        )
    if user.role in (Role.CENTRE, Role.NATIONAL):
        queues = (
            p + q(f"jukisync.bundles.{user.id}.") + r"[0-9-]+"
            if user.role is Role.CENTRE
            else p + q(f"jukisync.forwards.{user.id}")
        )
        query_queue = p + q(f"{QUERY_EXCHANGE}.{user.id}")
        heads_queue = p + q(f"{HEADS_EXCHANGE}.{user.id}")
        consumes = exchanges["updates"] if user.role is Role.CENTRE else exchanges["forward"]
        publishes = [exchanges["control"], exchanges["heads"]]  # resends, relays, repairs
        if user.role is Role.CENTRE:
            publishes.append(exchanges["forward"])
        return Permissions(
            configure=_any(*topology, queues, heads_queue, exchanges["query"], query_queue),
            # amq.default: query replies go to the agency's reply queue by its name.
            write=_any(*publishes, queues, heads_queue, query_queue, dead_queue, q("amq.default")),
            read=_any(
                consumes,
                exchanges["dead"],
                exchanges["heads"],
                queues,
                heads_queue,
                exchanges["query"],
                query_queue,
            ),
        )
    if user.role is Role.AGENCY:
        # Its reply queues are named after it (jukisync.query.rpc.reply_queue_name).
        replies = "^" + p + q(f"{REPLY_PREFIX}{user.name}.") + ".*$"
        return Permissions(configure=replies, write=_any(exchanges["query"]), read=replies)
    return Permissions(configure=_any(dead_queue), write=NOTHING, read=_any(dead_queue))


def topic_permissions(user: User, namespace: str = "") -> list[tuple[str, str, str]]:
    """(exchange, write, read) routing-key patterns on topic exchanges: a municipality
    may publish only under its own origin's key (`upd.<pref>.<origin>`), so it cannot
    route bundles as another municipality (whose signature it cannot make anyway)."""
    if user.role is Role.MUNICIPALITY:
        return [
            (namespace + UPDATES_EXCHANGE, "^" + re.escape(bundle_key(user.id)) + "$", NOTHING),
            (namespace + HEADS_EXCHANGE, "^" + re.escape(head_key(user.id)) + "$", NOTHING),
        ]
    return []


def _check_user(user: User) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", user.name):
        raise ValueError(f"user {user.name!r}: letters, digits and ._@- only (1-64)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", user.id):
        raise ValueError(f"{user.role.value} id {user.id!r}: letters, digits and ._- only")
    if user.role is Role.MUNICIPALITY and not re.fullmatch(r"[0-9]{6}", user.id):
        raise ValueError(f"municipality {user.id!r}: the 6-digit origin code")


def plan(
    users: Sequence[User],
    passwords: Mapping[str, str],
    *,
    vhost: str,
    namespace: str = "",
    existing_users: frozenset[str] = frozenset(),
    existing_vhosts: frozenset[str] = frozenset(),
) -> list[list[str]]:
    """The `rabbitmqctl` argument lists that create the vhost and users (or set the
    password of those in `existing_users`) and set each user's permissions there."""
    seen: set[str] = set()
    for user in users:
        _check_user(user)
        if user.name in seen:
            raise ValueError(f"user {user.name!r} is listed twice")
        seen.add(user.name)
        if user.name not in passwords:
            raise ValueError(f"no password for user {user.name!r}")
    commands: list[list[str]] = []
    if vhost not in existing_vhosts:
        commands.append(["add_vhost", vhost])
    for user in users:
        verb = "change_password" if user.name in existing_users else "add_user"
        commands.append([verb, user.name, passwords[user.name]])
        perms = permissions(user, namespace)
        commands.append(
            ["set_permissions", "-p", vhost, user.name, perms.configure, perms.write, perms.read]
        )
        for exchange, write, read in topic_permissions(user, namespace):
            commands.append(
                ["set_topic_permissions", "-p", vhost, user.name, exchange, write, read]
            )
    return commands


def shown(command: Sequence[str]) -> str:
    """A command as a shell line, with the passwords replaced by asterisks."""
    hidden = [
        REDACTED if i == 2 and command[0] in ("add_user", "change_password") else arg
        for i, arg in enumerate(command)
    ]
    return shlex.join(["rabbitmqctl", *hidden])
