"""Bulk loading an empty store (issue 14), each beside the same load with ordinary
puts of the same sorted data in the same run:

- a snapshot: the filled store's records, indexes and Merkle sums, read in key order
  and appended into a new store (`Store.load_records_from`);
- a sorted stream: (code, record bytes) pairs from Python in code order, appended,
  then the indexes and Merkle sums derived from them (`Store.load_sorted`).

And what the filled store costs on disk per record.

    .venv/bin/python -m pytest bench/test_bench_bulkload.py

Figures: `bulk_load`, `bulk_load_put`, `stream_load`, `stream_load_put` records/s
(one durable commit each), `store_bytes` bytes per record of the filled store's data
file (with its change log), `loaded_bytes` of the loaded one (records and indexes).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from benchfixtures import report, report_rate
from benchkit import KeyRing, stored_record_bytes
from jukisync import Store
from jukisync.sim import synth

_SEQUENCE = itertools.count()


def _empty_store(path: Path, ring: KeyRing) -> Store:
    return Store(str(path), role="national", registry=ring.registry())


@pytest.mark.parametrize("append", [True, False], ids=["append", "put"])
def test_bulk_load(
    benchmark: Any, workdir: Path, filled_store: Store, ring: KeyRing, append: bool
) -> None:
    targets: list[Store] = []
    path = workdir / f"bulk-{next(_SEQUENCE)}"

    def setup() -> tuple[tuple[Store], dict[str, Any]]:
        targets.append(_empty_store(path, ring))
        return (targets[-1],), {}

    def load(target: Store) -> int:
        return target.load_records_from(filled_store, append=append)

    loaded = benchmark.pedantic(load, setup=setup, rounds=1, iterations=1)
    records = filled_store.stats()["records"]
    assert loaded == records
    assert targets[-1].digest("") == filled_store.digest("")
    report_rate(
        benchmark, "bulk_load" if append else "bulk_load_put", records, "records/s", per="total"
    )
    if append:
        # What records and indexes alone cost on disk (no change log): the bulk-loaded,
        # append-written store.
        size = (path / "data.mdb").stat().st_size
        report("loaded_bytes", size / records, "bytes/record (records + indexes)")


@pytest.fixture(scope="module")
def sorted_stream(filled_store: Store, population: synth.Population) -> list[tuple[str, bytes]]:
    """Every record of the filled store as (code, stored bytes), in code order."""
    codes = sorted(r.juminhyo_code for r in population.residents)
    out = []
    for chunk in range(0, len(codes), 100_000):
        part = codes[chunk : chunk + 100_000]
        records = filled_store.get_many(part)
        out += [(c, stored_record_bytes(r)) for c, r in zip(part, records, strict=True) if r]
    return out


@pytest.mark.parametrize("append", [True, False], ids=["append", "put"])
def test_stream_load(
    benchmark: Any,
    workdir: Path,
    filled_store: Store,
    ring: KeyRing,
    sorted_stream: list[tuple[str, bytes]],
    append: bool,
) -> None:
    path = workdir / f"bulk-{next(_SEQUENCE)}"

    def setup() -> tuple[tuple[Store], dict[str, Any]]:
        return (_empty_store(path, ring),), {}

    def load(target: Store) -> int:
        return target.load_sorted(sorted_stream, append=append)

    assert benchmark.pedantic(load, setup=setup, rounds=1, iterations=1) == len(sorted_stream)
    name = "stream_load" if append else "stream_load_put"
    report_rate(benchmark, name, len(sorted_stream), "records/s", per="total")


def test_store_bytes_per_record(workdir: Path, filled_store: Store) -> None:
    """Disk per record of the store the apply benchmarks write to: its data file
    (records, indexes, change log holding every applied envelope, Merkle sums)."""
    records = filled_store.stats()["records"]
    size = (workdir / "store" / "data.mdb").stat().st_size
    assert records > 0 and size > 0
    report("store_bytes", size / records, "bytes/record (data.mdb)")
