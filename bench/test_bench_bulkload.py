"""Bulk loading an empty store (issue 14): the filled store's records, read in code
order, loaded into a new store with LMDB's append mode, then its indexes and Merkle
sums built from them (`Store.load_records_from`); beside the same load with ordinary
puts of the same sorted records, in the same run. And what the filled store costs on
disk per record.

    .venv/bin/python -m pytest bench/test_bench_bulkload.py

Figures: `bulk_load` and `bulk_load_put` records/s (records, 3 indexes, Merkle sums,
one durable commit), `store_bytes` bytes per record of the filled store's data file.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from benchfixtures import report, report_rate
from benchkit import KeyRing
from jukisync import Store

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


def test_store_bytes_per_record(workdir: Path, filled_store: Store) -> None:
    """Disk per record of the store the apply benchmarks write to: its data file
    (records, indexes, change log holding every applied envelope, Merkle sums)."""
    records = filled_store.stats()["records"]
    size = (workdir / "store" / "data.mdb").stat().st_size
    assert records > 0 and size > 0
    report("store_bytes", size / records, "bytes/record (data.mdb)")
