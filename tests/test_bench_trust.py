"""Benchmarks a benchmark engineer can trust (issue 14): every run records its
environment, warns when a phase is too short or the machine loaded, reports the spread
of repeated runs, and prints tables that fit 80 columns and are never cut when piped."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from jukisync.cli import main
from jukisync.cli.bench import _render, output_console
from jukisync.exitcodes import ExitCode
from jukisync.sim.bench import BenchReport
from jukisync.sim.benchenv import (
    MAX_LOAD_PER_CORE,
    MAX_OTHERS_CPU_SHARE,
    MIN_PHASE_S,
    MIN_ROUNDS,
    Environment,
    short_phase_warning,
)

REPO = Path(__file__).resolve().parent.parent
_ENV_FIELDS = {
    "date",
    "cpu_model",
    "cores",
    "load_before",
    "load_after",
    "python",
    "rust",
    "rabbitmq",
    "jukisync",
    "commit",
    "loaded",
}


def test_the_environment_names_the_machine_the_versions_and_the_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUKISYNC_NOW", "2031-02-03T04:05:06+09:00")
    monkeypatch.setenv("JUKISYNC_RUSTC_VERSION", "rustc 9.99.0 (test)")
    environment = Environment.capture(rabbitmq="RabbitMQ 9.9.9")
    assert environment.load_after is None
    environment.finish()
    data = environment.to_json()
    assert set(data) >= _ENV_FIELDS
    assert data["date"] == "2031-02-03T04:05:06+09:00"
    assert data["rust"] == "rustc 9.99.0 (test)" and data["rabbitmq"] == "RabbitMQ 9.9.9"
    assert data["cores"] >= 1 and data["cpu_model"] and len(data["load_after"]) == 3
    assert data["commit"] is not None  # the tests run in a git checkout
    text = environment.describe()
    for fact in ("2031-02-03", "broker RabbitMQ 9.9.9", "rustc 9.99.0", data["cpu_model"]):
        assert fact in text


@given(
    seconds=st.floats(min_value=0, max_value=100, allow_nan=False),
    rounds=st.integers(min_value=1, max_value=50),
)
def test_a_phase_too_short_or_in_too_few_rounds_is_warned_about(
    seconds: float, rounds: int
) -> None:
    warning = short_phase_warning("some phase", seconds, rounds)
    assert (warning is not None) == (seconds < MIN_PHASE_S or rounds < MIN_ROUNDS)
    if warning is not None:
        assert warning.startswith("some phase") and "not enough to trust" in warning


@functools.cache
def _captured() -> Environment:
    return Environment.capture()  # once: it runs git and rustc


@settings(deadline=None)  # a property of the warning, not of the machine's speed
@given(
    cores=st.integers(min_value=1, max_value=64),
    before=st.floats(min_value=0, max_value=100, allow_nan=False),
    after=st.floats(min_value=0, max_value=100, allow_nan=False),
    others=st.none() | st.floats(min_value=0, max_value=1, allow_nan=False),
)
def test_a_loaded_machine_is_warned_about(
    cores: int, before: float, after: float, others: float | None
) -> None:
    """Loaded: other processes' CPU during the run above the threshold; where that was
    not measured, a load average above its threshold before the run. The load after is
    never judged: it counts the benchmark's own processes."""
    environment = dataclasses.replace(
        _captured(),
        cores=cores,
        load_before=(before, 0.0, 0.0),
        load_after=(after, 0.0, 0.0),
        others_cpu_share=others,
    )
    loaded = before / cores > MAX_LOAD_PER_CORE if others is None else others > MAX_OTHERS_CPU_SHARE
    assert environment.to_json()["loaded"] is loaded
    assert bool(environment.warnings()) is loaded
    assert all("loaded machine" in w for w in environment.warnings())


def test_other_processes_cpu_during_the_run_is_measured() -> None:
    """A process burning a core beside the run is seen as others' CPU; the run's own
    CPU (this process spinning) is not."""
    environment = Environment.capture()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # our own work: not counted as others'
            sum(range(10_000))
        # Before the burner is reaped: a waited-for child counts as the run's own.
        environment.finish()
    finally:
        burner.kill()
        burner.wait()
    share = environment.others_cpu_share
    assert share is not None
    # The burner had one core of `cores` for most of the window (it may have shared it).
    assert share >= 0.2 / environment.cores, share
    assert "_start" not in environment.to_json()


