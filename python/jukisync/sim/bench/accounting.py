"""CPU and disk accounting of the run, from /proc. Kept on /proc rather than psutil: the
disk counters must be found by the (major, minor) of the data directory's device, which
psutil (keyed by device name) does not give, and the rest is two small reads; Linux is
the only platform the benchmark is run on."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

# --- CPU accounting ------------------------------------------------------------------------


def process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def broker_pids(url: str) -> list[int]:
    """The local RabbitMQ server's Erlang VM (not `rabbitmqctl`'s), when the broker runs
    on this machine; only read, for its CPU time."""
    if URL(url).host not in ("127.0.0.1", "localhost", "::1"):
        return []
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if not Path(entry.path, "comm").read_text().startswith("beam"):
                    continue
                if b"rabbit boot" in Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" "):
                    pids.append(int(entry.name))
    return pids


def cpu_of(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of processes (None if none could be read)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    read = False
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            read = True
    return total / ticks if read else None


def disk_stats(directory: Path) -> tuple[int, int] | None:
    """(sectors written, ms spent doing I/O) of the block device holding `directory`."""
    dev = os.stat(directory).st_dev
    wanted = (os.major(dev), os.minor(dev))
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/diskstats").read_text().splitlines():
            fields = line.split()
            if (int(fields[0]), int(fields[1])) == wanted:
                return int(fields[9]), int(fields[12])
    return None


def fsync_ms(directory: Path, rounds: int = 20) -> float:
    """Median time of a 4 KiB write + fdatasync in `directory`: what a durable commit
    costs at least on this disk now (each LMDB commit syncs twice)."""
    path = directory / ".fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(rounds):
            os.pwrite(fd, os.urandom(4096), (i % 8) * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return round(sorted(times)[len(times) // 2] * 1000, 2)


@dataclass(frozen=True, slots=True)
class Snapshot:
    wall: float
    cpu: float
    broker_cpu: float | None
    nodes: dict[str, tuple[float, int]]  # tier -> (apply_s, batches)
    disk: tuple[int, int] | None
