"""The cluster deployment (README "Running on a RabbitMQ cluster"): three RabbitMQ
nodes started by `scripts/rabbitmq-cluster`, quorum queues with three replicas, every
daemon and publisher given all three addresses. A broker node is SIGKILLed mid-stream;
the quorum elects a new leader, clients of the lost node fail over to another one, and
every tier converges to the reference: nothing lost, nothing applied twice.

Marked `cluster` (`make test-cluster`, `pytest -m cluster`): each test starts the
session's cluster once and restores every node it killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterkit import Cluster
from daemonkit import (
    ORIGINS,
    PREFECTURES,
    Net,
    assert_matches_reference,
    synthetic_updates,
    until,
    write_updates,
)
from jukisync.tier.assembly import national_queue_name
from jukisync.transport.amqp import bundle_queue_name

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(rabbit_cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster, with all three nodes running before and after the test."""
    rabbit_cluster.wait_all_running()
    yield rabbit_cluster
    for n in (1, 2, 3):
        if not rabbit_cluster.alive(n):
            rabbit_cluster.restart(n)
    rabbit_cluster.wait_all_running()


@pytest.mark.parametrize("victim", ["queue leader", "aggregator's node"])
def test_broker_node_sigkilled_mid_stream(cluster: Cluster, tmp_path: Path, victim: str) -> None:
    # Where each client connects first: the centre to node 2, national and the
    # publishers to node 3; the queues are declared (so led) from node 1. Killing
    # node 1 loses only leaders; killing node 2 also cuts the centre's connection.
    c1, c2, c3 = cluster.urls
    net = Net(
        tmp_path,
        cluster.urls,
        node_urls={"centre": (c2, c3, c1), "national": (c3, c1, c2), "publisher": (c3, c1, c2)},
        broker_extra="quorum_replicas = 3\n",
        max_updates=2,
    )
    [centre] = net.centres
    try:
        net.declare_centre_queue(centre)
        net.declare_centre_queue(net.national)
        bundles = net.namespace + bundle_queue_name(centre, PREFECTURES)
        forwards = net.namespace + national_queue_name(net.national)
        assert cluster.leader(bundles) == 1 and cluster.leader(forwards) == 1
        net.start_and_wait(net.national, centre)
        updates = synthetic_updates(1200, 1200, seed=13)
        data = write_updates(tmp_path / "changes.jsonl", updates)
        publishers = [net.publish(o, data, "--skip-others") for o in ORIGINS]
        assert until(lambda: net.applied(net.national) > 0)
        node = 1 if victim == "queue leader" else 2
        cluster.kill(node)
        applied_at_kill = net.applied(net.national)
        print(f"killed node {node} at {applied_at_kill} of {len(updates)} updates")
        for proc in publishers:
            assert proc.wait() == 0, proc.output()
        tiers = [centre, net.national]
        net.wait_converged(tiers)
        assert_matches_reference(net, tiers, net.reference())
        if node == 1:  # a surviving replica leads now
            assert cluster.leader(bundles) != 1
        for daemon in (net.procs[centre], net.procs[net.national]):
            assert daemon.alive(), daemon.output()
        if node == 2:  # the centre failed over to another node
            assert "connection to the broker lost" in net.procs[centre].output()
    finally:
        net.stop_all()
        if not cluster.alive(1) or not cluster.alive(2):
            for n in (1, 2):
                if not cluster.alive(n):
                    cluster.restart(n)
        net.remove_topology()
    net.assert_consistent()
