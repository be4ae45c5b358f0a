"""Bulk loading an empty store (issue 14): records in code order, appended, then the
indexes and Merkle sums built from them. The loaded store must be the store that
applying the same records gives (same records, same digest, indexes `check` finds
consistent, the same answers by 個人番号), whichever way it was loaded; input out
of order, or into a store that holds records, is refused and leaves nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from jukisync import JukisyncError, Record, Store
from jukisync.wire.messages import ChangeReason, StoredRecord
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin


def _applied(path: Path, rng: random.Random) -> tuple[Store, KeyRing, list[str]]:
    """A store that applied births in three origins, some residents moving out later
    (removed: not indexed) and some sharing a name (DUP_SORT index keys)."""
    ring = KeyRing()
    origins = [Origin(ring, o) for o in (YAMAGUCHI_CITY, HAGI, CHIYODA)]
    store = Store(str(path), role="national", registry=ring.registry(), require_attestation=False)
    codes = []
    for origin in origins:
        people = rng.sample(range(1, 99_999), 60)
        births = [update(origin.code, n, name=rng.choice(["山口 太郎", "萩 花子"])) for n in people]
        codes += [u.juminhyo_code for u in births]
        leaving = [
            msgspec.structs.replace(u, reason=ChangeReason.MOVE_OUT) for u in rng.sample(births, 10)
        ]
        results = store.apply([origin.bundle(births), origin.bundle(leaving)])
        assert [r.status for r in results] == ["applied", "applied"], results
    return store, ring, sorted(codes)


def _stored_bytes(record: Record) -> bytes:
    """The record as the store keeps it (MessagePack of its fields, in order)."""
    fields = {f: getattr(record, f) for f in StoredRecord.__struct_fields__}
    return msgspec.msgpack.encode(StoredRecord(**fields))


def _same_store(loaded: Store, source: Store, codes: list[str]) -> None:
    assert loaded.check() == []
    assert loaded.digest("") == source.digest("")
    stored = [r and _stored_bytes(r) for r in source.get_many(codes)]
    assert [r and _stored_bytes(r) for r in loaded.get_many(codes)] == stored
    for record in source.get_many(codes):
        assert record is not None
        found = loaded.by_number(record.kojin_bango)
        expected = source.by_number(record.kojin_bango)
        assert (found and found.juminhyo_code) == (expected and expected.juminhyo_code)


@pytest.mark.parametrize("append", [True, False])
def test_a_store_loaded_from_another_is_the_same_store(
    tmp_path: Path, rng: random.Random, append: bool
) -> None:
    source, ring, codes = _applied(tmp_path / "source", rng)
    target = Store(str(tmp_path / "target"), role="national", registry=ring.registry())
    assert target.load_records_from(source, append=append) == len(codes)
    _same_store(target, source, codes)


def test_a_sorted_stream_loads_and_unsorted_or_second_loads_are_refused(
    tmp_path: Path, rng: random.Random
) -> None:
    source, ring, codes = _applied(tmp_path / "source", rng)
    pairs = [
        (code, _stored_bytes(record))
        for code, record in zip(codes, source.get_many(codes), strict=True)
        if record is not None
    ]
    target = Store(str(tmp_path / "target"), role="national", registry=ring.registry())
    i = rng.randrange(len(pairs) - 1)
    shuffled = [*pairs[:i], pairs[i + 1], pairs[i], *pairs[i + 2 :]]
    for bad in (shuffled, pairs + pairs[-1:]):
        with pytest.raises(JukisyncError, match="ascending code order"):
            target.load_sorted(bad)
        assert target.stats()["records"] == 0  # nothing of a refused load stays
        assert target.check() == []
    assert target.load_sorted(pairs) == len(pairs)
    _same_store(target, source, codes)
    with pytest.raises(JukisyncError, match="empty store"):
        target.load_sorted(pairs)
