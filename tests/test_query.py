"""Purpose-bound queries through QueryService: field filtering, refusals logged, the
four-item search's Japanese normalisation, the RPC entry point, and a batch of a
million codes checked against a Python reference."""

from __future__ import annotations

import array
import datetime as dt
import random
import sys
from pathlib import Path

import msgspec
import pytest

from jukisync import Store, _core
from jukisync.query.policy import Field
from jukisync.query.service import (
    CONFIRM_STATUSES,
    ByCode,
    ByNumber,
    Confirm,
    Confirmed,
    Denied,
    Found,
    QueryService,
    Search,
    decode_response,
    encode,
)
from jukisync.wire.messages import ChangeReason, Sex, Update
from netkit import HAGI, YAMAGUCHI_CITY, kojin_bango
from querykit import Registry, code, make_policy, person

NOW = 1_775_000_000_000_000  # 2026-04-01, µs


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path)


@pytest.fixture
def store(reg: Registry) -> Store:
    s = reg.open()
    reg.apply(
        s,
        [
            person(YAMAGUCHI_CITY, 1, address="山口県山口市亀山町1番1号"),
            person(YAMAGUCHI_CITY, 2, address="山口県山口市中央三丁目2番1号"),
            person(HAGI, 3, address="山口県萩市土原5番地", alias="Taro Yamaguchi"),
            person(YAMAGUCHI_CITY, 4, name="塚本 花子", kana="ツカモト ハナコ", sex=Sex.FEMALE),
            person(YAMAGUCHI_CITY, 5, name="髙橋 一", kana="タカハシ ハジメ"),
        ],
    )
    # Resident 2 moves out; resident 3 dies.
    reg.apply(
        s,
        [
            person(YAMAGUCHI_CITY, 2, reason=ChangeReason.MOVE_OUT, changed_on=dt.date(2025, 3, 1)),
            person(
                HAGI,
                3,
                address="山口県萩市土原5番地",
                alias="Taro Yamaguchi",
                reason=ChangeReason.DEATH,
                changed_on=dt.date(2025, 6, 1),
            ),
        ],
    )
    return s


@pytest.fixture
def service(store: Store, tmp_path: Path) -> QueryService:
    clock = iter(range(NOW, NOW + 10**12, 1_000_000))
    return QueryService(store, make_policy(tmp_path / "policy"), clock=lambda: next(clock))


def last_entry(store: Store) -> _core.AuditEntry:
    entries = store.audit_entries(with_codes=True)
    assert entries
    return entries[-1]


# --- lookups and field filtering --------------------------------------------------------------


def test_lookup_returns_only_the_tasks_fields_and_is_logged(
    service: QueryService, store: Store
) -> None:
    answer = service.by_code("agency-a", "T-ADDR", code(YAMAGUCHI_CITY, 1))
    assert isinstance(answer, Found)
    assert answer.records == [
        {
            "juminhyo_code": code(YAMAGUCHI_CITY, 1),
            "name": "山口 太郎",
            "address": "山口県山口市亀山町1番1号",
            "status": "active",
        }
    ]
    entry = last_entry(store)
    assert (entry.id, entry.requester, entry.task, entry.kind) == (
        answer.audit_id,
        "agency-a",
        "T-ADDR",
        "code",
    )
    assert entry.allowed and entry.codes == [code(YAMAGUCHI_CITY, 1)] and entry.time == NOW


def test_asking_for_a_subset_of_fields(service: QueryService) -> None:
    answer = service.by_code("agency-a", "T-FULL", code(YAMAGUCHI_CITY, 1), ["birth_date", "sex"])
    assert isinstance(answer, Found)
    assert answer.records == [{"birth_date": "1980-04-01", "sex": 1}]


@pytest.mark.parametrize(
    ("requester", "task", "fields", "reason"),
    [
        ("agency-a", "T-ADDR", ["birth_date"], "field_not_allowed"),
        ("agency-a", "T-NUM", None, "not_granted"),
        ("intruder", "T-FULL", None, "unknown_requester"),
        ("agency-a", "T-NOPE", None, "unknown_task"),
    ],
)
def test_refusals_are_answers_and_are_logged(
    service: QueryService,
    store: Store,
    requester: str,
    task: str,
    fields: list[str] | None,
    reason: str,
) -> None:
    answer = service.by_code(requester, task, code(YAMAGUCHI_CITY, 1), fields)
    assert isinstance(answer, Denied)
    assert answer.reason.startswith(reason + ":")
    entry = last_entry(store)
    assert entry.id == answer.audit_id and not entry.allowed and entry.reason == answer.reason
    assert (entry.requester, entry.task, entry.codes) == (requester, task, [])