def _inflated(report: BenchReport) -> BenchReport:
    """The same runs with figures far wider than a quick run's, to stress the columns."""
    runs = []
    for i, run in enumerate(report.runs):
        tp = run.throughput
        assert tp is not None and run.latency is not None
        latency = dataclasses.replace(tp.latency, p50_ms=98_765.4 + i, p99_ms=1_234_567.8 + i)
        runs.append(
            dataclasses.replace(
                run,
                throughput=dataclasses.replace(
                    tp, updates=987_654_321, updates_per_s=12_345_678.0 + i, latency=latency
                ),
            )
        )
    return BenchReport.of(report.environment, runs)


@pytest.mark.broker
def test_bench_records_its_environment_warns_and_prints_whole_numbers(
    broker_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "--broker", broker_url, "--json", "--publishers", "2", "--updates", "600"]
    args += ["--bundle-size", "100", "--rate", "200", "--latency-seconds", "0.5"]
    args += ["--repeat", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitCode.OK, result.output
    data = json.loads(result.stdout)
    environment = data["environment"]
    assert set(environment) >= _ENV_FIELDS
    assert environment["rabbitmq"] and "RabbitMQ" in environment["rabbitmq"]
    assert environment["load_after"] is not None and environment["commit"]
    assert data["repeats"] == 2 and len(data["runs"]) == 2 and data["converged"] is True
    spread = {s["figure"]: s for s in data["spread"]}
    assert {"throughput", "raw ceiling", "paced p99"} <= set(spread)
    for s in spread.values():
        assert s["runs"] == 2 and s["min"] <= s["median"] <= s["max"]
    # Two runs are fewer than the rounds a figure needs, and the latency phase is short.
    warnings = data["warnings"]
    assert any(w.startswith("throughput phase") and "2 rounds" in w for w in warnings)
    assert any(w.startswith("latency phase") and "2 rounds" in w for w in warnings)
    assert "warning: latency phase" in result.stderr

    report = _inflated(BenchReport.from_json(data))
    # Piped: nothing wraps or is cut.
    _render(report, output_console())
    piped = capsys.readouterr().out
    assert "…" not in piped
    for figure in ("987,654,321", "12,345,678", "12,345,679", "1,234,567.8", "98,765.4"):
        assert figure in piped, figure
    assert "latency phase" in piped and "WARNING" in piped
    # On an 80-column terminal: every line fits, and still no number is cut.
    screen = io.StringIO()
    _render(report, Console(file=screen, width=80, force_terminal=True, color_system=None))
    lines = screen.getvalue().splitlines()
    table_lines = [line for line in lines if "12,345,678" in line or "987,654,321" in line]
    assert table_lines and all(len(line) <= 80 for line in table_lines)
    assert "…" not in screen.getvalue()


def test_make_bench_saves_the_environment_and_the_warnings(tmp_path: Path) -> None:
    """A tiny run of one benchmark file, as `make bench` runs them (autosave)."""
    storage = tmp_path / "benchmarks"
    command = [sys.executable, "-m", "pytest", "bench/test_bench_reconcile.py", "-q"]
    command += ["-p", "no:cacheprovider", "--benchmark-autosave"]
    command += [f"--benchmark-storage=file://{storage}", "-k", "equal or digest"]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "JUKISYNC_BENCH_RECORDS": "2000"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    saved = list(storage.rglob("*.json"))
    assert len(saved) == 1
    data = json.loads(saved[0].read_text())
    assert set(data["machine_info"]["jukisync"]) >= _ENV_FIELDS
    # 2,000 records reconcile in far less than a second: every figure is warned about.
    warnings = data["jukisync"]["warnings"]
    assert any("< 1 s" in w and "not enough to trust" in w for w in warnings)
    assert all("warning" in b["extra_info"] for b in data["benchmarks"])
    assert "WARNING" in done.stdout and "load average" in done.stdout
