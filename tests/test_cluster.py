"""The cluster deployment (README "Running on a RabbitMQ cluster"): three RabbitMQ
nodes started by `scripts/rabbitmq-cluster`, quorum queues with three replicas, every
daemon and publisher given all three addresses. Mid-stream, a broker node is SIGKILLed
(the one leading the queues, or the one the aggregator is connected to), or its app
stopped and started, or all three restarted in turn; the quorum elects new leaders,
clients of a lost node fail over to another one, and every tier converges to the
reference: nothing lost, nothing applied twice.

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
    rabbit_cluster.restore()


def _disrupt(cluster: Cluster, net: Net, how: str) -> None:
    """One broker fault, mid-stream (national has applied something already)."""
    if how == "kill the queues' leader":
        cluster.kill(1)
    elif how == "kill the aggregator's node":
        cluster.kill(2)
    elif how == "stop_app/start_app the aggregator's node":
        cluster.ctl(2, "stop_app")
        before = net.applied(net.national)
        until(lambda: net.applied(net.national) > before, 20.0)  # flows meanwhile (or done)
        cluster.ctl(2, "start_app")
    elif how == "rolling restart":
        for n in (1, 2, 3):  # each whole rabbitmq-server stopped cleanly and started
            cluster.stop_node(n)
            cluster.restart(n)
    else:  # pragma: no cover - a typo in the parameters
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "kill the queues' leader",
        "kill the aggregator's node",
        "stop_app/start_app the aggregator's node",
        "rolling restart",
    ],
)
def test_broker_fault_mid_stream(cluster: Cluster, tmp_path: Path, how: str) -> None:
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
        size = 4000 if how == "rolling restart" else 1200  # long enough to span restarts
        updates = synthetic_updates(size, size, seed=13)
        data = write_updates(tmp_path / "changes.jsonl", updates)
        publishers = [net.publish(o, data, "--skip-others") for o in ORIGINS]
        assert until(lambda: net.applied(net.national) > 0)
        applied_before = net.applied(net.national)
        _disrupt(cluster, net, how)
        print(f"{how}: began at {applied_before} of {len(updates)} updates applied")
        for proc in publishers:
            assert proc.wait() == 0, proc.output()
        tiers = [centre, net.national]
        net.wait_converged(tiers)
        assert_matches_reference(net, tiers, net.reference())
        if how == "kill the queues' leader":  # a surviving replica leads now
            assert cluster.leader(bundles) != 1
        for daemon in (net.procs[centre], net.procs[net.national]):
            assert daemon.alive(), daemon.output()
        if how != "kill the queues' leader":  # the centre failed over to another node
            assert "connection to the broker lost" in net.procs[centre].output()
    finally:
        net.stop_all()
        cluster.restore()
        net.remove_topology()
    net.assert_consistent()
