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

import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from clusterkit import Cluster, node_name
from daemonkit import (
    ORIGINS,
    PREFECTURES,
    Net,
    Proc,
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


def _net(cluster: Cluster, tmp_path: Path, query: str = "") -> Net:
    """A centre, national and the publishers on the cluster (`query` added to each
    node's URL)."""
    c1, c2, c3 = (url + query for url in cluster.urls)
    return Net(
        tmp_path,
        (c1, c2, c3),
        node_urls={"centre": (c2, c3, c1), "national": (c3, c1, c2), "publisher": (c3, c1, c2)},
        broker_extra="quorum_replicas = 3\n",
        max_updates=2,
    )


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
    net = _net(cluster, tmp_path)
    [centre] = net.centres
    try:
        net.declare_centre_queue(centre)  # from node 1, so led by it
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


# The paused node's clients notice through AMQP heartbeats (aiormq: `?heartbeat=` in
# the URL), so a small one keeps the test short; the cluster's own net_ticktime (10 s,
# scripts/rabbitmq-cluster) decides when its peers count the node as gone.
HEARTBEAT_S = 2


def _connected_to(cluster: Cluster, clients: list[Proc], nodes: tuple[int, ...]) -> bool:
    """Whether every client process still running has a connection (named `... pid N`)
    on one of `nodes` (its Erlang pid names the node); asked of node 1."""
    listing = cluster.ctl(1, "list_connections", "pid", "client_properties", "--no-table-headers")
    prefixes = tuple(f"<{node_name(n)}." for n in nodes)
    marker = '{"connection_name","'
    pids = set()
    for line in listing.splitlines():
        erlang_pid, _, properties = line.strip().partition("\t")
        if erlang_pid.startswith(prefixes) and marker in properties:
            name = properties.split(marker, 1)[1].split('"', 1)[0]
            pids.add(name.rsplit(" pid ", 1)[-1])
    return all(str(p.pid) in pids for p in clients if p.alive())


def test_minority_partition_mid_stream(cluster: Cluster, tmp_path: Path) -> None:
    # How the minority is made: node 3's Erlang VM is SIGSTOPped. There is no iptables
    # or nft on this machine to cut its ports on loopback, and suspending processes
    # inside the VM leaves the kernel answering TCP for it. A stopped VM neither answers
    # nor closes a socket: its peers lose it on the distribution tick timeout (a
    # partition in which it is the minority), its clients on missed heartbeats. When
    # it resumes, either it sees its peers gone, pauses (pause_minority) and rejoins,
    # or (it was stopped while they left) it comes back split off, and is restarted
    # as the README tells operators (`Cluster.heal`).
    # National and the publishers connect to node 3 first, so they are the clients
    # that must fail over; the centre (node 2) and the queues' leaders (node 1) stay.
    net = _net(cluster, tmp_path, f"?heartbeat={HEARTBEAT_S}")
    [centre] = net.centres
    try:
        net.declare_centre_queue(centre)  # from node 1, so led by it
        net.declare_centre_queue(net.national)
        net.start_and_wait(net.national, centre)
        # The publishers stream their input (`--follow -`): the first half before the
        # pause, the second while node 3 is paused, so traffic is bound to flow then.
        updates = synthetic_updates(1500, 1500, seed=13)
        lines = [msgspec.json.encode(u) + b"\n" for u in updates]
        half = len(lines) // 2
        publishers = [
            net.publish(o, "-", "--follow", "--skip-others", stdin=subprocess.PIPE) for o in ORIGINS
        ]
        pipes = [p.popen.stdin for p in publishers]
        for pipe in pipes:
            assert pipe is not None
            pipe.writelines(lines[:half])
            pipe.flush()
        assert until(lambda: net.applied(net.national) == half)
        clients = [net.procs[net.national], *publishers]
        listing = ("list_connections", "pid", "client_properties")
        assert until(lambda: _connected_to(cluster, clients, (3,)), 30.0, poll_s=0.5), cluster.ctl(
            1, *listing
        )
        cluster.pause(3)
        for pipe in pipes:
            assert pipe is not None
            pipe.writelines(lines[half:])
            pipe.close()
        # The others count node 3 out; while it is still paused, the traffic flows on
        # (its clients could not have moved it otherwise), and national and the
        # publishers still publishing are connected to a node of the majority.
        assert until(lambda: not cluster.connected(1, 3), 60.0, poll_s=0.5), (
            "node 1 still sees the paused node 3"
        )
        assert until(lambda: _connected_to(cluster, clients, (1, 2)), 60.0, poll_s=0.5), (
            cluster.ctl(1, *listing)
        )
        assert until(lambda: net.applied(net.national) > half, 60.0), "no progress"
        cluster.resume(3)
        healed = cluster.heal(3)
        print("node 3 " + ("rejoined by itself" if healed else "was split off: app restarted"))
        for proc in publishers:
            assert proc.wait() == 0, proc.output()
        tiers = [centre, net.national]
        net.wait_converged(tiers)
        assert_matches_reference(net, tiers, net.reference())
        for daemon in (net.procs[centre], net.procs[net.national]):
            assert daemon.alive(), daemon.output()
        assert "connection to the broker lost" in net.procs[net.national].output()
    finally:
        net.stop_all()
        cluster.restore()
        net.remove_topology()
    net.assert_consistent()
