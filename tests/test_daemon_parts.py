"""The pieces under `jukisync run` and `jukisync publish`, without a broker: bundles
capped in bytes, crash-safe file progress, a pump that refuses to skip a bundle too
large to send, a node that fails visibly when its subscription ends, the health and
metrics endpoint, and the lock that keeps two processes off one store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jukisync import _core, lockfile
from jukisync.publisher.bundling import ENVELOPE_OVERHEAD, BundlePolicy, chunk
from jukisync.publisher.node import PublisherFailed, PublisherNode
from jukisync.publisher.origin import Publisher
from jukisync.tier.assembly import assemble_tier
from jukisync.tier.node import NodeFailed
from jukisync.tier.observability import HttpEndpoint, NodeMetrics
from jukisync.transport.base import (
    Delivery,
    MessageTooLarge,
    Subscription,
    TransportUnavailable,
)
from jukisync.transport.inprocess import InProcessNetwork, InProcessTransport
from jukisync.wire.codes import CodeError, validate_update
from netkit import YAMAGUCHI_CITY, KeyRing, update

ORIGIN = YAMAGUCHI_CITY


def publisher(tmp_path: Path, policy: BundlePolicy, *, check_content: bool = True) -> Publisher:
    """A publisher; without `check_content` it checks only that updates fit a bundle
    (so tests can make updates larger than the content rules allow)."""
    return Publisher(
        ORIGIN,
        _core.generate_signing_key(),
        "k1",
        tmp_path / "outbox",
        policy=policy,
        sync=False,
        validate=validate_update if check_content else (lambda u: None),
    )


# --- bundles capped in bytes -----------------------------------------------------------


def test_chunk_cuts_at_count_or_bytes_and_keeps_the_rest_open() -> None:
    policy = BundlePolicy(max_updates=3, max_bytes=ENVELOPE_OVERHEAD + 4096)
    assert chunk([1] * 7, policy, final=False) == [3, 6]  # the 7th stays open
    assert chunk([1] * 7, policy, final=True) == [3, 6, 7]
    # 1500 + 1500 fit in 4096 bytes, a third one would not.
    assert chunk([1500] * 5, policy, final=True) == [2, 4, 5]
    assert chunk([5000, 10], policy, final=True) == [1, 2]  # too big alone: its own
    assert chunk([], policy, final=True) == []
    with pytest.raises(ValueError, match="at least 4096"):
        BundlePolicy(max_bytes=1000)


def test_bundles_stay_under_max_bytes(tmp_path: Path) -> None:
    limit = 8192
    p = publisher(tmp_path, BundlePolicy(max_updates=500, linger_s=60, max_bytes=limit))
    p.add_many([update(ORIGIN, n) for n in range(120)])
    sealed_early = p.unconfirmed_count()
    assert sealed_early > 0  # full by bytes long before 500 updates
    p.flush()
    entries = p.unconfirmed()
    assert all(len(e.envelope) <= limit for e in entries)
    assert [e.first_seq for e in entries[1:]] == [e.last_seq + 1 for e in entries[:-1]]
    assert entries[-1].last_seq == 120
    assert len(entries) >= 120 * 300 // limit  # an update is about 300-400 bytes
    p.close()


def test_an_update_larger_than_a_bundle_is_refused(tmp_path: Path) -> None:
    p = publisher(tmp_path, BundlePolicy(max_bytes=4096), check_content=False)
    huge = msgspec.structs.replace(update(ORIGIN, 1), address="山口市" + "一" * 2000)
    with pytest.raises(CodeError, match="more than a bundle may hold"):
        p.validate(huge)
    with pytest.raises(CodeError):
        p.add_many([update(ORIGIN, 2), huge])
    assert p.next_seq == 1  # all or none
    p.close()


def test_file_progress_is_kept_with_the_updates_it_covers(tmp_path: Path) -> None:
    policy = BundlePolicy(max_updates=4)
    p = publisher(tmp_path, policy)
    key = b"file:abc"
    assert p.progress(key) is None
    p.add_many([update(ORIGIN, n) for n in range(5)], progress=(key, b"7"))
    p.add_many([], progress=(key, b"9"))  # only bad lines in that chunk
    p.close()
    again = Publisher(ORIGIN, _core.generate_signing_key(), "k1", tmp_path / "outbox")
    assert again.progress(key) == b"9" and again.next_seq == 6
    assert again.progress(b"file:other") is None
    again.close()


# --- the pump and MessageTooLarge -----------------------------------------------------


class LimitedTransport(InProcessTransport):
    """The in-process transport with a message size limit, as RabbitMQ's has; it may
    say so (`max_message_bytes`) or only refuse."""

    def __init__(self, network: InProcessNetwork, name: str, limit: int, says: bool) -> None:
        super().__init__(network, name)
        self.limit = limit
        self.max_message_bytes = limit if says else None

    async def publish_bundle(self, origin: str, envelope: bytes) -> None:
        if len(envelope) > self.limit:
            raise MessageTooLarge(f"{len(envelope)} bytes")
        await super().publish_bundle(origin, envelope)


@pytest.mark.parametrize("says", [True, False], ids=["limit-known", "limit-unknown"])
async def test_a_bundle_too_large_stops_the_pump_visibly(tmp_path: Path, says: bool) -> None:
    network = InProcessNetwork()
    centre = network.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    p = publisher(tmp_path, BundlePolicy(max_updates=2, linger_s=60), check_content=False)
    p.add_many([update(ORIGIN, n) for n in range(4)])  # two small bundles
    p.add_many([msgspec.structs.replace(update(ORIGIN, 9), address="亀山町" * 400)] * 2)
    p.add_many([update(ORIGIN, n) for n in range(10, 12)])  # one after the big one
    sizes = [len(e.envelope) for e in p.unconfirmed()]
    limit = sizes[0] + 100
    assert sizes[2] > limit
    node = PublisherNode(p, LimitedTransport(network, "pub", limit, says))
    await node.start()
    with pytest.raises(PublisherFailed, match="seq 5-6"):
        await asyncio.wait_for(node.drain(), 10)
    assert isinstance(node.failure, PublisherFailed)
    await node.stop()
    # The outbox keeps the big one (for a run with a higher limit). With the limit
    # known, the bundle after it was held back too: nothing overtook it.
    unconfirmed = [e.first_seq for e in p.unconfirmed()]
    if says:
        assert network.depth("q") == 2 and unconfirmed == [5, 7]
    else:
        assert unconfirmed[0] == 5
    p.close()


async def test_the_publisher_starts_and_accepts_while_the_broker_is_down(
    tmp_path: Path,
) -> None:
    network = InProcessNetwork()
    centre = network.transport("centre")
    await centre.declare_bundle_queue("q", ["35"])
    network.available = False
    p = publisher(tmp_path, BundlePolicy(max_updates=2, linger_s=0.01))
    node = PublisherNode(p, network.transport("pub"), retry_s=0.01)
    await node.start()
    p.add_many([update(ORIGIN, n) for n in range(6)])
    node.notify()
    drained = asyncio.ensure_future(node.drain())
    async with asyncio.timeout(10):  # a bound, not a pace: it polls a state
        while not node.unavailable:
            await asyncio.sleep(0.005)
    assert not drained.done()
    network.available = True
    await asyncio.wait_for(drained, 10)
    assert network.depth("q") == 3 and not node.unavailable
    await node.stop()
    p.close()


# --- the node fails visibly -----------------------------------------------------------


class EndingSubscription(Subscription):
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._items()

    async def _items(self) -> AsyncIterator[Delivery]:
        if self.error is not None:
            raise self.error
        return
        yield  # an async generator that ends at once

    async def close(self) -> None:
        pass


class BrokenTransport(InProcessTransport):
    def __init__(self, network: InProcessNetwork, error: Exception | None) -> None:
        super().__init__(network, "broken")
        self.error = error

    def consume_forwards(self, queue: str, *, prefetch: int = 256) -> Subscription:
        return EndingSubscription(self.error)


@pytest.mark.parametrize("error", [None, RuntimeError("queue refused")])
async def test_a_subscription_that_ends_fails_the_node(
    tmp_path: Path, error: Exception | None
) -> None:
    parts = await assemble_tier(
        KeyRing().national_config(tmp_path), transport=BrokenTransport(InProcessNetwork(), error)
    )
    node = parts.node
    await node.start()
    await asyncio.wait_for(node.failed.wait(), 5)
    assert isinstance(node.failure, NodeFailed)
    assert ("queue refused" in str(node.failure)) == (error is not None)
    assert not node.running and not node.consuming
    await node.stop()


# --- health and metrics ---------------------------------------------------------------


async def _request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_http_endpoint_answers_health_metrics_and_nothing_else(tmp_path: Path) -> None:
    parts = await assemble_tier(
        KeyRing().national_config(tmp_path), transport=InProcessNetwork().transport("national")
    )
    metrics = NodeMetrics(parts.node)
    healthy = [False]
    endpoint = HttpEndpoint(
        "127.0.0.1",
        0,
        health=lambda: (healthy[0], {"status": "ok" if healthy[0] else "starting"}),
        metrics=metrics,
        refresh=lambda: metrics.set_state(
            up=True, connected=healthy[0], consuming=False, reconnects=0
        ),
    )
    await endpoint.start()
    assert endpoint._server is not None
    port = endpoint._server.sockets[0].getsockname()[1]
    try:
        status, body = await _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, json.loads(body)) == (503, {"status": "starting"})
        healthy[0] = True
        status, body = await _request(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert status == 200
        status, body = await _request(port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert status == 200 and families["jukisync_connected"].samples[0].value == 1
        assert "jukisync_store_records" in families and "jukisync_batch_seconds" in families
        status, body = await _request(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")
        assert (await _request(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await _request(port, b"POST /healthz HTTP/1.1\r\n\r\n"))[0] == 405
    finally:
        await endpoint.close()


async def test_metrics_count_results_per_origin(tmp_path: Path) -> None:
    from storekit import Origin

    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    first = origin.bundle([update(ORIGIN, 1)])
    second = origin.bundle([update(ORIGIN, 2), update(ORIGIN, 3)])
    store = _core.Store(
        str(tmp_path / "store"),
        role="national",
        registry=ring.registry(),
        require_attestation=False,
    )
    parts = await assemble_tier(
        ring.national_config(tmp_path), store=store, transport=InProcessNetwork().transport("n")
    )
    metrics = NodeMetrics(parts.node)
    results: Sequence[_core.ApplyResult] = store.apply([second, b"junk", first, first])
    metrics.observe(results, 0.002)
    text = metrics.render("")[0].decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    o = (("origin", ORIGIN),)
    assert samples[("jukisync_gaps_total", o)] == 1
    assert samples[("jukisync_applied_bundles_total", o)] == 2  # first, and second released
    assert samples[("jukisync_applied_updates_total", o)] == 1  # released ones not counted
    assert samples[("jukisync_duplicates_total", o)] == 1
    assert samples[("jukisync_rejected_total", (("kind", "security"), ("origin", "unknown")))] == 1
    assert samples[("jukisync_origin_head_seq", o)] == 3
    assert samples[("jukisync_origin_pending_bundles", o)] == 0
    assert samples[("jukisync_batch_seconds_count", ())] == 1


# --- one process per store ------------------------------------------------------------


def test_lock_keeps_a_second_process_out(tmp_path: Path) -> None:
    import subprocess
    import sys

    held = lockfile.hold(tmp_path / "store", "daemon.lock", "store")
    probe = (
        "import sys; from jukisync import lockfile\n"
        "try:\n    lockfile.hold(sys.argv[1], 'daemon.lock', 'store')\n"
        "except lockfile.LockHeld as e:\n    print(e); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "store")], capture_output=True, text=True
    )
    assert done.returncode == 3 and "in use by another process" in done.stdout
    held.release()
    again = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "store")])
    assert again.returncode == 0


def test_transport_unavailable_is_not_message_too_large() -> None:
    # Retrying helps one and not the other; the pump tells them apart by type.
    assert not issubclass(MessageTooLarge, TransportUnavailable)


# --- assembly ---------------------------------------------------------------------------


async def test_assembly_builds_the_node_its_config_describes(tmp_path: Path) -> None:
    import msgspec

    from jukisync.config import QueryServiceConfig, ReplicationConfig, TierLimits
    from jukisync.exitcodes import ExitCode
    from jukisync.tier.assembly import StartupError, national_queue_name

    base = KeyRing().national_config(tmp_path)
    limits = TierLimits(max_batch=7, forward_batch=9, map_size=1 << 26)
    replication = ReplicationConfig(resend_interval_s=0.25, announce_interval_s=3.0)
    config = msgspec.structs.replace(base, limits=limits, replication=replication)
    parts = await assemble_tier(config, transport=InProcessNetwork().transport("national"))
    assert parts.queue == national_queue_name("national") == "jukisync.forwards.national"
    node = parts.node.config
    assert (node.queue, node.role, node.max_batch, node.forward_batch) == (
        parts.queue,
        "national",
        7,
        9,
    )
    assert node.resend_interval_s == 0.25 and node.announce_interval_s == 3.0
    assert node.heads_queue == "jukisync.heads.national"
    assert node.prefetch == config.broker.prefetch
    assert parts.queries is None  # no [query] section
    assert (tmp_path / "store" / "registry.bin").is_file()  # trust files beside the store

    # Queries are served over RabbitMQ only: refused with the in-process transport.
    policy = Path(__file__).resolve().parent.parent / "config" / "policy.example.toml"
    with_query = msgspec.structs.replace(
        base, store=str(tmp_path / "other"), query=QueryServiceConfig(policy=str(policy))
    )
    with pytest.raises(StartupError, match="RabbitMQ only") as refused:
        await assemble_tier(with_query, transport=InProcessNetwork().transport("n"))
    assert refused.value.code == ExitCode.CONFIG
