"""Shared pytest fixtures.

RabbitMQ (DESIGN.md §10): broker-backed tests take the `amqp` fixture (or
`broker_url`). The broker is `JUKISYNC_AMQP_URL` (default
amqp://guest:guest@127.0.0.1:5672/), probed once per session; when it does not answer,
those tests skip with the reason, or fail if `JUKISYNC_REQUIRE_BROKER=1` (CI). Each
test gets its own namespace, a random prefix on every exchange and queue name, removed
at teardown, and its transports carry connection names naming the test, so
concurrent runs and leftovers never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from yarl import URL

from jukisync.transport.amqp import AmqpOptions, AmqpTransport, remove_topology

if TYPE_CHECKING:
    from clusterkit import Cluster
    from daemonkit import Nets

AMQP_URL_ENV = "JUKISYNC_AMQP_URL"
REQUIRE_BROKER_ENV = "JUKISYNC_REQUIRE_BROKER"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
_PROBE_S = 3.0  # how long the readiness probe keeps trying (a broker still starting)


def _probe_broker(url: str, within_s: float) -> str | None:
    """None once the broker accepts an AMQP connection, else the last reason it did not.

    Runs in its own thread and event loop, so it works whatever loop pytest runs.
    """
    import aio_pika

    async def attempt() -> None:
        connection = await aio_pika.connect(
            url, timeout=2, client_properties={"connection_name": "pytest readiness probe"}
        )
        await connection.close()

    outcome: list[str | None] = []

    def run() -> None:
        deadline = time.monotonic() + within_s
        while True:
            try:
                asyncio.run(attempt())
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    outcome.append(reason)
                    return
                time.sleep(0.25)
            else:
                outcome.append(None)
                return

    thread = threading.Thread(target=run, name="broker probe", daemon=True)
    thread.start()
    thread.join(within_s + 10)
    return outcome[0] if outcome else "the probe did not finish"


SEED_ENV = "JUKISYNC_TEST_SEED"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A random source whose seed is printed (shown with a failure) and can be replayed
    with JUKISYNC_TEST_SEED=N."""
    seed = int(os.environ.get(SEED_ENV) or random.randrange(1 << 30))
    print(f"{request.node.nodeid}: {SEED_ENV}={seed}")
    return random.Random(seed)


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The RabbitMQ URL, once it answers; skips (or fails in CI) when it does not."""
    url = os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL
    reason = _probe_broker(url, _PROBE_S)
    if reason is not None:
        shown = URL(url).with_password(None) if URL(url).password else URL(url)
        message = (
            f"RabbitMQ not reachable at {shown} ({reason}); set {AMQP_URL_ENV} to a running broker"
        )
        if os.environ.get(REQUIRE_BROKER_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_BROKER_ENV}=1)", pytrace=False)
        pytest.skip(message)
    return url


class AmqpKit:
    """One test's corner of the broker: a namespace, and transports inside it."""

    def __init__(self, url: str, test_name: str) -> None:
        self.url = url
        self.namespace = f"t{uuid.uuid4().hex[:10]}."
        # Connection names go through rabbitmqctl: keep them to plain characters.
        self.test = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)[:80]
        self.transports: list[AmqpTransport] = []
        self.extra_queues: set[str] = set()  # full names of queues declared by hand

    def options(self, **overrides: Any) -> AmqpOptions:
        return AmqpOptions(namespace=self.namespace, **overrides)

    def connection_name(self, role: str) -> str:
        # The namespace makes it unique: two runs of one test (two checkouts) never
        # share a name, so a cut by name hits this run's connection only.
        return f"pytest {self.test} {self.namespace.rstrip('.')} {role}"

    def transport(self, role: str, **overrides: Any) -> AmqpTransport:
        transport = AmqpTransport(
            self.url, name=self.connection_name(role), options=self.options(**overrides)
        )
        self.transports.append(transport)
        return transport

    async def close(self) -> None:
        queues = set(self.extra_queues)
        for transport in self.transports:
            queues.update(transport.declared_queues)
            with contextlib.suppress(Exception):
                await transport.close()
        await remove_topology(self.url, self.namespace, sorted(queues))


@pytest.fixture
async def amqp(broker_url: str, request: pytest.FixtureRequest) -> AsyncIterator[AmqpKit]:
    """A fresh namespace on the broker, removed (with every queue in it) afterwards."""
    kit = AmqpKit(broker_url, request.node.name)
    try:
        yield kit
    finally:
        await kit.close()


@pytest.fixture
def make_net(broker_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Nets]:
    """`make_net(**options)`: a `daemonkit.Net` (keys, configs, daemons) in its own
    broker namespace, killed and removed after the test; a test (or module) marked
    `check_stores` also has every tier store checked then."""
    from daemonkit import Nets

    nets = Nets(tmp_path, broker_url)
    yield nets
    nets.close(check_stores=request.node.get_closest_marker("check_stores") is not None)


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A three-node RabbitMQ cluster started by `scripts/rabbitmq-cluster` for the
    session (tests marked `cluster`) and stopped at its end. When it cannot start, the
    tests skip with the reason, or fail under JUKISYNC_REQUIRE_BROKER=1 (CI).

    With JUKISYNC_TEST_CLUSTER_DIR, the cluster of that directory (started by
    `scripts/rabbitmq-cluster start DIR`, or started here) is used and left running:
    iterating on one test then skips the nodes' start-up."""
    from clusterkit import Cluster

    kept = os.environ.get("JUKISYNC_TEST_CLUSTER_DIR")
    cluster = Cluster(Path(kept) if kept else tmp_path_factory.mktemp("rabbitmq-cluster"))
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError, AssertionError) as exc:
        cluster.stop()
        message = f"cannot start the RabbitMQ cluster: {exc}"
        if os.environ.get(REQUIRE_BROKER_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_BROKER_ENV}=1)", pytrace=False)
        pytest.skip(message)
    try:
        yield cluster
    finally:
        if not kept:
            cluster.stop()
