"""What a benchmark run is asked to do (`BenchOptions`) and the targets it is held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from jukisync.sim import synth
from jukisync.transport.amqp import QueueType, split_urls

# The targets (2 cores, broker on the same machine).
TARGET_UPDATES_PER_S: Final = 100_000.0  # end to end ...
TARGET_MAX_BUNDLE: Final = 1_000  # ... with bundles of at most this many updates
TARGET_RAW_RATIO: Final = 0.5  # of the raw ceiling's byte rate
TARGET_P99_MS: Final = 50.0  # publish → national commit ...
TARGET_PACED_RATE: Final = 1_000.0  # ... at this many updates/s

CENTRE: Final = "centre-bench"
NATIONAL: Final = "national"


Mode = Literal["all", "throughput", "latency"]


class BenchError(Exception):
    """The benchmark could not complete (a publish not confirmed, a phase timed out)."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    broker_url: str  # one URL, or a cluster's nodes comma-separated

    @property
    def broker_urls(self) -> tuple[str, ...]:
        return split_urls(self.broker_url)

    data_dir: Path
    publishers: int = 8
    updates: int = 500_000  # throughput phase
    bundle_size: int = 1_000  # throughput phase
    queue_type: QueueType = "quorum"
    mode: Mode = "all"
    raw: bool = True  # measure the raw ceiling (with the throughput phase)
    rate: float = TARGET_PACED_RATE  # latency phase: updates/s over all publishers
    latency_s: float = 15.0  # latency phase: how long it publishes
    latency_bundle_size: int = 10
    window: int = 64  # bundles in flight (awaiting confirms) per publisher
    prefetch: int = 256  # of each consumer (tier nodes and the raw relay and sink alike)
    max_batch: int = 256  # deliveries per store.apply
    max_batch_updates: int = 50_000  # updates per store.apply
    forward_batch: int = 512  # forwards per round of the aggregator
    seed: int = 1
    settle_s: float = 1.0  # idle between phases, so one's aftermath does not land in the next
    timeout_s: float = 300.0  # per phase
    profile: Path | None = None  # cProfile of the event loop during the throughput phase

    def __post_init__(self) -> None:
        if not 1 <= self.publishers <= len(synth.MUNICIPALITIES):
            raise ValueError(f"publishers must be 1..{len(synth.MUNICIPALITIES)}")
        counts = ("updates", "bundle_size", "latency_bundle_size", "window", "prefetch")
        for name in (*counts, "max_batch", "max_batch_updates", "forward_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rate <= 0 or self.latency_s <= 0 or self.timeout_s <= 0 or self.settle_s < 0:
            raise ValueError(
                "rate, latency_s and timeout_s must be positive, settle_s not negative"
            )

    @property
    def quorum_replicas(self) -> int | None:
        """Replicas of each quorum queue: one per broker address given (a cluster's
        nodes; one node alone holds the only one)."""
        return len(self.broker_urls) if self.queue_type == "quorum" else None

    @property
    def runs_throughput(self) -> bool:
        return self.mode in ("all", "throughput")

    @property
    def runs_latency(self) -> bool:
        return self.mode in ("all", "latency")

    @property
    def latency_updates(self) -> int:
        return round(self.rate * self.latency_s) if self.runs_latency else 0
