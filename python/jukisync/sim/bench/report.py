"""A benchmark report: the environment it ran on, each repeated run, the spread of its
figures (min/median/max over the runs), and the warnings that say which figures not to
trust (a phase too short, too few runs, a loaded machine)."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from jukisync.sim.bench.results import BenchResult
from jukisync.sim.benchenv import MIN_ROUNDS, Environment, short_phase_warning


@dataclass(frozen=True, slots=True)
class Spread:
    figure: str
    unit: str
    runs: int
    min: float
    median: float
    max: float


# (figure, unit, how to read it from a run; None when the run did not measure it)
_FIGURES: list[tuple[str, str, Callable[[BenchResult], float | None]]] = [
    ("raw ceiling", "MB/s", lambda r: r.raw.bytes_per_s / 1e6 if r.raw else None),
    (
        "throughput",
        "updates/s",
        lambda r: r.throughput.updates_per_s if r.throughput else None,
    ),
    ("share of raw byte rate", "×", lambda r: r.raw_ratio),
    (
        "throughput p99",
        "ms",
        lambda r: r.throughput.latency.p99_ms if r.throughput else None,
    ),
    ("paced p50", "ms", lambda r: r.latency.latency.p50_ms if r.latency else None),
    ("paced p99", "ms", lambda r: r.latency.latency.p99_ms if r.latency else None),
]

# (phase, its measured seconds in a run; None when the run did not have it)
_PHASES: list[tuple[str, Callable[[BenchResult], float | None]]] = [
    ("raw ceiling", lambda r: r.raw.elapsed_s if r.raw else None),
    ("throughput", lambda r: r.throughput.elapsed_s if r.throughput else None),
    ("latency", lambda r: r.latency.duration_s if r.latency else None),
]


def spread_of(runs: list[BenchResult]) -> list[Spread]:
    out = []
    for figure, unit, read in _FIGURES:
        values = [v for v in (read(r) for r in runs) if v is not None]
        if values:
            out.append(
                Spread(
                    figure,
                    unit,
                    len(values),
                    min(values),
                    statistics.median(values),
                    max(values),
                )
            )
    return out


def warnings_of(runs: list[BenchResult], environment: Environment) -> list[str]:
    out = list(environment.warnings())
    for phase, seconds in _PHASES:
        times = [s for s in (seconds(r) for r in runs) if s is not None]
        if times:
            # The rounds of a phase are the runs; its length the shortest run's.
            warning = short_phase_warning(f"{phase} phase", min(times), len(times))
            if warning:
                out.append(warning)
    if len(runs) < MIN_ROUNDS:
        out.append(
            f"{len(runs)} run{'s' if len(runs) != 1 else ''} (< {MIN_ROUNDS}): "
            "the spread says little; use --repeat"
        )
    return out


@dataclass(slots=True)
class BenchReport:
    environment: Environment
    runs: list[BenchResult]
    spread: list[Spread] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, environment: Environment, runs: list[BenchResult]) -> BenchReport:
        return cls(environment, runs, spread_of(runs), warnings_of(runs, environment))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchReport:
        """A report read back from its `to_json` (spread and warnings recomputed)."""
        runs = [msgspec.convert(r, type=BenchResult) for r in data["runs"]]
        environment = msgspec.convert(data["environment"], type=Environment, strict=False)
        return cls.of(environment, runs)

    @property
    def converged(self) -> bool:
        return all(r.converged for r in self.runs)

    @property
    def targets_met(self) -> bool:
        return all(r.targets_met for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment.to_json(),
            "warnings": self.warnings,
            "repeats": len(self.runs),
            "spread": [dataclasses.asdict(s) for s in self.spread],
            "converged": self.converged,
            "targets_met": self.targets_met,
            "runs": [r.to_json() for r in self.runs],
        }
