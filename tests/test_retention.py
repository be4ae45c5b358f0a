"""Change-log retention: a signed checkpoint, an archive, the oldest entries pruned.

- generated streams, pruned at random points between batches: the retained log plus
  the archives still give every envelope ever applied (resends), a fresh store catches
  up through `reconcile --repair` and through bootstrap, old bundles arriving again are
  duplicates, and `check` finds the pruned store consistent;
- a request before the retained range whose archive is gone is a typed error naming
  the archive, in the core (PrunedError) and above it (BeforeRetention);
- entries are gone (counted), the compacted store is smaller (printed, not asserted);
- a SIGKILL at a random moment of `jukisync retention prune` loses nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import _core, clock, config
from jukisync.ops import snapshots
from jukisync.publisher.origin import Publisher, PublisherError
from jukisync.tier import reconcile, retention
from jukisync.trust import keys
from netkit import HAGI, update
from storekit import body_of
from test_snapshots import JUKISYNC, Centre, cli

_DAY_US = 86_400_000_000
ALL = retention.Policy(keep_bundles=0, keep_days=0)


@pytest.fixture
def centre(tmp_path: Path) -> Centre:
    return Centre(tmp_path)


def _key(centre: Centre) -> keys.KeyPair:
    return keys.load(centre.key_file)


def _fill(centre: Centre, store: _core.Store, count: int) -> None:
    results = store.apply(centre.bundles(count))
    assert {r.status for r in results} <= {"applied"}, [r.reason for r in results]
    store.forward_done([i for i, _, _ in store.forward_batch(100_000)])  # at national


def _full_log(store: _core.Store) -> dict[str, list[bytes]]:
    return {o: store.changes(o, 1, 100_000) for o in store.chain_heads()}


def _fresh(centre: Centre, name: str) -> _core.Store:
    return centre.open(centre.tmp / name)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rounds=st.lists(
        st.tuples(st.integers(1, 12), st.integers(0, 6), st.booleans()), min_size=1, max_size=4
    )
)
def test_pruned_stream_still_resends_repairs_and_bootstraps(
    tmp_path_factory: pytest.TempPathFactory,
    rounds: list[tuple[int, int, bool]],
) -> None:
    centre = Centre(tmp_path_factory.mktemp("ret"))
    store = centre.open()
    archive_dir = centre.tmp / "archive"
    every: dict[str, list[bytes]] = {}
    pruned_total = 0
    for count, keep, prune in rounds:
        _fill(centre, store, count)
        every = _full_log(store) if not pruned_total else every | _merge(every, store)
        if prune:
            before = store.changelog_entries()
            report = retention.checkpoint_and_prune(
                store, centre.path, _key(centre), archive_dir, retention.Policy(keep, 0)
            )
            assert store.changelog_entries() == before - sum(report.pruned.values())
            pruned_total += sum(report.pruned.values())
            for origin, (seq, _) in store.chain_heads().items():
                # each origin keeps its head entry and `keep` entries at least
                assert len(store.changes(origin, seq, 10)) == 1
                assert len(every[origin]) - report.pruned.get(origin, 0) >= min(
                    keep, len(every[origin])
                )
    assert store.check() == []
    # resends: the retained log and the archives give back every envelope, in order
    for origin, envelopes in every.items():
        assert retention.changes(store, origin, 1, 100_000) == envelopes
    # old bundles arriving again are duplicates, never forks
    oldest = [envelopes[0] for envelopes in every.values()]
    assert {r.status for r in store.apply(oldest)} == {"duplicate"}
    # reconcile --repair: a fresh store catches up from the pruned one
    fresh = _fresh(centre, "fresh")
    repaired = reconcile.repair(fresh, store)
    assert repaired.not_applied == []
    assert fresh.digest() == store.digest()
    assert fresh.chain_heads() == store.chain_heads()
    # bootstrap from a snapshot of the pruned store, reading its archives
    snap = centre.tmp / "snap.tar"
    snapshots.make_archive(centre.path, snap, _key(centre), store=store)
    code, out = cli(
        "bootstrap", "--snapshot", str(snap), "--store", str(centre.tmp / "boot"),
        "--root", str(centre.root_file), "--json",
    )  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["verified"]


def _merge(every: dict[str, list[bytes]], store: _core.Store) -> dict[str, list[bytes]]:
    """`every` extended with what `store` logged after it (pruned ranges are known)."""
    out = dict(every)
    for origin, (seq, _) in store.chain_heads().items():
        have = out.get(origin, [])
        last = body_of(have[-1]).last_seq if have else 0
        if last < seq:
            out[origin] = have + store.changes(origin, last + 1, 100_000)
    return out


def test_a_request_before_the_retained_range_names_the_archive(centre: Centre) -> None:
    store = centre.open()
    _fill(centre, store, 20)
    report = retention.checkpoint_and_prune(
        store, centre.path, _key(centre), centre.tmp / "archive", ALL
    )
    assert report.archive is not None
    archive = Path(report.archive)
    origin = sorted(report.pruned)[0]
    with pytest.raises(_core.PrunedError, match=str(archive.resolve())):
        store.changes(origin, 1, 10)
    moved = centre.tmp / "elsewhere"
    moved.mkdir()
    shutil.move(archive, moved / archive.name)
    with pytest.raises(retention.BeforeRetention) as caught:
        retention.changes(store, origin, 1, 10)
    assert caught.value.archive == str(archive.resolve())
    assert archive.name in str(caught.value)
    # found again where the operator says it is
    assert retention.changes(store, origin, 1, 10, archive_dirs=[moved])
    # reconcile reports it, naming the archive, rather than stopping silently
    fresh = _fresh(centre, "fresh")
    repaired = reconcile.repair(fresh, store)
    assert any(archive.name in line for line in repaired.not_applied)
    # bootstrap of a snapshot without its archives fails, naming the archive
    snap = centre.tmp / "snap.tar"
    snapshots.make_archive(centre.path, snap, _key(centre), store=store)
    args = ["bootstrap", "--snapshot", str(snap), "--root", str(centre.root_file)]
    code, out = cli(*args, "--store", str(centre.tmp / "b1"))
    assert code == 1 and archive.name in out
    code, out = cli(*args, "--store", str(centre.tmp / "b2"), "--archive-dir", str(moved))
    assert code == 0, out


def test_the_archive_is_signed_and_holds_the_checkpoint(centre: Centre) -> None:
    store = centre.open()
    _fill(centre, store, 10)
    report = retention.checkpoint_and_prune(
        store, centre.path, _key(centre), centre.tmp / "archive", retention.Policy(2, 0)
    )
    assert report.archive is not None
    manifest = snapshots.verify_archive(
        Path(report.archive), None, keys.load_public(centre.pub_file)
    )
    assert manifest.kind == retention.ARCHIVE_KIND
    checkpoint = manifest.raw["checkpoint"]
    assert checkpoint["digest"] == store.digest()
    assert checkpoint["records"] == store.stats()["records"]
    assert {o: h["seq"] for o, h in checkpoint["heads"].items()} == {
        o: s for o, (s, _) in store.chain_heads().items()
    }
    for origin, r in manifest.raw["ranges"].items():
        assert r["bundles"] == report.pruned[origin]
    # a tampered archive is refused when read
    bad = centre.tmp / "bad.tar"
    with tarfile.open(report.archive) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            assert data is not None
            raw = data.read()
            if member.name.endswith(retention.SEGMENT):
                raw = raw[:-1] + bytes([raw[-1] ^ 1])
            member.size = len(raw)
            dst.addfile(member, io.BytesIO(raw))
    with pytest.raises(snapshots.ArchiveError):
        retention.archived_bundles(bad, sorted(report.pruned)[0], 1, 10)


def test_keep_days_and_the_forward_backlog_bound_what_goes(centre: Centre) -> None:
    store = centre.open()
    now = clock.now_us()
    origin = centre.origins[0]

    def made(n: int, at: int) -> bytes:
        return origin.bundle(
            [msgspec.structs.replace(update(origin.code, n), recorded_at=at)], created_at=at
        )

    old = [made(i, now - 10 * _DAY_US) for i in range(5)]
    new = [made(50 + i, now - _DAY_US) for i in range(5)]
    assert {r.status for r in store.apply(old + new)} == {"applied"}
    # nothing forwarded yet: nothing may go
    report = retention.checkpoint_and_prune(
        store, centre.path, _key(centre), centre.tmp / "a", retention.Policy(0, 5)
    )
    assert report.archive is None and report.pruned == {}
    store.forward_done([i for i, _, _ in store.forward_batch(100)])
    report = retention.checkpoint_and_prune(
        store, centre.path, _key(centre), centre.tmp / "a", retention.Policy(0, 5)
    )
    assert report.pruned == {origin.code: 5}  # the ten-day-old ones, not the others
    assert len(store.changes(origin.code, 6, 100)) == 5


def test_entries_gone_and_the_compacted_store_smaller(centre: Centre) -> None:
    store = centre.open()
    _fill(centre, store, 400)
    before_entries = store.changelog_entries()
    before_bytes = store.copy_compacted(str(centre.tmp / "before"))
    report = retention.checkpoint_and_prune(
        store, centre.path, _key(centre), centre.tmp / "archive", retention.Policy(10, 0)
    )
    after_bytes = store.copy_compacted(str(centre.tmp / "after"))
    assert before_entries == 400
    assert store.changelog_entries() == 2 * 10  # two origins, ten kept each
    assert sum(report.pruned.values()) == 380
    print(
        f"400 bundles (800 updates): compacted store {before_bytes:,} -> {after_bytes:,} "
        f"bytes; archive {Path(str(report.archive)).stat().st_size:,} bytes"
    )


def test_sigkill_during_prune_loses_nothing(centre: Centre, rng: random.Random) -> None:
    store = centre.open()
    _fill(centre, store, 1500)
    every = _full_log(store)
    del store
    archive_dir = centre.tmp / "archive"
    args = [
        JUKISYNC, "retention", "prune", "--store", str(centre.path), "--key",
        str(centre.key_file), "--archive-dir", str(archive_dir), "--keep-bundles", "3",
        "--keep-days", "0", "--json",
    ]  # fmt: skip
    for attempt in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Killed at a random moment: before, while the archive is written, or after.
        deadline = time.monotonic() + rng.uniform(0.0, 3.0)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        store = centre.open()
        assert store.check() == [], f"attempt {attempt}"
        for origin, envelopes in every.items():
            assert retention.changes(store, origin, 1, 100_000) == envelopes
        del store
    code, out = cli(*args[1:])
    assert code == 0, out
    store = centre.open()
    assert store.changelog_entries() == 6
    for origin, envelopes in every.items():
        assert retention.changes(store, origin, 1, 100_000) == envelopes
    assert not [p for p in archive_dir.iterdir() if p.name.startswith(".")]  # no partials


def test_cli_prune_and_show(centre: Centre) -> None:
    store = centre.open()
    _fill(centre, store, 12)
    del store
    code, out = cli("retention", "show", "--store", str(centre.path), "--json")
    assert code == 0 and json.loads(out) == {"changelog_entries": 12, "pruned_origins": []}
    code, out = cli(
        "retention", "prune", "--store", str(centre.path), "--key", str(centre.key_file),
        "--archive-dir", str(centre.tmp / "a"), "--keep-bundles", "1", "--keep-days", "0",
        "--json",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["entries_before"] == 12 and report["entries_after"] == 2
    code, out = cli("retention", "show", "--store", str(centre.path), "--json")
    shown = json.loads(out)
    assert {f["archive"] for f in shown["pruned_origins"]} == {report["archive"]}
    code, out = cli("retention", "show", "--store", str(centre.path))
    assert code == 0 and "first retained seq" in out
    code, _ = cli("retention", "show", "--store", str(centre.tmp / "nothing"))
    assert code == 5


def test_national_needs_a_key_to_sign_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "national.toml"
    path.write_text(
        'role = "national"\nstore = "s"\n[trust]\nroot_public_key = "r"\nregistry = "g"\n'
        '[retention]\narchive_dir = "archive"\n'
    )
    with pytest.raises(config.ConfigError, match=r"retention\.signing_key"):
        config.load(path)
    path.write_text(path.read_text() + 'signing_key = "k.key.json"\n')
    loaded = config.load(path)
    assert isinstance(loaded, config.NationalConfig)
    assert loaded.retention.archive_dir == str(tmp_path / "archive")


async def test_the_daemons_policy_prunes_on_its_interval(centre: Centre) -> None:
    store = centre.open()
    _fill(centre, store, 10)
    cfg = config.RetentionConfig(
        archive_dir=str(centre.tmp / "a"), keep_bundles=1, keep_days=0, interval_s=0.05
    )
    task = asyncio.create_task(retention.run_policy(store, centre.path, _key(centre), cfg))
    try:
        async with asyncio.timeout(30):
            while store.changelog_entries() != 2:
                await asyncio.sleep(0.05)
            _fill(centre, store, 4)
            while store.changelog_entries() != 2:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert len(list((centre.tmp / "a").glob("*.tar"))) == 2


def test_outbox_prune_keeps_the_chain_head_and_names_the_archive(tmp_path: Path) -> None:
    secret = _core.generate_signing_key()
    pair = keys.KeyPair(HAGI, "352047-k1", secret, _core.public_key(secret), 0)
    key_file, _ = keys.save(pair, tmp_path / "keys")
    path = tmp_path / "outbox"
    publisher = Publisher(HAGI, secret, "352047-k1", path, sync=False)
    for n in range(1, 21):
        publisher.add(update(HAGI, n))
        publisher.flush()
    everything = [e.envelope for e in publisher.unconfirmed(100)]
    publisher.confirm(publisher.unconfirmed(15))  # the last five still unconfirmed
    head = publisher.head
    publisher.close()
    code, out = cli(
        "retention", "outbox", "--outbox", str(path), "--key", str(key_file),
        "--archive-dir", str(tmp_path / "a"), "--keep-bundles", "2", "--keep-days", "0",
        "--json",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["pruned"] == 15 and report["bundles_after"] == 5  # unconfirmed stay
    assert report["head"] == {"seq": head.last_seq, "hash": head.hash.hex()}
    archive = Path(report["archive"])
    assert retention.archived_bundles(archive, HAGI, 1, 100) == everything[:15]
    again = Publisher(HAGI, secret, "352047-k1", path, sync=False)
    try:
        assert again.head == head
        with pytest.raises(PublisherError, match=archive.name):
            again.resend(3)
        assert [e.envelope for e in again.resend(16)] == everything[15:]
        again.add(update(HAGI, 99))
        nxt = again.flush()
        assert nxt is not None and body_of(nxt.envelope).prev_hash == head.hash
    finally:
        again.close()