def test_removed_records_and_not_found(service: QueryService) -> None:
    dead = service.by_code("agency-a", "T-FULL", code(HAGI, 3), ["status", "reason", "changed_on"])
    assert isinstance(dead, Found)
    assert dead.records == [{"status": "removed", "reason": "death", "changed_on": "2025-06-01"}]
    missing = service.by_code("agency-a", "T-FULL", "99999999999")
    assert isinstance(missing, Found) and missing.records == []
    invalid = service.by_code("agency-a", "T-FULL", "１２３")
    assert isinstance(invalid, Denied) and invalid.reason.startswith("invalid_request:")


def test_by_kojin_bango_only_for_my_number_tasks(service: QueryService) -> None:
    number = kojin_bango(int(YAMAGUCHI_CITY) * 100000 + 1)
    found = service.by_number("agency-n", "T-NUM", number)
    assert isinstance(found, Found)
    assert found.records[0]["kojin_bango"] == number
    assert set(found.records[0]) == {
        "juminhyo_code",
        "kojin_bango",
        "name",
        "status",
        "reason",
        "changed_on",
    }
    refused = service.by_number("agency-a", "T-FULL", number)
    assert isinstance(refused, Denied) and "My Number Act" in refused.reason
    bad = service.by_number("agency-n", "T-NUM", "123456789010")
    assert isinstance(bad, Denied) and "123456789010" not in bad.reason


def test_a_changed_code_is_followed(reg: Registry, store: Store, service: QueryService) -> None:
    moved = msgspec.structs.replace(
        person(YAMAGUCHI_CITY, 91),
        previous_juminhyo_code=code(YAMAGUCHI_CITY, 1),
        reason=ChangeReason.JUMINHYO_CODE_CHANGE,
        changed_on=dt.date(2025, 1, 1),
    )
    reg.apply(store, [moved])
    answer = service.by_code("agency-a", "T-ADDR", code(YAMAGUCHI_CITY, 1))
    assert isinstance(answer, Found)
    assert answer.records[0]["juminhyo_code"] == code(YAMAGUCHI_CITY, 91)
    assert answer.redirected_from == code(YAMAGUCHI_CITY, 1)
    hidden = service.by_code("agency-a", "T-NOSTATUS", code(YAMAGUCHI_CITY, 1))
    assert isinstance(hidden, Found) and hidden.redirected_from is None  # may not see codes


# --- the four-item search ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ヤマグチ タロウ", 3),  # the reading, as registered
        ("やまぐち　たろう", 3),  # hiragana, ideographic space
        ("ﾔﾏｸﾞﾁﾀﾛｳ", 3),  # half-width katakana (NFKC composes the voiced mark)
        ("山口太郎", 3),  # the name, without its space
        ("山口　太郎", 3),  # full-width space
        ("ＴａｒｏＹａｍａｇｕｃｈｉ", 1),  # the alias in full-width letters
        ("ヤマグチ ジロウ", 0),
    ],
)
def test_search_normalises_japanese_text(service: QueryService, name: str, expected: int) -> None:
    answer = service.search("agency-a", "T-FULL", name, dt.date(1980, 4, 1), Sex.MALE)
    assert isinstance(answer, Found)
    assert answer.total == expected


def test_old_forms_fold_where_nfkc_defines_them(service: QueryService) -> None:
    # U+FA10 is a CJK compatibility ideograph of 塚: NFKC folds it.
    found = service.search("agency-a", "T-FULL", "\ufa10本 花子", "1980-04-01", Sex.FEMALE)
    assert isinstance(found, Found) and found.total == 1
    # 髙 (U+9AD9) is a character of its own, not a compatibility form of 高: no match.
    other = service.search("agency-a", "T-FULL", "高橋 一", "1980-04-01", Sex.MALE)
    assert isinstance(other, Found) and other.total == 0
    assert _core.normalize_reading("\ufa10本") == "塚本"
    assert _core.normalize_reading("髙橋") != _core.normalize_reading("高橋")


def test_search_ranks_by_address_and_keeps_removed_records(
    service: QueryService, store: Store
) -> None:
    answer = service.search(
        "agency-a", "T-FULL", "ヤマグチタロウ", dt.date(1980, 4, 1), Sex.MALE, "萩市土原５番地"
    )
    assert isinstance(answer, Found)
    assert answer.records[0]["juminhyo_code"] == code(HAGI, 3)
    assert answer.records[0]["status"] == "removed"
    assert answer.scores == sorted(answer.scores, reverse=True)
    limited = service.search(
        "agency-a",
        "T-ADDR",
        "ヤマグチタロウ",
        dt.date(1980, 4, 1),
        Sex.MALE,
        "亀山町1番1号",
        limit=1,
    )
    assert isinstance(limited, Found)
    assert (limited.total, len(limited.records)) == (3, 1)
    assert set(limited.records[0]) == {"juminhyo_code", "name", "address", "status"}
    assert last_entry(store).codes == [code(YAMAGUCHI_CITY, 1)]


