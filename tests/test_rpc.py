"""Queries over the real broker: the requester is the broker-validated user_id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from yarl import URL

from conftest import AmqpKit
from externaltools import rabbitmqctl, require_rabbitmqctl
from jukisync import Store
from jukisync.query.rpc import QUERY_EXCHANGE, QueryClient, QueryServer, RpcError
from jukisync.query.service import ByCode, Denied, Found, QueryService
from netkit import YAMAGUCHI_CITY
from querykit import Registry, code, make_policy, person

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def agencies(broker_url: str) -> Iterator[dict[str, str]]:
    """Two broker users, as two agencies with their own credentials."""
    require_rabbitmqctl()
    suffix = uuid.uuid4().hex[:6]
    base = URL(broker_url)
    users = {"agency-a": f"agency-a-{suffix}", "agency-n": f"agency-n-{suffix}"}
    for user in users.values():
        rabbitmqctl("add_user", user, "secret")
        rabbitmqctl("set_permissions", "-p", base.path.lstrip("/") or "/", user, ".*", ".*", ".*")
    yield {k: str(base.with_user(u).with_password("secret")) for k, u in users.items()}
    for user in users.values():
        rabbitmqctl("delete_user", user)


def _node_users(server: tuple[QueryServer, str]) -> dict[str, str]:
    # The node runs as the test broker's own user (guest), not under its node id.
    return {"national": server[0].user_id or ""}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    reg = Registry(tmp_path)
    store = reg.open()
    reg.apply(store, [person(YAMAGUCHI_CITY, n) for n in range(1, 4)])
    return store


@pytest.fixture
async def server(
    store: Store, tmp_path: Path, agencies: dict[str, str], amqp: AmqpKit
) -> AsyncIterator[tuple[QueryServer, str]]:
    # The policy names requesters by broker user: rewrite the kit's ids to this run's.
    policy_dir = tmp_path / "policy"
    make_policy(policy_dir)
    text = (policy_dir / "policy.toml").read_text(encoding="utf-8")
    for agency, url in agencies.items():
        text = text.replace(f'id = "{agency}"', f'id = "{URL(url).user}"')
    (policy_dir / "policy.toml").write_text(text, encoding="utf-8")
    from jukisync.query.policy import load_policy

    service = QueryService(store, load_policy(policy_dir / "policy.toml"))
    # On a node's transport, as the daemon serves it (the kit removes the namespace).
    transport = amqp.transport("query server")
    server = QueryServer(transport, service, node="national")
    await server.start()
    yield server, amqp.namespace
    await server.close()


async def test_granted_agency_gets_the_tasks_fields(
    server: tuple[QueryServer, str], agencies: dict[str, str], store: Store
) -> None:
    _, namespace = server
    async with QueryClient(
        agencies["agency-a"], namespace=namespace, node_users=_node_users(server)
    ) as client:
        answer = await client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)))
    assert isinstance(answer, Found), answer
    assert set(answer.records[0]) == {"juminhyo_code", "name", "address", "status"}
    entries = store.audit_entries()
    assert entries[-1].requester == URL(agencies["agency-a"]).user
    assert entries[-1].allowed


async def test_a_task_not_granted_is_refused_and_logged(
    server: tuple[QueryServer, str], agencies: dict[str, str], store: Store
) -> None:
    _, namespace = server
    async with QueryClient(
        agencies["agency-n"], namespace=namespace, node_users=_node_users(server)
    ) as client:
        answer = await client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)))
    assert isinstance(answer, Denied)
    assert "T-ADDR" in answer.reason
    last = store.audit_entries()[-1]
    assert last.requester == URL(agencies["agency-n"]).user and not last.allowed


async def test_spoofing_another_agency_is_stopped_by_the_broker(
    server: tuple[QueryServer, str], agencies: dict[str, str], store: Store
) -> None:
    _, namespace = server
    before = len(store.audit_entries())
    victim = URL(agencies["agency-a"]).user
    async with QueryClient(
        agencies["agency-n"], namespace=namespace, node_users=_node_users(server)
    ) as client:
        with pytest.raises(RpcError, match="refused"):
            await client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)), user_id=victim)
    # nothing was answered, and nothing was logged in the victim's name
    assert all(e.requester != victim for e in store.audit_entries()[before:])


async def test_no_service_for_an_unknown_node(
    server: tuple[QueryServer, str], agencies: dict[str, str]
) -> None:
    _, namespace = server
    async with QueryClient(
        agencies["agency-a"], namespace=namespace, node_users=_node_users(server)
    ) as client:
        with pytest.raises(RpcError, match="no query service"):
            await client.ask(ByCode(task="T-ADDR", code="00000000000"), node="nowhere")


async def test_a_request_without_user_id_is_refused_and_logged(
    server: tuple[QueryServer, str], agencies: dict[str, str], store: Store
) -> None:
    from jukisync.query.rpc import UNIDENTIFIED
    from jukisync.query.service import decode_response, encode

    _, namespace = server
    connection = await aio_pika.connect(agencies["agency-a"])
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange(namespace + QUERY_EXCHANGE)
        request = ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1))
        await exchange.publish(
            aio_pika.Message(encode(request), reply_to=replies.name, correlation_id="x"),
            routing_key="national",
        )
        async with replies.iterator(timeout=30) as incoming:
            async for message in incoming:
                answer = decode_response(message.body)
                break
    assert isinstance(answer, Denied)
    assert store.audit_entries()[-1].requester == UNIDENTIFIED


async def test_more_bad_requests_than_the_prefetch_do_not_stop_the_service(
    server: tuple[QueryServer, str], agencies: dict[str, str], store: Store
) -> None:
    """Each malformed request (invalid UTF-8, nesting deeper than the decoder goes,
    not MessagePack) is answered and logged; a good one after them is answered too."""
    from jukisync.query.service import decode_response

    query_server, namespace = server
    bad = [b"\x81\xa4kind\xa1\xff", b"\x81\xa1a" * 1200 + b"\xc0", b"\xc1"]
    count = query_server.prefetch + 8
    before = store.audit_head()[1]
    connection = await aio_pika.connect(agencies["agency-a"])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange(namespace + QUERY_EXCHANGE)
        for i in range(count):
            await exchange.publish(
                aio_pika.Message(
                    bad[i % len(bad)],
                    reply_to=replies.name,
                    correlation_id=str(i),
                    user_id=URL(agencies["agency-a"]).user,
                ),
                routing_key="national",
            )
        answered: dict[str, object] = {}
        async with replies.iterator(timeout=60) as incoming:
            async for message in incoming:
                await message.ack()
                answered[message.correlation_id or ""] = decode_response(message.body)
                if len(answered) == count:
                    break
    assert all(isinstance(a, Denied) and a.query == "invalid" for a in answered.values())
    assert store.audit_head()[1] == before + count
    async with QueryClient(
        agencies["agency-a"], namespace=namespace, node_users=_node_users(server)
    ) as client:
        answer = await client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)))
    assert isinstance(answer, Found), answer


async def test_the_server_answers_again_after_its_connection_is_lost(
    server: tuple[QueryServer, str], agencies: dict[str, str], store: Store
) -> None:
    """It consumes on its node's transport: when that connection fails, it consumes
    again on the next one the transport opens."""
    query_server, namespace = server
    connection = query_server.transport._connection  # test-only peek at the live connection
    assert connection is not None and connection.transport is not None
    await connection.transport.connection.close(ConnectionResetError("jukisync test: cut"))
    async with asyncio.timeout(30):
        while not (query_server.subscribed >= 2 and query_server.consuming):
            await asyncio.sleep(0.05)
    assert query_server.transport.connections_opened == 2
    async with QueryClient(
        agencies["agency-a"], namespace=namespace, node_users=_node_users(server)
    ) as client:
        answer = await client.ask(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)))
    assert isinstance(answer, Found), answer
