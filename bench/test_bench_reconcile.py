"""`Store.reconcile` between two tier stores of RECORDS records each (issue 9): equal
stores, then 10 differing codes (10 address changes one store applied and the other
not). The cost is in Merkle nodes compared and records read, beside the baseline of
what a comparison without the trees must do: a digest of every record of both stores.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from benchfixtures import report
from benchkit import Chains, KeyRing
from jukisync import Store
from jukisync.publisher.bundling import ChainHead
from jukisync.sim import synth
from jukisync.wire.messages import ZERO_HASH, ChangeReason, Update

DIFFERING = 10


@pytest.fixture(scope="module")
def twin_stores(
    workdir: Path, population: synth.Population, ring: KeyRing
) -> Iterator[tuple[Store, Store, list[Update]]]:
    """Two national stores that applied the same bundles (signed once), and the
    initial updates, to derive changes from."""
    chains = Chains(ring)
    stores = tuple(
        Store(
            str(workdir / f"twin-{n}"),
            role="national",
            registry=ring.registry(),
            require_attestation=False,
        )
        for n in ("a", "b")
    )
    initial = list(synth.initial_load(population))
    batch: list[bytes] = []
    for envelope in chains.bundles(iter(initial), size=1000):
        batch.append(envelope)
        if len(batch) == 50:
            for store in stores:
                assert {r.status for r in store.apply(batch)} == {"applied"}
            batch = []
    for store in stores:
        store.apply(batch)
    a, b = stores
    assert a.stats()["records"] == len(population)
    yield a, b, [u for _, u in initial]


def test_reconcile_equal_stores(
    benchmark: Any, twin_stores: tuple[Store, Store, list[Update]]
) -> None:
    a, b, _ = twin_stores
    found = benchmark.pedantic(a.reconcile, args=(b,), rounds=20, iterations=1)
    assert found.equal and found.records_read == 0
    report("reconcile_equal", 1 / benchmark.stats.stats.mean, "comparisons/s")
    report("reconcile_equal_nodes", found.nodes_compared, "Merkle nodes compared")


def test_digest_baseline(benchmark: Any, twin_stores: tuple[Store, Store, list[Update]]) -> None:
    a, b, _ = twin_stores
    equal = benchmark.pedantic(lambda: a.digest() == b.digest(), rounds=3, iterations=1)
    assert equal
    report("digest_both", 1 / benchmark.stats.stats.mean, "comparisons/s")


def test_reconcile_ten_differing_codes(
    benchmark: Any,
    twin_stores: tuple[Store, Store, list[Update]],
    ring: KeyRing,
) -> None:
    a, b, initial = twin_stores
    chosen = random.Random(9).sample(initial, DIFFERING)
    by_origin: dict[str, list[Update]] = {}
    for u in chosen:
        moved = msgspec.structs.replace(
            u,
            reason=ChangeReason.ADDRESS_CHANGE,
            address=u.address + "（転居）",
            changed_on=u.changed_on + dt.timedelta(days=2),
        )
        by_origin.setdefault(u.municipality, []).append(moved)
    # Only b applies them: each origin's chain continued from b's head.
    chains = Chains(ring)
    for origin in by_origin:
        seq, head_hash = b.chain_head(origin) or (0, ZERO_HASH)
        chains.heads[origin] = ChainHead(last_seq=seq, hash=head_hash)
    results = b.apply([chains.sign(o, updates) for o, updates in by_origin.items()])
    assert {r.status for r in results} == {"applied"}, [r.reason for r in results]
    found = benchmark.pedantic(a.reconcile, args=(b,), rounds=20, iterations=1)
    named = {c.code: c.newer for o in found.origins for c in o.codes}
    assert named == {u.juminhyo_code: "b" for u in chosen}
    report("reconcile_10_diff", 1 / benchmark.stats.stats.mean, "comparisons/s")
    report("reconcile_10_nodes", found.nodes_compared, "Merkle nodes compared")
    report("reconcile_10_records", found.records_read, "records read")