def test_search_refuses_bad_input_and_tasks_without_search(service: QueryService) -> None:
    for args in [("  ", "1980-04-01", 1), ("山口", "1980-4-1", 1), ("山口", "1980-04-01", 3)]:
        answer = service.search("agency-a", "T-FULL", *args)
        assert isinstance(answer, Denied) and answer.reason.startswith("invalid_request:")
    no = service.search("agency-a", "T-CODEONLY", "山口太郎", "1980-04-01", 1)
    assert isinstance(no, Denied) and no.reason.startswith("kind_not_allowed:")


# --- the RPC entry point -----------------------------------------------------------------------


def test_handle_bytes_in_bytes_out(service: QueryService, store: Store) -> None:
    request = encode(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1), ref="corr-1"))
    answer = decode_response(service.handle("agency-a", request))
    assert isinstance(answer, Found) and answer.records[0]["name"] == "山口 太郎"
    assert "corr-1" in last_entry(store).detail
    search = Search(
        task="T-FULL", name="やまぐちたろう", birth_date=dt.date(1980, 4, 1), sex=Sex.MALE
    )
    found = decode_response(service.handle("agency-a", encode(search)))
    assert isinstance(found, Found) and found.total == 3
    number = ByNumber(task="T-NUM", kojin_bango=kojin_bango(int(YAMAGUCHI_CITY) * 100000 + 1))
    assert isinstance(decode_response(service.handle("agency-n", encode(number))), Found)
    batch = Confirm(task="T-FULL", codes=[code(HAGI, 3)])
    confirmed = decode_response(service.handle("agency-a", encode(batch)))
    assert isinstance(confirmed, Confirmed) and confirmed.counts["removed"] == 1


def test_rpc_lookups_encode_what_the_python_path_encodes(
    reg: Registry, store: Store, service: QueryService, rng: random.Random
) -> None:
    """`handle` answers lookups with one core call that also encodes the answer
    (`Store.lookup_answer`); its bytes are those of `encode(by_code(...))`, the same
    audit id put in, for every task's fields, subsets of them, redirects, removed and
    missing records, and refusals."""
    assert tuple(f.value for f in Field) == _core.ANSWER_FIELDS
    moved = msgspec.structs.replace(
        person(YAMAGUCHI_CITY, 92, name="長い名前の人" * 6, address="山口県" * 40),
        previous_juminhyo_code=code(YAMAGUCHI_CITY, 5),
        reason=ChangeReason.JUMINHYO_CODE_CHANGE,
        changed_on=dt.date(2025, 1, 1),
    )
    reg.apply(store, [moved])
    full = [f.value for f in Field]
    asks: list[tuple[str, ByCode | ByNumber]] = []
    for n in (1, 2, 3, 4, 5, 92):
        for task in ("T-FULL", "T-ADDR", "T-NOSTATUS", "T-CODEONLY", "T-NUM"):
            asks.append(("agency-a", ByCode(task=task, code=code(YAMAGUCHI_CITY, n))))
        subset = rng.sample(full, rng.randrange(1, len(full)))
        print("fields asked:", subset)  # seeded; printed to reproduce
        asks.append(("agency-a", ByCode(task="T-FULL", code=code(HAGI, n), fields=subset)))
        number = kojin_bango(int(YAMAGUCHI_CITY) * 100000 + n)
        asks.append(("agency-n", ByNumber(task="T-NUM", kojin_bango=number, ref=f"r{n}")))
        asks.append(("agency-a", ByNumber(task="T-FULL", kojin_bango=number)))
    asks.append(("agency-a", ByCode(task="T-FULL", code="99999999999")))
    asks.append(("agency-a", ByCode(task="T-FULL", code="１２３")))
    for requester, request in asks:
        got = service.handle(requester, encode(request))
        audit_id = decode_response(got).audit_id
        if isinstance(request, ByCode):
            python = service.by_code(
                requester, request.task, request.code, request.fields, ref=request.ref
            )
        else:
            python = service.by_number(
                requester, request.task, request.kojin_bango, request.fields, ref=request.ref
            )
        assert got == encode(msgspec.structs.replace(python, audit_id=audit_id)), request
        entry = store.audit_entry(audit_id)
        assert entry is not None and (entry.requester, entry.task) == (requester, request.task)


