"""`Store.check` and `jukisync check`: each class of defect planted in a closed store
(through the `lmdb` package, as any LMDB tool could write) is found and named; a
sound store is clean."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import lmdb
import msgspec
import pytest
from click.testing import CliRunner

from jukisync import _core
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.trust import storedir
from jukisync.wire.messages import ChangeReason
from netkit import CHIYODA, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

Env = lmdb.Environment
Plant = Callable[[Env], None]


def _build(path: Path) -> tuple[str, str]:
    """A store with records of two origins, a halt with a waiting bundle, an audit
    trail and trust files; returns (a code, its 個人番号)."""
    ring = KeyRing()
    a, b = Origin(ring, YAMAGUCHI_CITY), Origin(ring, CHIYODA)
    store = _core.Store(
        str(path), role="national", registry=ring.registry(), require_attestation=False
    )
    storedir.write_trust(path, ring.signed_registry(), _core.public_key(ring.root))
    bad = msgspec.structs.replace(update(YAMAGUCHI_CITY, 9), kojin_bango="983205673210")
    store.apply(
        [
            a.bundle([update(YAMAGUCHI_CITY, n) for n in range(1, 6)]),
            b.bundle([update(CHIYODA, n) for n in range(1, 4)]),
            a.bundle([update(YAMAGUCHI_CITY, 2, reason=ChangeReason.DEATH)]),
            a.bundle([update(YAMAGUCHI_CITY, 3)]),
            b.bundle([update(CHIYODA, 4)]),
            b.bundle([bad.__class__(**{**msgspec.structs.asdict(bad), "municipality": CHIYODA})]),
            b.bundle([update(CHIYODA, 5)]),
        ]
    )
    first = update(YAMAGUCHI_CITY, 1)
    store.lookup(first.juminhyo_code, requester="agency", task="T-1")
    store.lookup(first.juminhyo_code, requester="agency", task="T-1")
    assert store.halted() and store.pending(CHIYODA)
    assert store.check() == []
    del store
    gc.collect()
    return first.juminhyo_code, first.kojin_bango


def _db(env: Env, name: str, *, dupsort: bool = False) -> lmdb._Database:
    return env.open_db(name.encode(), create=False, dupsort=dupsort)


def _first(env: Env, name: str) -> tuple[bytes, bytes]:
    with env.begin(db=_db(env, name)) as txn:
        item = next(iter(txn.cursor()))
    return bytes(item[0]), bytes(item[1])


def _put(env: Env, name: str, key: bytes, value: bytes, *, dupsort: bool = False) -> None:
    with env.begin(write=True, db=_db(env, name, dupsort=dupsort)) as txn:
        txn.put(key, value)


def _delete(
    env: Env, name: str, key: bytes, value: bytes | None = None, *, dupsort: bool = False
) -> None:
    with env.begin(write=True, db=_db(env, name, dupsort=dupsort)) as txn:
        assert txn.delete(key, value or b"")


def _edit_record(env: Env) -> None:
    code, raw = _first(env, "records")
    record = msgspec.msgpack.decode(raw)
    record["address"] = record["address"] + "（改ざん）"
    _put(env, "records", code, msgspec.msgpack.encode(record))


def _number_entry_dangling(env: Env) -> None:
    _put(env, "by_kojin_bango", b"123456789018", b"35203900001", dupsort=True)


def _number_entry_missing(env: Env) -> None:
    key, value = _first(env, "by_kojin_bango")
    _delete(env, "by_kojin_bango", key, value, dupsort=True)


def _reading_entry_missing(env: Env) -> None:
    key, value = _first(env, "by_name")
    _delete(env, "by_name", key, value, dupsort=True)


def _name_entry_dangling(env: Env) -> None:
    _put(env, "by_name_text", "サトウ\x001990-01-01\x001".encode(), b"35203900003", dupsort=True)


def _head_moved(env: Env) -> None:
    key, value = _first(env, "heads")
    _put(env, "heads", key, (int.from_bytes(value[:8], "big") + 1).to_bytes(8, "big") + value[8:])


def _log_entry_removed(env: Env) -> None:
    with env.begin(db=_db(env, "changelog")) as txn:
        keys = [bytes(k) for k, _ in txn.cursor()]
    _delete(env, "changelog", keys[-2])  # the middle one of 山口市's three


def _log_signature_flipped(env: Env) -> None:
    key, entry = _first(env, "changelog")
    envelope = msgspec.msgpack.decode(entry[40:])
    sig = bytearray(envelope["sig"])
    sig[0] ^= 1
    envelope["sig"] = bytes(sig)
    _put(env, "changelog", key, entry[:40] + msgspec.msgpack.encode(envelope))


def _pending_garbage(env: Env) -> None:
    _put(env, "pending", YAMAGUCHI_CITY.encode() + (99).to_bytes(8, "big"), b"\xc1garbage")


def _forward_dangling(env: Env) -> None:
    _put(env, "forward", (7).to_bytes(8, "big"), YAMAGUCHI_CITY.encode() + (99).to_bytes(8, "big"))


def _audit_edited(env: Env) -> None:
    key, raw = _first(env, "audit")
    entry = msgspec.msgpack.decode(raw)
    entry["requester"] = "someone-else"
    _put(env, "audit", key, msgspec.msgpack.encode(entry))


def _halt_dangling(env: Env) -> None:
    with env.begin(db=_db(env, "quarantine")) as txn:
        keys = [bytes(k) for k, _ in txn.cursor()]
    for key in keys:
        _delete(env, "quarantine", key)


DEFECTS: dict[str, tuple[Plant, str]] = {
    "record edited": (_edit_record, "merkle_mismatch"),
    "個人番号 entry to a record without that number": (
        _number_entry_dangling,
        "number_index_dangling",
    ),
    "個人番号 entry lost": (_number_entry_missing, "number_index_missing"),
    "reading entry lost": (_reading_entry_missing, "reading_index_missing"),
    "name entry to a record without that name": (_name_entry_dangling, "name_index_dangling"),
    "chain head moved": (_head_moved, "head_mismatch"),
    "change-log entry removed": (_log_entry_removed, "log_chain_broken"),
    "change-log signature flipped": (_log_signature_flipped, "log_signature_invalid"),
    "pending garbage": (_pending_garbage, "pending_undecodable"),
    "forward entry to nothing": (_forward_dangling, "forward_dangling"),
    "audit entry edited": (_audit_edited, "audit_chain"),
    "halt without its quarantine entry": (_halt_dangling, "halt_dangling"),
}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    out = (result.exit_code, result.output)
    del result
    gc.collect()  # LMDB: one open environment per path in a process
    return out


def test_a_sound_store_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "store"
    _build(path)
    code, out = _run("check", "--store", str(path), "--json")
    assert code == 0, out
    assert json.loads(out) == {"store": str(path), "consistent": True, "inconsistencies": []}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_planted_defect_is_found_and_named(tmp_path: Path, defect: str) -> None:
    path = tmp_path / "store"
    _build(path)
    plant, kind = DEFECTS[defect]
    env = lmdb.open(str(path), max_dbs=16, lock=False)  # the store is closed
    try:
        plant(env)
    finally:
        env.close()
    code, out = _run("check", "--store", str(path), "--json")
    assert code == ExitCode.FAILURE, out
    kinds = {i["kind"] for i in json.loads(out.splitlines()[0])["inconsistencies"]}
    assert kind in kinds, (defect, kinds)
    code, out = _run("check", "--store", str(path))
    assert code == ExitCode.FAILURE and f"{kind}: " in out


def test_a_lost_index_entry_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "store"
    code_, number = _build(path)
    env = lmdb.open(str(path), max_dbs=16, lock=False)
    try:
        _delete(env, "by_kojin_bango", number.encode(), code_.encode(), dupsort=True)
    finally:
        env.close()
    ring_store = _core.Store(str(path), registry=storedir.load_registry(path))
    assert ring_store.by_number(number) is None
    assert [k for k, _ in ring_store.check()] == ["number_index_missing"]
    ring_store.rebuild_indexes()
    assert ring_store.check() == []
    found = ring_store.by_number(number)
    assert found is not None and found.juminhyo_code == code_


def test_check_of_a_missing_store_is_not_found(tmp_path: Path) -> None:
    code, _ = _run("check", "--store", str(tmp_path / "nothing"))
    assert code == ExitCode.NOT_FOUND


def test_a_schema_1_store_is_migrated_on_open(tmp_path: Path) -> None:
    """Schema 1 kept one code per 個人番号 (`by_number`) and no Merkle sums."""
    path = tmp_path / "store"
    code_, number = _build(path)
    env = lmdb.open(str(path), max_dbs=16, lock=False)
    try:
        with env.begin(write=True) as txn:
            for name, dupsort in (("by_kojin_bango", True), ("merkle", False)):
                txn.drop(env.open_db(name.encode(), txn=txn, dupsort=dupsort), delete=False)
            old = env.open_db(b"by_number", txn=txn)
            txn.put(number.encode(), code_.encode(), db=old)
            txn.put(b"schema_version", b"1", db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()
    store = _core.Store(str(path), registry=storedir.load_registry(path))
    assert store.check() == []
    found = store.by_number(number)
    assert found is not None and found.juminhyo_code == code_
    del store
    gc.collect()
    env = lmdb.open(str(path), max_dbs=16, lock=False, readonly=True)
    try:
        with env.begin() as txn:
            assert txn.get(b"schema_version", db=env.open_db(b"meta", txn=txn)) == b"2"
            assert txn.stat(env.open_db(b"by_number", txn=txn))["entries"] == 0
    finally:
        env.close()
