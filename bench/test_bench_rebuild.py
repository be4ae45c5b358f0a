"""Rebuilding a node (issue 12): how fast a snapshot is taken of a filled store, and
how fast `bootstrap` re-verifies and re-applies its change log into an empty store.

    JUKISYNC_BENCH_RECORDS=1000000 .venv/bin/python -m pytest bench/test_bench_rebuild.py

Figures: `snapshot` records/s (LMDB's compacted copy, the manifest's heads and
digest, the tar), `rebuild` records/s (every envelope signature-checked in batches,
chains checked, records and indexes written, heads and digest compared).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from benchfixtures import report_rate
from benchkit import KeyRing
from jukisync import Store, _core
from jukisync.ops import snapshots
from jukisync.trust import keys, storedir
from jukisync.wire.messages import KeyEntry


@pytest.fixture(scope="module")
def archive(workdir: Path, filled_store: Store, ring: KeyRing) -> dict[str, Any]:
    entries = [
        KeyEntry(owner=o, key_id=k, public_key=_core.public_key(s), not_before=0)
        for o, (k, s) in ring.keys.items()
    ]
    signed = keys.build_registry(entries, ring.root, version=1, issued_at=0)
    storedir.write_trust(workdir / "store", signed, _core.public_key(ring.root))
    key_id, secret = ring.keys["centre-bench"]
    return {
        "key": keys.KeyPair("centre-bench", key_id, secret, _core.public_key(secret), 0),
        "out": workdir / "rebuild-snapshot.tar",
    }


def test_snapshot(
    benchmark: Any, workdir: Path, filled_store: Store, archive: dict[str, Any]
) -> None:
    def take() -> snapshots.Manifest:
        archive["out"].unlink(missing_ok=True)
        return snapshots.make_archive(
            workdir / "store", archive["out"], archive["key"], store=filled_store
        )

    manifest = benchmark.pedantic(take, rounds=1, iterations=1)
    archive["manifest"] = manifest
    report_rate(benchmark, "snapshot", manifest.raw["records"], "records/s", per="total")


def test_rebuild(benchmark: Any, workdir: Path, ring: KeyRing, archive: dict[str, Any]) -> None:
    manifest = archive["manifest"]
    registry = ring.registry()
    with snapshots.extracted(archive["out"]) as (_, _, _, data):
        source = Store(str(data), registry=registry, require_attestation=False)
        target = Store(
            str(workdir / "rebuilt"), role="national", registry=registry, require_attestation=False
        )
        result = benchmark.pedantic(
            snapshots.rebuild, args=(source, target, manifest), rounds=1, iterations=1
        )
        del source, target
        gc.collect()
    assert result.problems == []
    report_rate(benchmark, "rebuild", manifest.raw["records"], "records/s", per="total")