def test_the_requester_comes_from_the_transport_not_the_body(
    service: QueryService, store: Store
) -> None:
    # A body naming a requester (someone else's, with more grants) is malformed.
    spoofed = msgspec.msgpack.encode(
        {"kind": "code", "task": "T-NUM", "code": code(YAMAGUCHI_CITY, 1), "requester": "agency-n"}
    )
    answer = decode_response(service.handle("agency-a", spoofed))
    assert isinstance(answer, Denied) and answer.reason.startswith("invalid_request:")
    assert "requester" in answer.reason
    entry = last_entry(store)
    assert (entry.requester, entry.kind, entry.allowed) == ("agency-a", "invalid", False)
    # And a well-formed request for another's task is refused as not granted.
    other = decode_response(service.handle("agency-a", encode(ByCode(task="T-NUM", code="1" * 11))))
    assert isinstance(other, Denied) and other.reason.startswith("not_granted:")
    garbage = decode_response(service.handle("agency-a", b"\xc1"))
    assert isinstance(garbage, Denied) and garbage.query == "invalid"


# --- batch confirmation ------------------------------------------------------------------------


def test_confirm_fields_follow_the_task(service: QueryService) -> None:
    codes = [code(YAMAGUCHI_CITY, 1), code(YAMAGUCHI_CITY, 2), code(HAGI, 3), "99999999999"]
    full = service.confirm("agency-a", "T-FULL", codes)
    assert isinstance(full, Confirmed)
    rows = list(full.rows(codes))
    assert [r.status for r in rows] == ["current", "moved_out", "removed", "unknown"]
    assert [r.reason for r in rows] == ["birth", "move_out", "death", None]
    assert rows[2].changed_on == "2025-06-01"
    narrow = service.confirm("agency-a", "T-ADDR", codes)  # status only
    assert isinstance(narrow, Confirmed)
    assert narrow.reasons is None and narrow.changed_on is None
    assert [r.reason for r in narrow.rows(codes)] == [None] * 4
    refused = service.confirm("small", "T-FULL", codes * 3)
    assert isinstance(refused, Denied) and refused.reason.startswith("batch_too_large:")


def test_large_confirmations_are_written_as_files(store: Store, tmp_path: Path) -> None:
    service = QueryService(
        store, make_policy(tmp_path / "policy"), out_dir=tmp_path / "out", inline_limit=2
    )
    codes = [code(YAMAGUCHI_CITY, 1), code(HAGI, 3), "12345"]
    answer = service.confirm("agency-a", "T-FULL", codes)
    assert isinstance(answer, Confirmed) and answer.file is not None and answer.status == b""
    lines = Path(answer.file).read_text(encoding="utf-8").splitlines()
    assert lines == [
        "code,status,reason,changed_on,new_code",
        f"{code(YAMAGUCHI_CITY, 1)},current,birth,2024-04-01,",
        f"{code(HAGI, 3)},removed,death,2025-06-01,",
        "12345,unknown,,,",
    ]
    assert Path(answer.file).name == f"confirm-{answer.audit_id}.csv"


# The million-code batch: residents in every state, and a Python reference.
_STATES = ("active", "move_out", "move_out_abroad", "death", "removal_by_authority", "changed")
_EXPECT = {
    "active": "current",
    "move_out": "moved_out",
    "move_out_abroad": "moved_out",
    "death": "removed",
    "removal_by_authority": "removed",
}


def _population(
    n: int,
) -> tuple[list[Update], list[Update], dict[str, tuple[str, str, str, str | None]]]:
    """Births, then the changes; and the reference: code -> (status, reason, date, new code)."""
    births, changes = [], []
    reference: dict[str, tuple[str, str, str, str | None]] = {}
    born = dt.date(2020, 1, 1)
    for k in range(n):
        origin = YAMAGUCHI_CITY if k % 2 else HAGI
        births.append(person(origin, k, changed_on=born))
        state = _STATES[k % len(_STATES)]
        when = dt.date(2024, 1, 1) + dt.timedelta(days=k % 300)
        if state == "active":
            reference[code(origin, k)] = ("current", "birth", born.isoformat(), None)
        elif state == "changed":
            new = msgspec.structs.replace(
                person(origin, k + 50_000, changed_on=when),
                previous_juminhyo_code=code(origin, k),
                reason=ChangeReason.JUMINHYO_CODE_CHANGE,
            )
            changes.append(new)
            entry = ("current", "juminhyo_code_change", when.isoformat())
            reference[code(origin, k)] = (*entry, new.juminhyo_code)
            reference[new.juminhyo_code] = (*entry, None)
        else:
            changes.append(person(origin, k, reason=ChangeReason(state), changed_on=when))
            reference[code(origin, k)] = (_EXPECT[state], state, when.isoformat(), None)
    return births, changes, reference


