"""`Store.reconcile` and `jukisync reconcile`: equal on converged stores; a tier that
is behind, and records that differ, are named with the side holding the newer
version; `--repair` converges them from signed envelopes and local change logs."""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path

import lmdb
import msgspec
from click.testing import CliRunner

from jukisync import _core
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.tier import reconcile
from jukisync.trust import storedir
from jukisync.wire.messages import ChangeReason
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

DEPTH = 3  # the core's Merkle depth (store/merkle.rs)


class Tiers:
    """Three origins' bundles and stores of a centre's and national's kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ring = KeyRing()
        self.origins = {o: Origin(self.ring, o) for o in (YAMAGUCHI_CITY, HAGI, CHIYODA)}
        self.ring.add("centre-east")
        self.bundles: list[bytes] = []
        for o, origin in self.origins.items():
            for start in range(1, 40, 10):
                self.bundles.append(origin.bundle([update(o, n) for n in range(start, start + 10)]))
        self.bundles.append(self.origins[HAGI].bundle([update(HAGI, 3, reason=ChangeReason.DEATH)]))

    def store(self, name: str, role: str = "national") -> _core.Store:
        centre: dict[str, object] = {}
        if role == "aggregator":
            key_id, secret = self.ring.keys["centre-east"]
            centre = {"centre_id": "centre-east", "centre_key": secret, "centre_key_id": key_id}
        path = self.root / name
        store = _core.Store(
            str(path),
            role=role,  # type: ignore[arg-type]
            registry=self.ring.registry(),
            require_attestation=False,
            **centre,  # type: ignore[arg-type]
        )
        storedir.write_trust(path, self.ring.signed_registry(), _core.public_key(self.ring.root))
        return store


def _add(node: bytes | None, delta: int, count: int) -> bytes:
    if node is None:
        n, total = 0, 0
    else:
        n, total = int.from_bytes(node[:8], "big"), int.from_bytes(node[8:], "little")
    return (n + count).to_bytes(8, "big") + ((total + delta) % (1 << 256)).to_bytes(32, "little")


def flip_record(path: Path, code: str, **changes: object) -> None:
    """Change one stored record and its Merkle path consistently, as a defect in the
    write path would (so `check` sees nothing; only another tier can tell)."""
    env = lmdb.open(str(path), max_dbs=16, lock=False)
    try:
        records = env.open_db(b"records", create=False)
        merkle = env.open_db(b"merkle", create=False)
        with env.begin(write=True) as txn:
            old = txn.get(code.encode(), db=records)
            assert old is not None
            record = msgspec.msgpack.decode(old)
            record.update(changes)
            new = msgspec.msgpack.encode(record)
            txn.put(code.encode(), new, db=records)

            def leaf(raw: bytes) -> int:
                return int.from_bytes(
                    hashlib.sha256(code.encode() + b"\0" + raw).digest(), "little"
                )

            for n in range(DEPTH + 1):
                key = record["origin"].encode() + b"\0" + code[:n].encode()
                txn.put(key, _add(txn.get(key, db=merkle), leaf(new) - leaf(old), 0), db=merkle)
    finally:
        env.close()


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    out = (result.exit_code, result.output)
    del result
    gc.collect()
    return out


def test_converged_stores_are_equal(tmp_path: Path) -> None:
    t = Tiers(tmp_path)
    a, b = t.store("a", "aggregator"), t.store("b")
    a.apply(t.bundles)
    b.apply(list(reversed(t.bundles)))  # another order, through pending: same state
    found = a.reconcile(b)
    assert found.equal and found.origins == []
    assert found.records_read == 0  # equal roots: nothing below them was read
    del a, b
    gc.collect()  # LMDB: one open environment per path in a process
    code, out = _run("reconcile", str(tmp_path / "a"), str(tmp_path / "b"))
    assert (code, out.strip()) == (0, "equal")


def test_a_single_flipped_record_is_found_and_named(tmp_path: Path) -> None:
    t = Tiers(tmp_path)
    a, b = t.store("a"), t.store("b")
    a.apply(t.bundles)
    b.apply(t.bundles)
    del a, b
    gc.collect()  # LMDB: one open environment per path in a process
    victim = update(HAGI, 17).juminhyo_code
    flip_record(tmp_path / "b", victim, address="山口県萩市どこか")
    code, out = _run("reconcile", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert code == ExitCode.FAILURE, out
    report = json.loads(out)
    [origin] = report["origins"]
    assert origin["origin"] == HAGI and origin["behind"] is None  # heads are equal
    [diff] = origin["codes"]
    assert (diff["code"], diff["newer"]) == (victim, "neither")  # same version, other bytes
    # Only the differing leaf of 萩市 was read (here every code shares it), and only
    # the nodes on its path and their siblings were compared.
    assert report["records_read"] == 2 * 40
    assert report["nodes_compared"] == 3 + DEPTH * 10


def test_planted_differences_are_all_named_and_repaired(tmp_path: Path) -> None:
    t = Tiers(tmp_path)
    a, b = t.store("a", "aggregator"), t.store("b")
    a.apply(t.bundles)
    missing = [bb for bb in t.bundles if bb is t.bundles[-1] or bb is t.bundles[3]]
    b.apply([bb for bb in t.bundles if all(bb is not m for m in missing)])
    # b lacks 山口市's last bundle (31..40, b is behind: gap) and 萩市's death of 3.
    del a, b
    gc.collect()  # LMDB: one open environment per path in a process
    flipped = [update(CHIYODA, 5).juminhyo_code, update(CHIYODA, 25).juminhyo_code]
    for flip in flipped:
        flip_record(tmp_path / "a", flip, name="改ざん 花子")
    code, out = _run("reconcile", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert code == ExitCode.FAILURE
    report = json.loads(out)
    by_origin = {o["origin"]: o for o in report["origins"]}
    assert by_origin[YAMAGUCHI_CITY]["behind"] == "b"
    assert by_origin[HAGI]["behind"] == "b"
    assert {c["code"]: c["newer"] for c in by_origin[YAMAGUCHI_CITY]["codes"]} == {
        update(YAMAGUCHI_CITY, n).juminhyo_code: "a" for n in range(31, 41)
    }
    assert {c["code"]: c["newer"] for c in by_origin[HAGI]["codes"]} == {
        update(HAGI, 3).juminhyo_code: "a"
    }
    assert by_origin[CHIYODA]["behind"] is None
    assert sorted(c["code"] for c in by_origin[CHIYODA]["codes"]) == sorted(flipped)
    # b (national) catches up from a's change log; a's flipped records are rebuilt
    # from a's own change log.
    code, out = _run("reconcile", str(tmp_path / "a"), str(tmp_path / "b"), "--repair", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["after"]["equal"] is True
    assert report["repair"]["applied"] == {"b": 2}
    assert report["repair"]["rebuilt_codes"]["a"] == 2
    a, b = t.store("a", "aggregator"), t.store("b")
    assert a.check() == [] and b.check() == []
    assert a.reconcile(b).equal
    repaired = a.get(flipped[0])
    assert repaired is not None and repaired.name == update(CHIYODA, 5).name


def test_a_centre_behind_is_repaired_with_its_key_and_forwards(tmp_path: Path) -> None:
    t = Tiers(tmp_path)
    national, centre = t.store("national"), t.store("centre", "aggregator")
    national.apply(t.bundles)
    centre.apply(t.bundles[:5])
    centre.forward_done([i for i, _, _ in centre.forward_batch()])
    del national, centre
    gc.collect()
    # Without the centre's key (its config) the centre cannot attest: refused.
    code, out = _run("reconcile", str(tmp_path / "centre"), str(tmp_path / "national"), "--repair")
    assert code == ExitCode.CONFIG and "centre key" in out
    national, centre = t.store("national"), t.store("centre", "aggregator")
    found = reconcile.compare(centre, national)
    # (the first five bundles: all of 山口市's and one of 萩市's)
    assert {o.origin: reconcile.behind_side(o) for o in found.origins} == {
        HAGI: "a",
        CHIYODA: "a",
    }
    done = reconcile.repair(centre, national)
    assert done.applied == {"a": len(t.bundles) - 5} and not done.not_applied
    assert reconcile.compare(centre, national).equal
    # Applied through the normal path: attested and queued for national.
    assert len(centre.forward_batch()) == len(t.bundles) - 5


def test_status_says_caught_up_behind_or_halted(tmp_path: Path) -> None:
    t = Tiers(tmp_path)
    a, b = t.store("a"), t.store("b")
    a.apply(t.bundles)
    # b misses 山口市's second bundle: the two after it wait in pending.
    b.apply([bb for i, bb in enumerate(t.bundles) if i != 1])
    del a, b
    gc.collect()
    code, out = _run("status", "--store", str(tmp_path / "a"))
    assert code == 0 and out.splitlines()[0] == "caught up"
    code, out = _run("status", "--store", str(tmp_path / "b"), "--json")
    verdict = json.loads(out)["verdict"]
    assert (verdict["state"], verdict["behind"]) == ("behind", {YAMAGUCHI_CITY: 30})
    assert verdict["line"] == f"behind by 30 seqs ({YAMAGUCHI_CITY} by 30)"
    code, out = _run("status", "--store", str(tmp_path / "b"), "--compare", str(tmp_path / "a"))
    assert code == 0
    assert out.splitlines()[0] == (
        f"behind {tmp_path / 'a'} by 30 seqs ({YAMAGUCHI_CITY} by 30); "
        "30 record(s) differ (jukisync reconcile)"
    )
    code, out = _run("status", "--store", str(tmp_path / "a"), "--compare", str(tmp_path / "b"))
    assert out.splitlines()[0].startswith(f"caught up with {tmp_path / 'b'}; ahead of")
