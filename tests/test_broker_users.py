"""The shipped least-privilege broker set-up (jukisync.transport.brokerusers, `jukisync
broker setup`), on the real broker: an agency can neither read other agencies' queries
nor answer them, and a reply from anyone but the node is refused by QueryClient.

Each test module creates its own vhost and users (unique names) with exactly the
`rabbitmqctl` commands `plan` ships, and deletes them afterwards."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aio_pika
import aiormq
import pytest
from click.testing import CliRunner
from yarl import URL

from externaltools import rabbitmqctl, require_rabbitmqctl
from jukisync import Store
from jukisync.cli import main
from jukisync.query.policy import load_policy
from jukisync.query.rpc import QueryClient, QueryServer, query_queue_name, reply_queue_name
from jukisync.query.service import ByCode, Found, QueryService, encode
from jukisync.transport.amqp import AmqpOptions, AmqpTransport
from jukisync.transport.base import QUERY_EXCHANGE
from jukisync.transport.brokerusers import Role, User, plan
from netkit import HAGI, YAMAGUCHI_CITY
from querykit import Registry, code, make_policy, person

pytestmark = pytest.mark.broker

NODE = "national"


class Vhost:
    """A vhost holding one user per role, named uniquely for this run."""

    def __init__(self, broker_url: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.name = f"jukisync-test-{suffix}"
        self.base = URL(broker_url).with_path("/" + self.name)
        self.users = {
            "national": User(f"national-{suffix}", Role.NATIONAL, NODE),
            "centre": User(f"centre-{suffix}", Role.CENTRE, "centre-a"),
            "agency-a": User(f"agency-a-{suffix}", Role.AGENCY, f"agency-a-{suffix}"),
            "agency-n": User(f"agency-n-{suffix}", Role.AGENCY, f"agency-n-{suffix}"),
            "operator": User(f"ops-{suffix}", Role.OPERATOR, f"ops-{suffix}"),
            "municipality": User(f"m-{suffix}", Role.MUNICIPALITY, YAMAGUCHI_CITY),
        }
        self.passwords = {u.name: uuid.uuid4().hex for u in self.users.values()}

    def url(self, role: str) -> str:
        user = self.users[role]
        return str(self.base.with_user(user.name).with_password(self.passwords[user.name]))

    def create(self) -> None:
        for command in plan(list(self.users.values()), self.passwords, vhost=self.name):
            rabbitmqctl(*command)

    def remove(self) -> None:
        rabbitmqctl("delete_vhost", self.name)
        for user in self.users.values():
            rabbitmqctl("delete_user", user.name)


@pytest.fixture(scope="module")
def vhost(broker_url: str) -> Iterator[Vhost]:
    require_rabbitmqctl()
    v = Vhost(broker_url)
    v.create()
    try:
        yield v
    finally:
        v.remove()


class GatedService(QueryService):
    """Answers only once `gate` is set (so a test can act while a request waits)."""

    gate: threading.Event

    def handle(self, requester: str, data: bytes) -> bytes:
        assert self.gate.wait(60), "the test never opened the gate"
        return super().handle(requester, data)


@pytest.fixture
async def node(vhost: Vhost, tmp_path: Path) -> AsyncIterator[tuple[QueryServer, Store]]:
    reg = Registry(tmp_path)
    store = reg.open()
    reg.apply(store, [person(YAMAGUCHI_CITY, 1)])
    policy_dir = tmp_path / "policy"
    make_policy(policy_dir)
    text = (policy_dir / "policy.toml").read_text(encoding="utf-8")
    text = text.replace('id = "agency-a"', f'id = "{vhost.users["agency-a"].name}"')
    (policy_dir / "policy.toml").write_text(text, encoding="utf-8")
    service = GatedService(store, load_policy(policy_dir / "policy.toml"))
    service.gate = threading.Event()
    service.gate.set()
    # On the node's own transport, as the daemon serves it, logged in as the node.
    transport = AmqpTransport(
        vhost.url("national"),
        name="pytest query node",
        options=AmqpOptions(queue_type="classic", connect_timeout_s=30),
    )
    server = QueryServer(transport, service, node=NODE)
    try:
        await transport.connect(timeout=30)
        await server.start()
        yield server, store
    finally:
        service.gate.set()
        await server.close()
        await transport.close()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


def _client(vhost: Vhost, role: str) -> QueryClient:
    return QueryClient(
        vhost.url(role), node_users={NODE: vhost.users["national"].name}, timeout_s=60
    )


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_the_agency_is_answered_under_the_shipped_setup(
    vhost: Vhost, node: tuple[QueryServer, Store]
) -> None:
    async with _client(vhost, "agency-a") as client:
        answer = await client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)), node=NODE)
    assert isinstance(answer, Found), answer
    assert node[1].audit_entries()[-1].requester == vhost.users["agency-a"].name


async def test_an_agency_cannot_bind_a_queue_to_the_query_exchange(
    vhost: Vhost, node: tuple[QueryServer, Store]
) -> None:
    connection = await aio_pika.connect(vhost.url("agency-n"))
    async with connection:
        channel = await connection.channel()
        own = reply_queue_name(vhost.users["agency-n"].name)
        spy = await channel.declare_queue(own, exclusive=True)  # its own: allowed
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await spy.bind(QUERY_EXCHANGE, routing_key=NODE)


@pytest.mark.parametrize("role", ["agency-n", "centre", "operator"])
async def test_only_the_node_may_consume_its_query_queue(
    vhost: Vhost, node: tuple[QueryServer, Store], role: str
) -> None:
    connection = await aio_pika.connect(vhost.url(role))
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(query_queue_name(NODE), ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.consume(_ignore)


@pytest.mark.parametrize("role", ["agency-n", "operator"])
async def test_an_agency_cannot_publish_a_reply(
    vhost: Vhost, node: tuple[QueryServer, Store], role: str
) -> None:
    connection = await aio_pika.connect(vhost.url(role))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.default_exchange.publish(
                aio_pika.Message(b"forged"), routing_key="amq.gen-anything"
            )


async def test_a_reply_from_another_broker_user_is_refused_by_the_client(
    vhost: Vhost, node: tuple[QueryServer, Store]
) -> None:
    """A centre may publish replies (it answers its own queries): one forging an answer
    to a national query is dropped by QueryClient, and the node's answer still counts."""
    server, _ = node
    service = server.service
    assert isinstance(service, GatedService)
    service.gate.clear()
    forger = await aio_pika.connect(vhost.url("centre"))
    async with forger, _client(vhost, "agency-a") as client:
        asking = asyncio.ensure_future(
            client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)), node=NODE)
        )
        await _until(lambda: bool(client._waiting), "the request to be sent")
        [correlation_id] = client._waiting
        assert client._replies is not None
        channel = await forger.channel(publisher_confirms=True)
        forged = encode(Found(query="code", audit_id=1, records=[{"name": "偽物"}]))
        for user_id in (vhost.users["centre"].name, None):
            await channel.default_exchange.publish(
                aio_pika.Message(forged, correlation_id=correlation_id, user_id=user_id),
                routing_key=client._replies.name,
            )
        await _until(lambda: client.forged_replies == 2, "the forged replies to arrive")
        service.gate.set()
        answer = await asyncio.wait_for(asyncio.shield(asking), 60)
    assert isinstance(answer, Found) and answer.records[0]["name"] != "偽物", answer


