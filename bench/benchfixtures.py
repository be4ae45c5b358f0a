"""Shared fixtures of the benchmarks: a synthetic population (jukisync.sim.synth), signed
bundles of it, a tier store holding it, and an `lmdb`-package baseline holding the same
record bytes. Sizes come from the environment so a quick run stays quick:

    JUKISYNC_BENCH_RECORDS   records in the filled stores (default 1,000,000)

Each benchmark records its figure with `report(...)`; the ratios to their baselines
measured in the same run are printed at the end of the session.

`conftest.py` only re-exports these (fixtures and the summary hook), so the benchmarks
import `report` from here, and mypy checks this module once (tests/ has a conftest too).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import lmdb
import msgspec
import pytest

from benchkit import Chains, KeyRing, stored_record_bytes
from jukisync import Store
from jukisync.sim import synth
from jukisync.sim.bench import probe_broker
from jukisync.sim.benchenv import Environment, short_phase_warning

RECORDS = int(os.environ.get("JUKISYNC_BENCH_RECORDS", "1000000"))
_RESULTS: dict[str, tuple[float, str]] = {}  # name -> (per-second figure, unit)
# (what, ours, baseline, target ratio): only where the baseline does the same work, so
# the ratio means something. Audited lookups and searches commit an audit entry that no
# baseline writes; reconciling differing stores finds codes a digest does not: their
# figures stand alone.
_PAIRS = [
    ("Ed25519 batch verify vs PyNaCl one by one", "verify_batch", "pynacl_verify", 3.0),
    ("apply 1,000-update bundles vs lmdb putmulti", "store_apply", "lmdb_putmulti", None),
    ("get_many 100k codes vs lmdb get + msgspec loop", "get_many", "lmdb_get_loop", 5.0),
    (
        "get_many_field 100k codes (status) vs lmdb get + msgspec loop",
        "get_many_field",
        "lmdb_get_loop",
        5.0,
    ),
    ("single lookup: Store.get vs lmdb txn + get + msgspec", "get_single", "lmdb_get_single", 1.0),
    ("batch confirmation vs lmdb get + msgspec loop", "confirm", "lmdb_confirm_loop", None),
    (
        "audited lookups, 32 requesters: group commit vs one commit per query",
        "audited_group",
        "audited_serial",
        None,
    ),
    ("end to end vs raw aio-pika, bytes/s over 2 hops", "e2e_bytes", "raw_bytes", 0.5),
    ("reconcile equal stores vs a digest of both", "reconcile_equal", "digest_both", None),
    ("load a snapshot (append) vs puts of the same data", "bulk_load", "bulk_load_put", None),
    ("load a sorted stream (append) vs puts of it", "stream_load", "stream_load_put", None),
    ("apply: 1,741 origins vs one origin", "origins_apply", "one_origin_apply", None),
]


def report(name: str, per_second: float, unit: str) -> None:
    _RESULTS[name] = (per_second, unit)


def report_rate(
    benchmark: Any, name: str, count: float, unit: str, *, per: Literal["mean", "total"]
) -> None:
    """`count` items per second of the benchmark's mean round (or of all its rounds);
    nothing under `--benchmark-disable`, which runs the code once without timing it."""
    if benchmark.disabled:
        return
    stats = benchmark.stats.stats
    report(name, count / (stats.mean if per == "mean" else stats.total), unit)


def _ratios() -> list[tuple[str, float, float | None]]:
    """(what, ours / baseline, target) for each pair measured in this run."""
    return [
        (what, _RESULTS[ours][0] / _RESULTS[base][0], target)
        for what, ours, base, target in _PAIRS
        if ours in _RESULTS and base in _RESULTS
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tr = terminalreporter
    environment = _environment()
    session = getattr(tr.config, "_benchmarksession", None)
    benchmarks = list(session.benchmarks) if session is not None else []
    if environment is None or not (_RESULTS or benchmarks):
        return
    loaded = "; measured on a loaded machine" if environment.loaded else ""
    tr.section(f"jukisync: figures and ratios (records in stores: {RECORDS:,}{loaded})")
    for line in environment.describe().splitlines():
        tr.write_line(line)
    for warning in _warnings(benchmarks):
        tr.write_line(f"WARNING {warning}", yellow=True)
    for name, (value, unit) in _RESULTS.items():
        tr.write_line(f"{name:>17}: {value:>14,.0f} {unit}")
    for what, ratio, target in _ratios():
        goal = f" (target >= {target:g}x)" if target else ""
        tr.write_line(f"{what}: {ratio:.2f}x{goal}")


# --- the environment and the warnings (jukisync.sim.benchenv) ---------------------------

_ENVIRONMENT: list[Environment] = []  # taken when the session starts


def _rabbitmq_version() -> str | None:
    url = os.environ.get("JUKISYNC_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/"
    try:
        return asyncio.run(probe_broker(url, timeout=2.0))
    except Exception:  # no broker: the benchmarks that need one say so themselves
        return None


def pytest_sessionstart(session: pytest.Session) -> None:
    _ENVIRONMENT[:] = [Environment.capture(rabbitmq=_rabbitmq_version())]


def _environment() -> Environment | None:
    if not _ENVIRONMENT:
        return None
    environment = _ENVIRONMENT[0]
    if environment.load_after is None:  # the first to ask after the run finishes it
        environment.finish()
    return environment


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    if (environment := _environment()) is not None:
        machine_info["jukisync"] = environment.to_json()


def _phase_warnings(benchmarks: list[Any]) -> dict[str, str]:
    """Benchmark name -> why its figure is too short to mean much (pytest-benchmark's
    stats: all rounds' total time, and the rounds)."""
    out: dict[str, str] = {}
    for bench in benchmarks:
        if not bench:  # disabled: never timed
            continue
        warning = short_phase_warning(bench.name, bench.stats.total, bench.stats.rounds)
        if warning is not None:
            out[bench.name] = warning
    return out


def _warnings(benchmarks: list[Any]) -> list[str]:
    environment = _environment()
    loaded = environment.warnings() if environment is not None else []
    return [*loaded, *_phase_warnings(benchmarks).values()]


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    phase = _phase_warnings(benchmarks)
    for entry in output_json.get("benchmarks", []):
        if entry["name"] in phase:
            entry.setdefault("extra_info", {})["warning"] = phase[entry["name"]]
    output_json["jukisync"] = {
        "warnings": _warnings(benchmarks),
        "figures": {n: {"per_s": v, "unit": u} for n, (v, u) in _RESULTS.items()},
        "ratios": {what: ratio for what, ratio, _ in _ratios()},
    }


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="jukisync-bench-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def population() -> synth.Population:
    return synth.generate_population(RECORDS, seed=7)


@pytest.fixture(scope="session")
def ring(population: synth.Population) -> KeyRing:
    ring = KeyRing()
    for municipality in population.municipalities:
        ring.add(municipality.code)
    ring.add("centre-bench")
    return ring


@pytest.fixture(scope="session")
def chains(ring: KeyRing) -> Chains:
    return Chains(ring)


@pytest.fixture(scope="session")
def filled_store(
    workdir: Path, population: synth.Population, ring: KeyRing, chains: Chains
) -> Store:
    """An aggregator store holding the whole population (applied in 1,000-update bundles)."""
    key_id, secret = ring.keys["centre-bench"]
    store = Store(
        str(workdir / "store"),
        role="aggregator",
        registry=ring.registry(),
        centre_id="centre-bench",
        centre_key=secret,
        centre_key_id=key_id,
    )
    batch: list[bytes] = []
    for envelope in chains.bundles(synth.initial_load(population), size=1000):
        batch.append(envelope)
        if len(batch) == 50:
            _apply_all(store, batch)
            batch = []
    _apply_all(store, batch)
    store.forward_done([i for i, _, _ in store.forward_batch(limit=1 << 30)])
    assert store.stats()["records"] == len(population)
    return store


def _apply_all(store: Store, batch: list[bytes]) -> None:
    results = store.apply(batch)
    bad = [r for r in results if r.status != "applied"]
    assert not bad, bad[:3]


@pytest.fixture(scope="session")
def baseline_env(
    workdir: Path, filled_store: Store, population: synth.Population
) -> lmdb.Environment:
    """The same record bytes in an LMDB environment of the `lmdb` package."""
    env = lmdb.open(str(workdir / "baseline"), map_size=1 << 34, max_dbs=4, writemap=False)
    db = env.open_db(b"records")
    codes = [r.juminhyo_code for r in population.residents]
    with env.begin(write=True, db=db) as txn:
        for chunk in range(0, len(codes), 100_000):
            part = codes[chunk : chunk + 100_000]
            items = [
                (code.encode(), stored_record_bytes(record))
                for code, record in zip(part, filled_store.get_many(part), strict=True)
                if record is not None
            ]
            txn.cursor().putmulti(items)
    sample = codes[0].encode()
    with env.begin(db=db) as txn:
        value = txn.get(sample)
    assert value is not None and msgspec.msgpack.decode(value)["juminhyo_code"] == codes[0]
    return env
