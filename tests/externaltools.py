"""External programs the tests drive (rabbitmqctl, openssl): one place that runs them.

They run on the real clock: the clock checks (`make test-clocks`) fake the time of the
test process with an LD_PRELOAD library, and Erlang's CLI tools talking to a broker that
lives on the real clock must not inherit it. A tool that is missing or unusable skips
the test with the reason, or fails it under `JUKISYNC_REQUIRE_BROKER=1` (CI), where the
project's set-up is expected to have installed it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

REQUIRE_ENV = "JUKISYNC_REQUIRE_BROKER"
_FAKED_CLOCK_VARS = ("LD_PRELOAD", "FAKETIME", "FAKETIME_NO_CACHE", "DONT_FAKE_MONOTONIC")


def real_clock_env() -> dict[str, str]:
    """This process's environment without the faked-clock variables."""
    return {k: v for k, v in os.environ.items() if k not in _FAKED_CLOCK_VARS}


def run_tool(*argv: str, timeout: float = 60) -> str:
    """Run an external tool on the real clock; its stdout (raises on failure)."""
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env=real_clock_env(),
    )
    return done.stdout


def rabbitmqctl(*args: str) -> str:
    return run_tool("rabbitmqctl", "-q", *args)


def close_connection_async(pid: str, reason: str) -> subprocess.Popen[bytes]:
    """Start `rabbitmqctl close_connection` without waiting (several cuts at once)."""
    return subprocess.Popen(
        ["rabbitmqctl", "-q", "close_connection", pid, reason],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=real_clock_env(),
    )


@functools.cache
def _rabbitmqctl_problem() -> str | None:
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        rabbitmqctl("list_connections", "pid")
    except (subprocess.SubprocessError, OSError) as exc:
        return f"rabbitmqctl is not usable here ({exc})"
    return None


def require_rabbitmqctl() -> None:
    """Skip (or, in CI, fail) unless rabbitmqctl can talk to the broker."""
    _require(_rabbitmqctl_problem())


def require_tool(name: str) -> None:
    """Skip (or, in CI, fail) unless `name` is on PATH."""
    _require(None if shutil.which(name) else f"{name} is not installed")


def _require(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{problem} ({REQUIRE_ENV}=1: the set-up must provide it)", pytrace=False)
    pytest.skip(problem)