def test_a_million_codes_against_a_python_reference(reg: Registry) -> None:
    store = reg.open("big")
    births, changes, reference = _population(6_000)
    reg.apply(store, births)
    reg.apply(store, changes)
    rng = random.Random(5)
    known = sorted(reference)
    pool = (
        known
        + [f"{rng.randrange(10**11):011d}" for _ in range(2_000)]
        + ["", "abc", "１２３４５６７８９０１"]
    )
    codes = [rng.choice(pool) for _ in range(1_000_000)]
    result = store.confirm(codes, requester="pension", task="T-FULL", time=NOW)

    reasons = {r: i + 1 for i, r in enumerate(_core.CONFIRM_REASONS)}
    statuses = {s: i for i, s in enumerate(CONFIRM_STATUSES)}
    expected_status = bytearray(len(codes))
    expected_reason = bytearray(len(codes))
    expected_dates = array.array("I", bytes(4 * len(codes)))
    expected_redirects = {}
    for i, c in enumerate(codes):
        ref = reference.get(c)
        if ref is None:
            continue
        status, reason, date, new = ref
        expected_status[i] = statuses[status]
        expected_reason[i] = reasons[reason]
        expected_dates[i] = int(date.replace("-", ""))
        if new is not None:
            expected_redirects[i] = new
    if sys.byteorder == "big":
        expected_dates.byteswap()
    assert result.status == bytes(expected_status)
    assert result.reason == bytes(expected_reason)
    assert result.changed_on == expected_dates.tobytes()
    assert result.redirected == expected_redirects
    found = {c for c in codes if c in reference}
    touched = {reference[c][3] or c for c in found}
    assert result.touched == len(touched)
    entry = store.audit_entry(result.audit_id, with_codes=True)
    assert entry is not None and entry.items == 1_000_000 and entry.codes == sorted(touched)
    # The same answers for a handful (looked up one by one rather than scanned).
    few = codes[:50]
    small = store.confirm(few, requester="pension", task="T-FULL")
    assert small.status == result.status[:50] and small.reason == result.reason[:50]
    assert small.redirected == {i: n for i, n in expected_redirects.items() if i < 50}
    # A resident's disclosure finds the batch (a bulk entry, not indexed code by code).
    some = next(
        c for c in codes if reference.get(c, ("", "", "", None))[3] is None and c in reference
    )
    assert result.audit_id in [e.id for e in store.audit_touching(some)]


def test_a_task_used_before_its_enactment_is_refused_and_logged(
    store: Store, tmp_path: Path
) -> None:
    from jukisync.query.audit import to_micros

    before = to_micros(dt.datetime(2020, 3, 31, 23, 59))  # T-ADDR: enacted 2020-04-01
    service = QueryService(store, make_policy(tmp_path / "p"), clock=lambda: before)
    answer = service.by_code("agency-a", "T-ADDR", code(YAMAGUCHI_CITY, 1))
    assert isinstance(answer, Denied) and answer.reason.startswith("not_yet_enacted:"), answer
    entry = last_entry(store)
    assert not entry.allowed and entry.task == "T-ADDR"
    after = to_micros(dt.datetime(2020, 4, 1, 0, 0))
    service = QueryService(store, make_policy(tmp_path / "q"), clock=lambda: after)
    assert isinstance(service.by_code("agency-a", "T-ADDR", code(YAMAGUCHI_CITY, 1)), Found)


def test_the_day_of_a_query_is_japans_also_across_midnight() -> None:
    """`_day` caches the last day's bounds; instants either side of midnight in Japan
    (15:00 UTC), asked in any order, get their own date."""
    from jukisync.query.service import _day

    midnight = dt.datetime(2026, 4, 1, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    at = (midnight - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    for us, day in [
        (at - 1, dt.date(2026, 3, 31)),
        (at, dt.date(2026, 4, 1)),
        (at - 1, dt.date(2026, 3, 31)),
        (at + 86_400_000_000 - 1, dt.date(2026, 4, 1)),
        (at + 86_400_000_000, dt.date(2026, 4, 2)),
        (at - 86_400_000_000, dt.date(2026, 3, 31)),
        (at - 86_400_000_000 - 1, dt.date(2026, 3, 30)),
    ]:
        assert _day(us) == day, (us, day)
