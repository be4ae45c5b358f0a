"""The audit trail: fiscal years and eras, the seed's usage table reproduced from the
log, tamper detection (the store edited underneath with the `lmdb` package), purge,
disclosure and anomalies."""

from __future__ import annotations

import datetime as dt
import functools
import gc
import hashlib
from collections.abc import Callable
from pathlib import Path

import lmdb
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync.cli.audit import usage_table
from jukisync.query.audit import (
    JST,
    NotAnAuditor,
    anomalies,
    disclose,
    era_year,
    fiscal_year,
    fiscal_year_label,
    fiscal_year_range,
    from_micros,
    purge,
    retention_cutoff,
    to_micros,
    usage,
    usage_csv,
    usage_json,
)
from jukisync.query.policy import load_catalogue
from netkit import YAMAGUCHI_CITY
from querykit import Registry, code, make_policy, person

CONFIG = Path(__file__).resolve().parent.parent / "config"


def jst(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> int:
    return to_micros(dt.datetime(year, month, day, hour, minute, second, us, tzinfo=JST))


# --- fiscal years and eras ---------------------------------------------------------------------


def test_fiscal_year_boundaries_are_april_first_japan_time() -> None:
    assert fiscal_year(jst(2027, 3, 31, 23, 59, 59, 999999)) == 2026
    assert fiscal_year(jst(2027, 4, 1)) == 2027
    utc = dt.UTC
    # 15:00 UTC on March 31 is already April 1 in Japan.
    assert fiscal_year(dt.datetime(2027, 3, 31, 15, 0, tzinfo=utc)) == 2027
    assert fiscal_year(dt.datetime(2027, 3, 31, 14, 59, 59, tzinfo=utc)) == 2026
    assert fiscal_year(jst(2026, 1, 1)) == 2025
    start, end = fiscal_year_range(2026)
    assert from_micros(start) == dt.datetime(2026, 4, 1, tzinfo=JST)
    assert from_micros(end) == dt.datetime(2027, 4, 1, tzinfo=JST)
    assert fiscal_year(start) == 2026 and fiscal_year(end - 1) == 2026 and fiscal_year(end) == 2027


@pytest.mark.parametrize(
    ("fy", "label"),
    [
        (2026, "令和8年度"),
        (2014, "平成26年度"),
        (2010, "平成22年度"),  # the seed's 22年度
        (2018, "平成30年度"),
        (2019, "令和元年度"),  # 平成31年 until April 30, 令和元年 from May 1: the new era
        (2020, "令和2年度"),
        (1989, "平成元年度"),  # 昭和64年 ended on January 7
        (1988, "昭和63年度"),
        (1926, "昭和元年度"),
    ],
)
def test_era_labels(fy: int, label: str) -> None:
    assert fiscal_year_label(fy) == label


def test_era_years_and_their_limit() -> None:
    assert era_year(2019) == "令和元年" and era_year(2025) == "令和7年"
    assert era_year(1868) == "明治元年" and era_year(1912) == "大正元年"
    with pytest.raises(ValueError, match="before 明治"):
        era_year(1867)


def test_retention_cutoff_keeps_the_date_and_folds_february_29() -> None:
    assert from_micros(retention_cutoff(jst(2026, 4, 1, 9), 5)) == dt.datetime(
        2021, 4, 1, 9, tzinfo=JST
    )
    assert from_micros(retention_cutoff(jst(2028, 2, 29), 5)).date() == dt.date(2023, 2, 28)


# --- the usage report: the seed's table from the log ---------------------------------------------

# 山口県 条例事務 利用件数, 平成22–26年度 (FY2010–2014), from the seed. Where the seed gives
# one count for several tasks of a category, it is put on the category's first task.
SEED = {
    "J01-1": (174, 39, 86, 43, 65),
    "J01-2": (4765, 4218, 6614, 8061, 8981),
    "J01-3": (468, 490, 423, 251, 192),
    "J01-4": (0, 0, 0, 0, 0),
    "J01-5": (203, 46, 25, 79, 61),
    "J01-6": (61, 91, 179, 237, 552),
    "J01-7": (7, 4, 14, 13, 16),
    "J01-8": (297, 131, 440, 41, 67),
    "J02-1": (99, 97, 79, 74, 264),
    "J03-1": (453, 518, 625, 602, 711),
    "J04-1": (12288, 12456, 12615, 12706, 12725),
    "J05-1": (1, 11, 16, 6, 8),
    "J07-1": (2, 3, 0, 5, 2),
    "J08-1": (15, 7, 9, 5, 1),
    "J10-1": (3, 9, 21, 0, 0),
    "J12-1": (552, 652, 696, 740, 804),
    "J13-1": (0, 4, 0, 0, 0),
    "J14-1": (0, 0, 0, 0, 9),
    "J15-1": (176, 93, 101, 264, 271),
    "J15-7": (0, 0, 0, 0, 1),
    "J16-1": (0, 4, 1, 60, 56),
}
SEED_TOTALS = [19_564, 18_873, 21_944, 23_187, 24_786]


def test_usage_report_reproduces_the_seed_table(tmp_path: Path) -> None:
    catalogue = load_catalogue(CONFIG / "tasks-yamaguchi.toml")
    store = Registry(tmp_path).open()

    def log(task: str, at: int, items: int, allowed: bool = True, kind: str = "confirm") -> None:
        store.audit_log(kind, requester="pref", task=task, allowed=allowed, items=items, time=at)

    for task, counts in SEED.items():
        for i, n in enumerate(counts):
            if n == 0:
                continue
            start, end = fiscal_year_range(2010 + i)
            # Split across the year's first and last microsecond (Japan time).
            log(task, start, n // 2)
            log(task, end - 1, n - n // 2)
    log("J01-1", fiscal_year_range(2010)[0] - 1, 1000)  # FY2009: outside the range
    log("J01-1", fiscal_year_range(2014)[1], 1000)  # FY2015: outside the range
    log("J01-2", jst(2012, 5, 1), 1, allowed=False)  # refused: not a use
    log("J01-2", jst(2012, 5, 1), 1, kind="disclose")  # not a query
    log("X-99", jst(2013, 5, 1), 7)  # a task the catalogue does not know

    report = usage(store, catalogue, 2010, 2014)
    assert report.labels == ["平成22年度", "平成23年度", "平成24年度", "平成25年度", "平成26年度"]
    outside = report.categories[-1]
    assert outside.tasks[0].task == "X-99" and outside.counts == [0, 0, 0, 7, 0]
    assert [a - b for a, b in zip(report.counts, SEED_TOTALS, strict=True)] == [0, 0, 0, 7, 0]
    by_code = {c.code: c for c in report.categories}
    assert by_code["beppyo5"].total == 0 and len(by_code["beppyo5"].tasks) == 19
    assert by_code["J04"].counts == [12288, 12456, 12615, 12706, 12725]
    assert by_code["J15"].counts == [176, 93, 101, 264, 272]
    assert [t.total for t in by_code["J01"].tasks][:2] == [407, 32639]
    assert report.denied == [0, 0, 1, 0, 0]
    assert report.checkpoint[0] == store.audit_head()[1]

    csv_lines = usage_csv(report).splitlines()
    years = ",".join(f"平成{n}年度" for n in range(22, 27))
    assert csv_lines[0] == f"row,category_code,category,task,name,{years},合計"
    assert csv_lines[-1] == "total,,,,合計,19564,18873,21944,23194,24786,108361"
    assert (
        "subtotal,J04,山口県心身障害者扶養共済制度の運営に関する事務,,小計,12288,12456,12615,12706,12725,62790"
        in csv_lines
    )
    decoded = msgspec.json.decode(usage_json(report))
    assert decoded["total"] == 108_361 and decoded["fiscal_years"] == [2010, 2011, 2012, 2013, 2014]
    assert usage_table(report).row_count > 75
    # Years before a task's ordinance was enacted print "-", as the seed's table does.
    rows = {r.task: r for c in report.categories for r in c.tasks}
    assert rows["J14-1"].cells(report.fiscal_years) == ["-", "-", "-", "-", "9"]
    assert rows["J15-7"].cells(report.fiscal_years) == ["-", "-", "-", "0", "1"]
    assert rows["J01-4"].cells(report.fiscal_years) == ["0", "0", "0", "0", "0"]
    assert "task,J14,山口県" in next(line for line in csv_lines if ",J14-1," in line)
    assert next(line for line in csv_lines if ",J14-1," in line).endswith(",-,-,-,-,9,9")


# --- tamper detection ---------------------------------------------------------------------------


def _logged_store(directory: Path, n: int = 8) -> Path:
    reg = Registry(directory)
    store = reg.open()
    for i in range(n):
        store.audit_log(
            "code",
            requester=f"r{i}",
            task="T-FULL",
            allowed=True,
            codes=[f"{i:011d}"],
            time=jst(2026, 4, 1, 9, i),
        )
    assert store.audit_verify().ok
    del store
    gc.collect()  # the last reference: LMDB closes the environment
    return directory / "store"


def _tamper(
    path: Path, change: Callable[[lmdb.Transaction, lmdb._Database, lmdb._Database], None]
) -> None:
    # heed's LMDB lock file differs from the lmdb package's: lock=False, the Store closed.
    env = lmdb.open(str(path), max_dbs=32, lock=False, subdir=True)
    try:
        entries = env.open_db(b"audit", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            change(txn, entries, meta)
    finally:
        env.close()


def _key(entry_id: int) -> bytes:
    return entry_id.to_bytes(8, "big")


def _reopen_and_verify(directory: Path) -> list[tuple[int, str]]:
    # Fresh keys: a registry matters for applying bundles, not for reading the log.
    verified = Registry(directory).open().audit_verify()
    assert not verified.ok
    return verified.problems


def _edit(
    entry_id: int, **fields: object
) -> Callable[[lmdb.Transaction, lmdb._Database, lmdb._Database], None]:
    def change(txn: lmdb.Transaction, entries: lmdb._Database, meta: lmdb._Database) -> None:
        raw = txn.get(_key(entry_id), db=entries)
        assert raw is not None
        entry = msgspec.msgpack.decode(raw)
        entry.update(fields)
        txn.put(_key(entry_id), msgspec.msgpack.encode(entry), db=entries)

    return change


def _delete(*ids: int) -> Callable[[lmdb.Transaction, lmdb._Database, lmdb._Database], None]:
    def change(txn: lmdb.Transaction, entries: lmdb._Database, meta: lmdb._Database) -> None:
        for i in ids:
            assert txn.delete(_key(i), db=entries)

    return change


@pytest.mark.parametrize(
    ("change", "entry", "says"),
    [
        (_edit(3, requester="someone else"), 4, "entry 3 was edited or removed"),
        (_edit(3, allowed=False), 4, "entry 3 was edited or removed"),
        (_edit(5, codes=b""), 6, "entry 5 was edited or removed"),
        (_edit(8, task="T-OTHER"), 8, "does not hash to the head"),
        (_delete(4), 5, "entries 4..4 are missing"),
        (_delete(1), 2, "entries 1..1 are missing"),
        (_delete(7, 8), 7, "tail removed"),
    ],
)
def test_tampering_underneath_is_detected(
    tmp_path: Path,
    change: Callable[[lmdb.Transaction, lmdb._Database, lmdb._Database], None],
    entry: int,
    says: str,
) -> None:
    path = _logged_store(tmp_path)
    _tamper(path, change)
    problems = _reopen_and_verify(tmp_path)
    assert any(i == entry and says in what for i, what in problems), problems


def test_a_whole_rewritten_chain_fails_its_checkpoint(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    store = reg.open()
    for i in range(3):
        store.audit_log("code", requester="r", task="t", allowed=True, time=jst(2026, 4, 1, i))
    _, last, head = store.audit_head()
    del store
    gc.collect()

    def rewrite(txn: lmdb.Transaction, entries: lmdb._Database, meta: lmdb._Database) -> None:
        # Rewrite entry 3 and fix up the head, as someone with write access could.
        raw = txn.get(_key(3), db=entries)
        assert raw is not None
        entry = msgspec.msgpack.decode(raw)
        entry["requester"] = "forged"
        new = msgspec.msgpack.encode(entry)
        txn.put(_key(3), new, db=entries)
        txn.put(b"audit:head", (4).to_bytes(8, "big") + hashlib.sha256(new).digest(), db=meta)

    _tamper(tmp_path / "store", rewrite)
    store = reg.open()
    assert store.audit_verify().ok  # consistent in itself...
    checked = store.audit_verify([(last, head)])
    assert (
        not checked.ok and "checkpoint" in checked.problems[0][1]
    )  # ...but not with the checkpoint


# --- purge, disclosure, anomalies ---------------------------------------------------------------


def test_purge_beyond_retention_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    store = Registry(tmp_path).open()
    policy = make_policy(tmp_path / "policy")
    resident = "00000000042"
    for year in range(2018, 2027):
        store.audit_log(
            "code", requester="r", task="t", allowed=True, codes=[resident], time=jst(year, 6, 1)
        )
    now = jst(2026, 6, 1, 12)
    result = purge(store, policy, years=5, requester="auditor", now=now)
    # 2018..2020 and 2021-06-01 00:00 are before 2021-06-01 12:00.
    assert (result.purged, result.first_kept) == (4, 5)
    verified = store.audit_verify()
    assert verified.ok, verified.problems
    assert verified.first_id == 5
    kept = [from_micros(e.time).year for e in store.audit_touching(resident)]
    assert kept == [2022, 2023, 2024, 2025, 2026]
    logged = store.audit_entry(result.audit_id)
    assert logged is not None and (logged.kind, logged.items, logged.requester) == (
        "purge",
        4,
        "auditor",
    )
    assert purge(store, policy, years=5, requester="auditor", now=now).purged == 0
    with pytest.raises(ValueError, match="at least 1"):
        purge(store, policy, years=0, requester="auditor", now=now)


def test_disclosure_lists_provisions_and_is_logged(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    store = reg.open()
    reg.apply(store, [person(YAMAGUCHI_CITY, 1), person(YAMAGUCHI_CITY, 2)])
    policy = make_policy(tmp_path / "policy")
    mine, other = code(YAMAGUCHI_CITY, 1), code(YAMAGUCHI_CITY, 2)
    store.lookup(mine, requester="agency-a", task="T-FULL", time=jst(2026, 5, 1, 10))
    store.lookup(other, requester="agency-a", task="T-FULL", time=jst(2026, 5, 2))
    store.confirm([other, mine], requester="agency-n", task="T-NUM", time=jst(2026, 5, 3))
    store.audit_log(
        "code", requester="intruder", task="T-NUM", allowed=False, reason="not_granted: x"
    )
    history = disclose(store, policy, mine, auditor="auditor-1", now=jst(2026, 6, 1))
    assert [(p.requester, p.task, p.kind) for p in history] == [
        ("agency-a", "T-FULL", "code"),
        ("agency-n", "T-NUM", "confirm"),
    ]
    assert history[0].time == "2026-05-01T10:00:00+09:00"
    assert (history[0].requester_name, history[0].task_name) == ("テスト庁", "全項目を見る事務")
    again = disclose(store, policy, mine, auditor="auditor-1", now=jst(2026, 6, 2))
    assert again[-1].kind == "disclose" and again[-1].task_name == "本人開示"


def test_anomalies(tmp_path: Path) -> None:
    store = Registry(tmp_path).open()
    policy = make_policy(tmp_path / "policy")  # night 22–06, >5 singles/10 min, 3 denials/10 min

    def log(requester: str, at: int, allowed: bool = True, kind: str = "code") -> None:
        store.audit_log(kind, requester=requester, task="T-FULL", allowed=allowed, time=at)

    log("calm", jst(2026, 5, 1, 10))
    log("owl", jst(2026, 5, 1, 23, 30))
    log("owl", jst(2026, 5, 2, 1, 15))  # the same night
    log("owl", jst(2026, 5, 2, 6, 0))  # morning: not night
    for i in range(6):  # 6 searches in 5 minutes
        log("greedy", jst(2026, 5, 3, 14, i), kind="search")
    for i in range(5):  # 5 in 50 minutes: under the threshold
        log("steady", jst(2026, 5, 3, 14, 10 * i))
    log("steady", jst(2026, 5, 3, 15, 0), kind="confirm")  # a batch is not a single query
    for i in range(3):
        log("pushy", jst(2026, 5, 4, 9, i), allowed=False)
    log("pushy", jst(2026, 5, 5, 9), allowed=False)
    log("owl", jst(2026, 5, 6, 3), kind="purge")  # not a query
    found = anomalies(store.audit_entries(), policy.thresholds)
    assert [(a.kind, a.requester, a.count) for a in found] == [
        ("late_night", "owl", 2),
        ("mass_search", "greedy", 6),
        ("repeated_denials", "pushy", 3),
    ]
    assert found[0].start == "2026-05-01T23:30:00+09:00" and "2026-05-01" in found[0].detail


# --- the auditor role (issue 11, item 12) --------------------------------------------------------


@given(requester=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,20}", fullmatch=True))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_only_auditors_disclose_or_purge_and_refusals_are_logged(
    tmp_path_factory: pytest.TempPathFactory, requester: str
) -> None:
    directory = tmp_path_factory.mktemp("auditors")
    store = Registry(directory).open()
    policy = make_policy(directory / "policy")
    resident = "00000000042"
    store.audit_log(
        "code", requester="r", task="t", allowed=True, codes=[resident], time=jst(2015, 1, 1)
    )
    is_auditor = requester in ("auditor", "auditor-1")
    now = jst(2026, 6, 1)
    for act, kind in (
        (
            functools.partial(disclose, store, policy, resident, auditor=requester, now=now),
            "disclose",
        ),
        (functools.partial(purge, store, policy, years=5, requester=requester, now=now), "purge"),
    ):
        before = store.audit_head()[1]
        if is_auditor:
            act()
        else:
            with pytest.raises(NotAnAuditor, match="not_an_auditor"):
                act()
            entry = store.audit_entries()[-1]
            assert store.audit_head()[1] == before + 1
            assert (entry.kind, entry.requester, entry.allowed) == (kind, requester, False)
            assert entry.reason.startswith("not_an_auditor:")
    assert store.audit_verify().ok
    del store
    gc.collect()


# --- disclosure across a 住民票コード change (issue 11, item 10) ---------------------------------


@pytest.mark.parametrize("changes", [1, 2, 3])
def test_disclosure_follows_code_changes_both_ways(tmp_path: Path, changes: int) -> None:
    from jukisync.wire.messages import ChangeReason

    reg = Registry(tmp_path)
    store = reg.open()
    policy = make_policy(tmp_path / "policy")
    first = person(YAMAGUCHI_CITY, 1)
    reg.apply(store, [first, person(YAMAGUCHI_CITY, 2)])
    codes = [first.juminhyo_code]
    store.lookup(codes[0], requester="agency-a", task="T-FULL", time=jst(2026, 4, 10))
    for i in range(changes):
        new = f"{int(codes[-1]) + 50_000 + i:011d}"
        change = msgspec.structs.replace(
            first,
            juminhyo_code=new,
            previous_juminhyo_code=codes[-1],
            reason=ChangeReason.JUMINHYO_CODE_CHANGE,
            changed_on=dt.date(2026, 5, 1 + i),
        )
        reg.apply(store, [change])
        codes.append(new)
        store.lookup(new, requester="agency-a", task="T-FULL", time=jst(2026, 6, 1 + i))
    # someone else's provision is not theirs
    store.lookup(code(YAMAGUCHI_CITY, 2), requester="agency-a", task="T-FULL", time=jst(2026, 7, 1))
    expected = [jst(2026, 4, 10)] + [jst(2026, 6, 1 + i) for i in range(changes)]
    for asked in codes:
        history = disclose(store, policy, asked, auditor="auditor", now=jst(2026, 8, 1))
        queries = [p for p in history if p.kind == "code"]
        assert [p.time for p in queries] == [from_micros(t).isoformat() for t in expected], asked
        assert sorted(store.codes_of(asked)) == sorted(codes)


# --- purge by time, entries out of time order (issue 11, item 11) ------------------------------


@given(
    times=st.lists(st.integers(min_value=2015, max_value=2026), min_size=1, max_size=25),
    rounds=st.integers(min_value=1, max_value=3),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_purge_removes_every_old_entry_whatever_the_order_and_still_verifies(
    tmp_path_factory: pytest.TempPathFactory, times: list[int], rounds: int
) -> None:
    directory = tmp_path_factory.mktemp("purge")
    store = Registry(directory).open()
    policy = make_policy(directory / "policy")
    resident = "00000000042"
    for i, year in enumerate(times):
        store.audit_log(
            "code",
            requester=f"r{i}",
            task="t",
            allowed=True,
            codes=[resident],
            time=jst(year, 6, 1),
        )
    before_purge = store.audit_verify([])
    checkpoints = [(before_purge.last_id, before_purge.head)]
    for r in range(rounds):
        now = jst(2024 + r, 6, 1, 12)
        cutoff = jst(2019 + r, 6, 1, 12)
        result = purge(store, policy, years=5, requester="auditor", now=now)
        left = [e for e in store.audit_entries() if e.kind == "code" and e.requester != "later"]
        assert all(e.time >= cutoff for e in left), "an old entry outlived retention"
        assert sorted(e.requester for e in left) == sorted(
            f"r{i}" for i, y in enumerate(times) if jst(y, 6, 1) >= cutoff
        )
        assert all(e.time >= cutoff for e in store.audit_touching(resident) if e.kind == "code")
        verified = store.audit_verify()
        assert verified.ok, verified.problems
        logged = store.audit_entry(result.audit_id)
        assert logged is not None and logged.kind == "purge" and logged.items == result.purged
        # another entry after the purge chains on
        store.audit_log("code", requester="later", task="t", allowed=True, time=now)
        assert store.audit_verify().ok
    # a checkpoint of the last entry logged before the purges still holds, unless that
    # entry itself was purged from the front of the chain
    last_id, head = checkpoints[0]
    if last_id >= store.audit_verify().first_id:
        assert store.audit_verify([(last_id, head)]).ok
    del store
    gc.collect()
