"""What a benchmark ran on, so a figure can be judged and compared: CPU, cores, load
average before and after, Python/Rust/RabbitMQ/jukisync versions, git commit, date;
and the warnings that say when a figure should not be trusted (a phase too short to
mean anything, a machine busy with other work).

Used by `jukisync bench` (its report) and by `make bench` (pytest-benchmark's machine
info, through `bench/benchfixtures.py`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jukisync import clock

# A phase shorter than this, or timed in fewer rounds, measures start-up, caches and
# timer noise more than the work.
MIN_PHASE_S: Final = 1.0
MIN_ROUNDS: Final = 3
# Share of the machine's CPU time that processes other than the benchmark (and the local
# broker it drives) used during the run, above which its figures are not its own. This
# decides whether a run was loaded: the load average cannot, since it trails by minutes
# (1.3 before a run in which other processes used 2% of the CPU) and the load after a
# run counts the benchmark's own processes. Both are shown.
MAX_OTHERS_CPU_SHARE: Final = 0.25
# Where that share cannot be measured (no /proc/stat): load average (1 min) per core
# before the run above which other work is taken to compete with the benchmark.
MAX_LOAD_PER_CORE: Final = 0.5
RUST_ENV: Final = "JUKISYNC_RUSTC_VERSION"  # `rustc -V` of the build, when set


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _run(args: list[str], cwd: Path | None = None) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _rust_version() -> str | None:
    return os.environ.get(RUST_ENV) or _run(["rustc", "-V"])


def _jukisync_version() -> str:
    try:
        return importlib.metadata.version("jukisync")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    """The checkout's commit (with `-dirty` when it has changes), None outside one."""
    here = Path(__file__).resolve().parent
    commit = _run(["git", "rev-parse", "HEAD"], cwd=here)
    if commit is None:
        return None
    changed = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here)
    return f"{commit}-dirty" if changed else commit


def _busy_cpu_s() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and the children it has waited for (daemons a
    benchmark started and stopped), plus the local RabbitMQ server's: the run's own."""
    # Imported here: the package `jukisync.sim.bench` imports this module.
    from jukisync.sim.bench.accounting import broker_pids, cpu_of

    t = os.times()
    broker = cpu_of(broker_pids("amqp://127.0.0.1/")) or 0.0
    return t.user + t.system + t.children_user + t.children_system + broker


@dataclass(frozen=True, slots=True)
class _CpuMark:
    at: float  # monotonic
    busy_s: float
    own_s: float

    @classmethod
    def now(cls) -> _CpuMark | None:
        busy = _busy_cpu_s()
        return None if busy is None else cls(time.monotonic(), busy, _own_cpu_s())


def _load() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


@dataclass(slots=True)
class Environment:
    """Taken once before a run (`capture`) and finished after it (`finish`)."""

    date: str  # ISO 8601, from jukisync.clock (JUKISYNC_NOW fixes it)
    cpu_model: str
    cores: int
    load_before: tuple[float, float, float]  # 1, 5, 15 minutes
    load_after: tuple[float, float, float] | None
    python: str
    rust: str | None
    rabbitmq: str | None
    jukisync: str
    commit: str | None
    platform: str
    # What other processes used of all cores' time during the run (0..1), None unknown.
    others_cpu_share: float | None = None
    _start: _CpuMark | None = field(default=None, repr=False, compare=False)

    @classmethod
    def capture(cls, rabbitmq: str | None = None) -> Environment:
        return cls(
            date=clock.now().isoformat(),
            cpu_model=_cpu_model(),
            cores=os.cpu_count() or 1,
            load_before=_load(),
            load_after=None,
            python=platform.python_version(),
            rust=_rust_version(),
            rabbitmq=rabbitmq,
            jukisync=_jukisync_version(),
            commit=_git_commit(),
            platform=platform.platform(),
            _start=_CpuMark.now(),
        )

    def finish(self) -> None:
        self.load_after = _load()
        end = _CpuMark.now()
        if self._start is not None and end is not None and end.at > self._start.at:
            others = (end.busy_s - self._start.busy_s) - (end.own_s - self._start.own_s)
            share = others / ((end.at - self._start.at) * self.cores)
            self.others_cpu_share = round(min(1.0, max(0.0, share)), 3)

    @property
    def loaded(self) -> bool:
        """Whether other work competed for the CPU during the run: other processes'
        share of it, or (not measured) the load average before the run."""
        if self.others_cpu_share is not None:
            return self.others_cpu_share > MAX_OTHERS_CPU_SHARE
        return self.load_before[0] / self.cores > MAX_LOAD_PER_CORE

    def warnings(self) -> list[str]:
        if not self.loaded:
            return []
        if self.others_cpu_share is not None:
            why = (
                f"other processes used {self.others_cpu_share:.0%} of the CPU time of all "
                f"cores during the run (above {MAX_OTHERS_CPU_SHARE:.0%})"
            )
        else:
            why = (
                f"load average {self.load_before[0]:.2f} before the run on {self.cores} "
                f"cores (above {MAX_LOAD_PER_CORE:g} per core)"
            )
        return [
            f"measured on a loaded machine: {why}; figures are lower and noisier than on "
            "a quiet machine"
        ]

    def describe(self) -> str:
        """One line per fact, for the text report."""
        after = " / ".join(f"{x:.2f}" for x in self.load_after) if self.load_after else "-"
        others = (
            f"; other processes' CPU during the run {self.others_cpu_share:.0%}"
            if self.others_cpu_share is not None
            else ""
        )
        return "\n".join(
            [
                f"date {self.date}; commit {self.commit or '(not a git checkout)'}",
                f"CPU {self.cpu_model}, {self.cores} cores; {self.platform}",
                f"load average (1/5/15 min) before "
                f"{' / '.join(f'{x:.2f}' for x in self.load_before)}, after {after}{others}",
                f"Python {self.python}; {self.rust or 'rustc unknown'}; "
                f"broker {self.rabbitmq or '-'}; jukisync {self.jukisync}",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["_start"]
        data["loaded"] = self.loaded
        return data


def short_phase_warning(what: str, seconds: float, rounds: int = MIN_ROUNDS) -> str | None:
    """A warning when `what` was timed too briefly (or in too few rounds) to mean much."""
    problems = []
    if seconds < MIN_PHASE_S:
        problems.append(f"{seconds:.3f} s in all (< {MIN_PHASE_S:g} s)")
    if rounds < MIN_ROUNDS:
        problems.append(f"{rounds} round{'s' if rounds != 1 else ''} (< {MIN_ROUNDS})")
    if not problems:
        return None
    return f"{what}: measured {' and '.join(problems)}: not enough to trust the figure"
