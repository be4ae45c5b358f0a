"""A three-node RabbitMQ cluster for the `cluster` tests, run by the project's own
`scripts/rabbitmq-cluster` (the README's commands), and the operations the tests do to
its nodes: find a queue's leader, SIGKILL a node, pause and resume one, start it again.

Every broker tool runs on the real clock (`externaltools.run_tool`); every wait polls
with a bounded timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from daemonkit import until
from externaltools import real_clock_env

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "rabbitmq-cluster"
NODES = (1, 2, 3)
START_TIMEOUT_S = 300.0


def node_name(n: int) -> str:
    return f"jukisync-c{n}@localhost"


class Cluster:
    """The cluster whose data, logs and cookie live under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.urls: tuple[str, ...] = ()
        self.paused: set[int] = set()

    def _run(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        env = {**real_clock_env(), "JUKISYNC_CLUSTER_DIR": str(self.directory)}
        done = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmq-cluster {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def start(self) -> None:
        """Start (or find running) all three nodes, joined; raises when it cannot."""
        out = self._run("start", str(self.directory), timeout=START_TIMEOUT_S)
        self.urls = tuple(out.strip().splitlines()[-1].split(","))
        assert len(self.urls) == 3, out

    def stop(self) -> None:
        self._run("stop", str(self.directory), timeout=START_TIMEOUT_S, check=False)

    def url(self, n: int) -> str:
        return self.urls[n - 1]

    def alive(self, n: int) -> bool:
        try:
            pid = int((self.directory / f"c{n}" / "pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def ctl(self, n: int, *args: str) -> str:
        """rabbitmqctl against node `n`."""
        return self._run("ctl", str(n), "-q", *args)

    def running_nodes(self) -> list[str]:
        for n in NODES:
            if self.alive(n):
                try:
                    status = json.loads(self.ctl(n, "cluster_status", "--formatter", "json"))
                except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired):
                    continue
                return sorted(status.get("running_nodes", []))
        return []

    def wait_all_running(self, timeout: float = START_TIMEOUT_S) -> None:
        assert until(lambda: len(self.running_nodes()) == 3, timeout, poll_s=1.0), (
            f"cluster not back to 3 running nodes: {self.running_nodes()}"
        )

    def leader(self, queue: str) -> int:
        """The node (1..3) holding the leader of quorum queue `queue` (full name)."""
        for n in NODES:
            if not self.alive(n):
                continue
            for line in self.ctl(
                n, "list_queues", "name", "leader", "--no-table-headers"
            ).splitlines():
                name, _, leader = line.strip().partition("\t")
                if name == queue:
                    return next(m for m in NODES if node_name(m) == leader.strip())
            break
        raise AssertionError(f"queue {queue!r} not found on the cluster")

    def kill(self, n: int) -> None:
        """SIGKILL node `n`'s Erlang VM (no clean shutdown), and wait until it is gone."""
        os.kill(self._pid(n), signal.SIGKILL)
        assert until(lambda: not self.alive(n), 30.0)

    def pause(self, n: int) -> None:
        """SIGSTOP node `n`'s Erlang VM: it neither answers nor closes anything, the
        minority side of a partition as its peers and clients see it."""
        os.kill(self._pid(n), signal.SIGSTOP)
        self.paused.add(n)

    def resume(self, n: int) -> None:
        os.kill(self._pid(n), signal.SIGCONT)
        self.paused.discard(n)

    def connected(self, n: int, m: int) -> bool:
        """Whether node `n` (running) still has a distribution link to node `m`: asks
        `n` alone, so it answers while `m` is paused (cluster_status would wait on `m`)."""
        return node_name(m) in self.ctl(n, "eval", "nodes().")

    def partitioned(self) -> set[int]:
        """Nodes some running node reports a partition with (`cluster_status`)."""
        found: set[int] = set()
        for n in NODES:
            if not self.alive(n) or n in self.paused:
                continue
            try:
                status = json.loads(self.ctl(n, "cluster_status", "--formatter", "json"))
            except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired):
                continue
            for node, others in (status.get("partitions") or {}).items():
                found |= {m for m in NODES if node_name(m) in (node, *others)}
        return found

    def heal(self, n: int, timeout: float = 120.0) -> bool:
        """After node `n` resumed: until it rejoined by itself (pause_minority paused
        it, then it saw the majority again), or, when it came back into a partition
        that pause_minority leaves in place (it never saw its peers go: it was
        stopped meanwhile), restart its app as an operator would (README). True if
        it healed by itself."""
        state: list[str] = []

        def settled() -> bool:
            if self.partitioned():
                state.append("partitioned")
                return True
            return len(self.running_nodes()) == 3

        assert until(settled, timeout, poll_s=1.0), f"node {n} neither rejoined nor split"
        if not state:
            return True
        self.ctl(n, "stop_app")
        self.ctl(n, "start_app")
        assert until(lambda: not self.partitioned(), timeout, poll_s=1.0), self.partitioned()
        self.wait_all_running(timeout)
        return False

    def _pid(self, n: int) -> int:
        return int((self.directory / f"c{n}" / "pid").read_text())

    def stop_node(self, n: int) -> None:
        """A clean stop of node `n`'s whole `rabbitmq-server` (as for maintenance)."""
        pidfile = self.directory / f"c{n}" / "pid"
        self.ctl(n, "stop", str(pidfile))
        assert until(lambda: not self.alive(n), 60.0)

    def restore(self) -> None:
        """Every node running again: killed or stopped ones started, stopped apps
        started, paused ones resumed; then until all 3 run."""
        for n in sorted(self.paused):
            self.resume(n)
        for n in sorted(self.partitioned() - {1}):  # node 1's side is kept
            self.ctl(n, "stop_app")
            self.ctl(n, "start_app")
        running = self.running_nodes()
        for n in NODES:
            if not self.alive(n):
                self.restart(n)
            elif node_name(n) not in running:
                self.ctl(n, "start_app")
        self.wait_all_running()

    def restart(self, n: int) -> None:
        """Start node `n` again (it rejoins the cluster) and wait until all 3 run."""
        self._run("node-start", str(n), str(self.directory), timeout=START_TIMEOUT_S)
        self.wait_all_running()