def test_broker_setup_dry_run_prints_the_plan_without_passwords(tmp_path: Path) -> None:
    users = [
        User("national", Role.NATIONAL, "national"),
        User("m352012", Role.MUNICIPALITY, "352012"),
        User("ryoken", Role.AGENCY, "ryoken"),
    ]
    secrets = tmp_path / "passwords.toml"
    secrets.write_text(
        'national = "S3cret-n"\nm352012 = "S3cret-m"\nryoken = "S3cret-r"\n', encoding="utf-8"
    )
    args = ["broker", "setup", "--vhost", "/j", "--national", "national"]
    args += ["--municipality", "m352012=352012", "--agency", "ryoken"]
    result = CliRunner().invoke(main, [*args, "--passwords", str(secrets), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "S3cret" not in result.output
    expected = plan(users, {u.name: "x" for u in users}, vhost="/j")
    lines = result.output.splitlines()
    assert len(lines) == len(expected)
    for line, command in zip(lines, expected, strict=True):
        if command[0] == "set_permissions":
            assert all(part in line for part in command[-3:]), line


def test_broker_setup_refuses_a_municipality_that_is_not_an_origin_code() -> None:
    result = CliRunner().invoke(
        main, ["broker", "setup", "--municipality", "m1=yamaguchi", "--dry-run"]
    )
    assert result.exit_code == 2
    assert "6-digit" in result.output


async def test_every_role_does_its_work_under_the_shipped_setup(vhost: Vhost) -> None:
    """The patterns are not only tight but sufficient: a municipality publishes and
    takes resend requests, a centre consumes its prefecture and forwards, national
    consumes the forwards, and each declares the topology it declares at start."""
    from jukisync.tier.daemon import national_queue_name
    from jukisync.transport.amqp import (
        AmqpSubscription,
        bundle_queue_name,
        heads_queue_name,
    )
    from jukisync.transport.base import ResendRequest, head_key, heads_bindings

    options = AmqpOptions(queue_type="classic", connect_timeout_s=30)
    transports = {
        role: AmqpTransport(vhost.url(role), name=f"pytest roles {role}", options=options)
        for role in ("municipality", "centre", "national")
    }
    centre_queue = bundle_queue_name("centre-a", ["35"])
    national_queue = national_queue_name(NODE)
    centre_heads, national_heads = heads_queue_name("centre-a"), heads_queue_name(NODE)
    try:
        for t in transports.values():
            await t.connect(timeout=30)
        await transports["centre"].declare_bundle_queue(centre_queue, ["35"])
        await transports["national"].declare_forward_queue(national_queue)
        await transports["municipality"].declare_control_queue(YAMAGUCHI_CITY)
        await transports["centre"].declare_heads_queue(centre_heads, heads_bindings(["35"]))
        await transports["national"].declare_heads_queue(national_heads, heads_bindings(None))
        await transports["municipality"].publish_bundle(YAMAGUCHI_CITY, b"bundle")
        await transports["municipality"].publish_heads(head_key(YAMAGUCHI_CITY), b"head")
        await transports["centre"].publish_forward(YAMAGUCHI_CITY, b"forward")
        resend = ResendRequest(origin=YAMAGUCHI_CITY, from_seq=1, requester="centre-a")
        await transports["centre"].request_resend(resend)
        subscribers: list[Callable[[], AmqpSubscription]] = [
            lambda: transports["centre"].consume_bundles(centre_queue, ["35"]),
            lambda: transports["national"].consume_forwards(national_queue),
            lambda: transports["municipality"].consume_control(YAMAGUCHI_CITY),
            lambda: transports["centre"].consume_heads(centre_heads, heads_bindings(["35"])),
            lambda: transports["national"].consume_heads(national_heads, heads_bindings(None)),
        ]
        for consume in subscribers:
            subscription = consume()
            delivery = await asyncio.wait_for(subscription.__anext__(), 30)
            await delivery.ack()
            await subscription.close()
    finally:
        for t in transports.values():
            await t.close()


@pytest.mark.parametrize("what", ["bundle", "head"])
async def test_a_municipality_cannot_publish_as_another(vhost: Vhost, what: str) -> None:
    from jukisync.transport.base import HEADS_EXCHANGE, UPDATES_EXCHANGE, bundle_key, head_key

    exchange_name, key = (
        (UPDATES_EXCHANGE, bundle_key) if what == "bundle" else (HEADS_EXCHANGE, head_key)
    )
    connection = await aio_pika.connect(vhost.url("municipality"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(aio_pika.Message(b"mine"), routing_key=key(YAMAGUCHI_CITY))
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await exchange.publish(aio_pika.Message(b"theirs"), routing_key=key(HAGI))
