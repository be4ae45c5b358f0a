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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jukisync import clock

# A phase shorter than this, or timed in fewer rounds, measures start-up, caches and
# timer noise more than the work.
MIN_PHASE_S: Final = 1.0
MIN_ROUNDS: Final = 3
# Load average (1 min) per core above which other work competes with the benchmark.
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
        )

    def finish(self) -> None:
        self.load_after = _load()

    @property
    def loaded(self) -> bool:
        """Whether other work competed for the CPU before or after the run."""
        loads = [self.load_before[0]] + ([self.load_after[0]] if self.load_after else [])
        return max(loads) / self.cores > MAX_LOAD_PER_CORE

    def warnings(self) -> list[str]:
        if not self.loaded:
            return []
        after = f", {self.load_after[0]:.2f} after" if self.load_after else ""
        return [
            f"measured on a loaded machine: load average {self.load_before[0]:.2f} before"
            f"{after} on {self.cores} cores (above {MAX_LOAD_PER_CORE:g} per core); "
            "figures are lower and noisier than on a quiet machine"
        ]

    def describe(self) -> str:
        """One line per fact, for the text report."""
        after = " / ".join(f"{x:.2f}" for x in self.load_after) if self.load_after else "-"
        return "\n".join(
            [
                f"date {self.date}; commit {self.commit or '(not a git checkout)'}",
                f"CPU {self.cpu_model}, {self.cores} cores; {self.platform}",
                f"load average (1/5/15 min) before "
                f"{' / '.join(f'{x:.2f}' for x in self.load_before)}, after {after}",
                f"Python {self.python}; {self.rust or 'rustc unknown'}; "
                f"broker {self.rabbitmq or '-'}; jukisync {self.jukisync}",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
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
