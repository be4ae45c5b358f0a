"""What an operator would have seen during a drill (`sim/drills.py`).

At each step of a drill, `Observer.look` takes, for every tier, what the operator's
tools show: the `jukisync status` verdict (`tier.verdict.judge`, against the twin
centre where there is one), the node's Prometheus metrics as its `/metrics` renders
them (`tier.observability.NodeMetrics`, the very collectors a daemon registers) and
the alerts of `deploy/prometheus/alerts.yml` whose expressions those metrics satisfy
(`ALERTS`; a drill is too short for their `for:` durations, so an alert listed here
is one that is pending and fires if the state lasts). A stopped node has no metrics:
its scrape fails, which is `JukisyncDown`. `LogTap` keeps the log lines the daemons
would have written meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from jukisync.sim.network import Network
from jukisync.tier.node import TierNode
from jukisync.tier.observability import NodeMetrics
from jukisync.tier.verdict import judge

__all__ = ["ALERTS", "DOWN", "LogTap", "Observer", "Step", "TierView"]

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def _most(samples: Samples, name: str) -> float:
    return max((value for _, value in samples.get(name, [])), default=0.0)


# The alert rules of deploy/prometheus/alerts.yml, on the metrics of one scrape (a test
# checks that every name here is a rule there, with the same threshold).
ALERTS: dict[str, Callable[[Samples], bool]] = {
    "JukisyncNodeFailed": lambda s: _total(s, "jukisync_up") == 0,
    "JukisyncDisconnected": lambda s: (
        _total(s, "jukisync_connected") == 0 or _total(s, "jukisync_consuming") == 0
    ),
    "JukisyncOriginHalted": lambda s: _most(s, "jukisync_origin_halted") == 1,
    "JukisyncOriginLagging": lambda s: _most(s, "jukisync_origin_lag_seconds") > 300,
    "JukisyncOriginLaggingSeqs": lambda s: _most(s, "jukisync_origin_lag_seqs") > 1000,
    "JukisyncForwardBacklog": lambda s: _total(s, "jukisync_forward_backlog") > 10000,
}
DOWN = "JukisyncDown"  # `up{job="jukisync"} == 0`: the scrape of a stopped node fails

# The metrics a drill shows (summed over origins where they are per origin).
SHOWN = (
    "jukisync_origin_lag_seqs",
    "jukisync_origin_pending_bundles",
    "jukisync_origin_halted",
    "jukisync_store_quarantine_open",
    "jukisync_forward_backlog",
    "jukisync_store_records",
)


@dataclass(slots=True)
class TierView:
    """One tier as its operator sees it at one moment."""

    running: bool
    verdict: str  # `jukisync status` (with --compare against the twin for a centre)
    alerts: list[str]
    metrics: dict[str, float]


@dataclass(slots=True)
class Step:
    title: str
    happened: list[str] = field(default_factory=list)
    seen: dict[str, TierView] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Observer:
    """Looks at every tier of `network` the way its operator's tools would."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._metrics: dict[int, NodeMetrics] = {}

    def _scrape(self, node: TierNode) -> Samples:
        metrics = self._metrics.get(id(node))
        if metrics is None or metrics.node is not node:
            metrics = self._metrics[id(node)] = NodeMetrics(node)
        connected = getattr(node.transport, "connected", True)
        metrics.set_state(
            up=node.failure is None, connected=connected, consuming=node.consuming, reconnects=0
        )
        samples: Samples = {}
        for family in metrics.registry.collect():
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return samples

    def _twin(self, name: str) -> str | None:
        """What `status --compare` is run against: a centre's twin, national's first
        running centre."""
        net = self.network
        others = [c for c in net.spec.centres if c != name and c in net.centres]
        if name != "national":
            return others[0] if others else None
        running = [c for c in others if c not in net.stopped]
        return running[0] if running else None

    def view(self, name: str) -> TierView:
        node = self.network.tier(name)
        running = name not in self.network.stopped
        twin = self._twin(name)
        if twin is not None and running and twin in self.network.stopped:
            twin = None  # a running centre is not compared with its down twin
        other = self.network.tier(twin).store if twin is not None else None
        verdict = judge(node.store, other, twin or "").line
        if not running:
            return TierView(False, f"down; store: {verdict}", [DOWN], {})
        samples = self._scrape(node)
        alerts = [name for name, fires in ALERTS.items() if fires(samples)]
        return TierView(True, verdict, alerts, {m: _total(samples, m) for m in SHOWN})

    def look(self, title: str, happened: list[str] | None = None) -> Step:
        names = [n for n in (*self.network.spec.centres, "national") if self._known(n)]
        return Step(title, list(happened or []), {n: self.view(n) for n in names})

    def _known(self, name: str) -> bool:
        try:
            self.network.tier(name)
        except KeyError:
            return False
        return True


class LogTap(logging.Handler):
    """Keeps the log lines of the nodes (INFO and up) for the step in progress, instead
    of printing them: the drill shows them under the step they belong to."""

    def __init__(self, per_step: int = 8) -> None:
        super().__init__(logging.INFO)
        self.per_step = per_step
        self.lines: list[str] = []
        self.dropped = 0
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not _telling(record.getMessage()):
            return
        if len(self.lines) < self.per_step:
            self.lines.append(self.format(record))
        else:
            self.dropped += 1

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        if self.dropped:
            lines.append(f"... and {self.dropped} more line(s)")
        self.dropped = 0
        return lines

    @contextmanager
    def attached(self) -> Iterator[LogTap]:
        logger = logging.getLogger("jukisync")
        level, propagate = logger.level, logger.propagate
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # shown by the drill, not on stderr as well
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate


_TELLING = ("HALTED", "recovered", "behind", "gap", "repair", "resend", "dropped", "released")


def _telling(message: str) -> bool:
    """INFO lines an operator reads in a drill (not the per-batch 'applied' lines)."""
    return any(word in message for word in _TELLING)
