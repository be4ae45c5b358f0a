"""Reading the audit trail (DESIGN.md §6): the usage report per task and category per
fiscal year, one resident's provision history, purging beyond retention, anomalies.

The log itself lives in the tier store, written by the Rust core in the transaction of
each answer and hash-chained (`Store.audit_verify`); this module only reads it (and
logs what it does with it: a disclosure and a purge are entries too).

Fiscal years (年度) run April 1 – March 31, Japan time (Asia/Tokyo). They are labelled
with the Japanese era by this rule: **a fiscal year takes the era name of the calendar
year it starts in, and a calendar year in which the era changed takes the new era**
(its 元年). So FY2014 is 平成26年度, FY2026 令和8年度, FY1989 平成元年度 (昭和 ended on
1989-01-07), FY1988 昭和63年度, and FY2019 令和元年度 — the name the government used
for it once 令和 began on 2019-05-01; documents of April 2019 called it 平成31年度.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from jukisync import _core, clock
from jukisync.query.policy import Basis, Catalogue, Denial, Kind, Policy, Thresholds

__all__ = [
    "DISCLOSE_KIND",
    "ERAS",
    "JST",
    "QUERY_KINDS",
    "Anomaly",
    "NotAnAuditor",
    "Provision",
    "UsageCategory",
    "UsageReport",
    "UsageRow",
    "anomalies",
    "disclose",
    "era_year",
    "fiscal_year",
    "fiscal_year_label",
    "fiscal_year_range",
    "from_micros",
    "purge",
    "retention_cutoff",
    "to_micros",
    "usage",
    "usage_csv",
    "usage_json",
]

JST: Final = clock.JST
QUERY_KINDS: Final = frozenset(k.value for k in Kind)
DISCLOSE_KIND: Final = "disclose"
DISCLOSE_TASK: Final = "disclosure"  # the task logged for a resident's own disclosure
PURGE_TASK: Final = "retention"
PURGE_KIND: Final = "purge"  # the kind the store logs a purge under

# (name, first day), newest first. 明治 is counted from 1868 (its 元年), as the era
# was applied to the whole year.
ERAS: Final = (
    ("令和", dt.date(2019, 5, 1)),
    ("平成", dt.date(1989, 1, 8)),
    ("昭和", dt.date(1926, 12, 25)),
    ("大正", dt.date(1912, 7, 30)),
    ("明治", dt.date(1868, 1, 1)),
)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_micros(t: dt.datetime) -> int:
    """µs since the epoch of an aware datetime (a naive one is taken as Japan time)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=JST)
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def from_micros(us: int) -> dt.datetime:
    """Japan time of µs since the epoch."""
    return (_EPOCH + dt.timedelta(microseconds=us)).astimezone(JST)


def fiscal_year(t: int | dt.datetime) -> int:
    """The fiscal year (年度) of a time: FY N runs from April 1 of N, Japan time."""
    local = from_micros(t) if isinstance(t, int) else t.astimezone(JST)
    return local.year if local.month >= 4 else local.year - 1


def fiscal_year_range(fy: int) -> tuple[int, int]:
    """[start, end) of fiscal year `fy` in µs: April 1 00:00 JST to the next April 1."""
    start = dt.datetime(fy, 4, 1, tzinfo=JST)
    end = dt.datetime(fy + 1, 4, 1, tzinfo=JST)
    return to_micros(start), to_micros(end)


def era_year(year: int) -> str:
    """A calendar year in the Japanese era (the new era for a year of change): 令和元年."""
    for name, first in ERAS:
        if year >= first.year:
            n = year - first.year + 1
            return f"{name}{'元' if n == 1 else n}年"
    raise ValueError(f"{year} is before 明治 (1868)")


def fiscal_year_label(fy: int) -> str:
    """令和8年度 for FY2026 (see the module docstring for the rule)."""
    return era_year(fy) + "度"


# --- the usage report ------------------------------------------------------------------------


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    name: str
    counts: list[int]  # per fiscal year, in `UsageReport.fiscal_years` order
    total: int
    # The first fiscal year the task existed in (its ordinance's enactment), if later
    # than the first year of the report: earlier years print "-", as the seed's table.
    enacted_fy: int | None = None

    def cells(self, fiscal_years: Sequence[int]) -> list[str]:
        """The counts as printed: "-" for a year before the task existed (unless
        something was counted in it all the same: data is never hidden)."""
        return [
            "-" if n == 0 and self.enacted_fy is not None and fy < self.enacted_fy else f"{n:,}"
            for fy, n in zip(fiscal_years, self.counts, strict=True)
        ]


class UsageCategory(msgspec.Struct, frozen=True, kw_only=True):
    """A 区分: an ordinance category, or the tasks of one other legal basis."""

    code: str
    name: str
    tasks: list[UsageRow]
    counts: list[int]
    total: int


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Uses (件数) per task and category per fiscal year, shaped like the seed's table.

    A use is one subject asked about by an allowed query: 1 per lookup or search, n
    for a batch confirmation of n codes. `requests` counts allowed queries, `denied`
    refused ones. `checkpoint` is the log's head when the report was made (id, hash):
    kept with the report, it lets `jukisync audit verify --checkpoint` prove later
    that the entries counted here were not rewritten.
    """

    authority: str
    fiscal_years: list[int]
    labels: list[str]
    categories: list[UsageCategory]
    counts: list[int]
    total: int
    requests: list[int]
    denied: list[int]
    checkpoint: tuple[int, str]


_OUTSIDE: Final = ("-", "(カタログ外の事務)")


def _enacted_fy(catalogue: Catalogue, task: str) -> int | None:
    known = catalogue.task(task)
    if known is None or known.enacted is None:
        return None
    return fiscal_year(dt.datetime.combine(known.enacted, dt.time(), JST))


def _groups(catalogue: Catalogue) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(code, name, [(task code, task name)]): the tasks of each legal basis other than
    an ordinance (別表第5 ...) in the order of `Basis`, then each ordinance category in
    the catalogue's order, tasks in the catalogue's order."""
    by_basis: dict[Basis, list[tuple[str, str]]] = defaultdict(list)
    by_category: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for task in catalogue.tasks:
        if task.basis is Basis.ORDINANCE and task.category is not None:
            by_category[task.category].append((task.code, task.name))
        else:
            by_basis[task.basis].append((task.code, task.name))
    groups = [(b.value, b.label, by_basis[b]) for b in Basis if by_basis.get(b)]
    groups += [(c.code, c.name, by_category[c.code]) for c in catalogue.categories]
    return groups


def usage(
    store: _core.Store, catalogue: Catalogue, first_fy: int, last_fy: int | None = None
) -> UsageReport:
    last_fy = first_fy if last_fy is None else last_fy
    if last_fy < first_fy:
        raise ValueError(f"fiscal years {first_fy}..{last_fy}: the range is empty")
    years = list(range(first_fy, last_fy + 1))
    start, _ = fiscal_year_range(first_fy)
    _, end = fiscal_year_range(last_fy)
    per_task: dict[str, list[int]] = defaultdict(lambda: [0] * len(years))
    requests = [0] * len(years)
    denied = [0] * len(years)
    head = store.audit_head()
    for e in store.audit_entries(start, end):
        if e.kind not in QUERY_KINDS:
            continue
        y = fiscal_year(e.time) - first_fy
        if e.allowed:
            per_task[e.task][y] += e.items
            requests[y] += 1
        else:
            denied[y] += 1
    groups = _groups(catalogue)
    known = {code for _, _, tasks in groups for code, _ in tasks}
    outside = sorted(t for t in per_task if t not in known)
    if outside:
        groups.append((_OUTSIDE[0], _OUTSIDE[1], [(t, "") for t in outside]))
    categories = []
    for code, name, tasks in groups:
        rows = [
            UsageRow(
                task=t,
                name=n,
                counts=list(per_task[t]),
                total=sum(per_task[t]),
                enacted_fy=_enacted_fy(catalogue, t),
            )
            for t, n in tasks
        ]
        counts = [sum(r.counts[i] for r in rows) for i in range(len(years))]
        categories.append(
            UsageCategory(code=code, name=name, tasks=rows, counts=counts, total=sum(counts))
        )
    totals = [sum(c.counts[i] for c in categories) for i in range(len(years))]
    return UsageReport(
        authority=catalogue.authority,
        fiscal_years=years,
        labels=[fiscal_year_label(y) for y in years],
        categories=categories,
        counts=totals,
        total=sum(totals),
        requests=requests,
        denied=denied,
        checkpoint=(head[1], head[2].hex()),
    )


def usage_csv(report: UsageReport) -> str:
    """One row per task, then a subtotal per category and the total; `row` says which."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["row", "category_code", "category", "task", "name", *report.labels, "合計"])
    for cat in report.categories:
        for r in cat.tasks:
            cells = [c.replace(",", "") for c in r.cells(report.fiscal_years)]
            w.writerow(["task", cat.code, cat.name, r.task, r.name, *cells, r.total])
        w.writerow(["subtotal", cat.code, cat.name, "", "小計", *cat.counts, cat.total])
    w.writerow(["total", "", "", "", "合計", *report.counts, report.total])
    return out.getvalue()


def usage_json(report: UsageReport) -> bytes:
    return msgspec.json.encode(report)


# --- disclosure ------------------------------------------------------------------------------


class Provision(msgspec.Struct, frozen=True, kw_only=True):
    """One provision of a resident's record: when, to whom, for which task."""

    audit_id: int
    time: str  # ISO 8601, Japan time
    requester: str
    requester_name: str | None
    task: str
    task_name: str | None
    kind: str


class NotAnAuditor(Exception):
    """`audit disclose|purge` by someone the policy does not list as an auditor; the
    refusal was logged."""


def _require_auditor(
    store: _core.Store,
    policy: Policy,
    requester: str,
    kind: str,
    task: str,
    *,
    codes: Sequence[str] = (),
    now: int | None,
) -> None:
    if policy.auditor(requester) is not None:
        return
    why = f"{Denial.NOT_AN_AUDITOR.value}: {requester!r} is not an auditor of {policy.source}"
    store.audit_log(
        kind, requester=requester, task=task, allowed=False, reason=why, codes=list(codes), time=now
    )
    raise NotAnAuditor(why)


def disclose(
    store: _core.Store, policy: Policy, code: str, *, auditor: str, now: int | None = None
) -> list[Provision]:
    """The provision history of the resident of `code` (いつ、どこへ、何のために),
    oldest first, under every 住民票コード they have had (code changes followed both
    ways); the disclosure is itself logged as touching those records. Only an auditor
    of the policy may ask (NotAnAuditor otherwise, the refusal logged)."""
    _require_auditor(store, policy, auditor, DISCLOSE_KIND, DISCLOSE_TASK, codes=[code], now=now)
    # The resident's former and later 住民票コード too: provisions before a code change
    # were made under the old one.
    codes = store.codes_of(code)
    touching = {e.id: e for c in codes for e in store.audit_touching(c)}
    history = []
    for e in sorted(touching.values(), key=lambda e: e.id):
        if not e.allowed:
            continue
        requester = policy.requester(e.requester)
        task = policy.task(e.task)
        history.append(
            Provision(
                audit_id=e.id,
                time=from_micros(e.time).isoformat(),
                requester=e.requester,
                requester_name=requester.name if requester else None,
                task=e.task,
                task_name=task.name if task else ("本人開示" if e.kind == DISCLOSE_KIND else None),
                kind=e.kind,
            )
        )
    store.audit_log(
        DISCLOSE_KIND,
        requester=auditor,
        task=DISCLOSE_TASK,
        allowed=True,
        codes=codes,
        time=now,
        detail=f"{len(history)} provisions disclosed",
    )
    return history


# --- retention -------------------------------------------------------------------------------


def retention_cutoff(now: int, years: int) -> int:
    """`years` years before `now`, same Japan-time date and hour (Feb 29 → Feb 28)."""
    local = from_micros(now)
    try:
        earlier = local.replace(year=local.year - years)
    except ValueError:
        earlier = local.replace(year=local.year - years, day=28)
    return to_micros(earlier)


def purge(
    store: _core.Store, policy: Policy, *, years: int, requester: str, now: int | None = None
) -> _core.PurgeResult:
    """Remove the entries older than the retention period; the purge is logged. Only
    an auditor of the policy may purge (NotAnAuditor otherwise, the refusal logged)."""
    if years < 1:
        raise ValueError(f"retention of {years} years: must be at least 1")
    now = now if now is not None else clock.now_us()
    _require_auditor(store, policy, requester, PURGE_KIND, PURGE_TASK, now=now)
    return store.audit_purge(
        retention_cutoff(now, years), requester=requester, task=PURGE_TASK, time=now
    )


# --- anomalies -------------------------------------------------------------------------------


class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    kind: str  # late_night | mass_search | repeated_denials
    requester: str
    start: str  # ISO 8601, Japan time
    end: str
    count: int
    detail: str


_SINGLE_KINDS: Final = frozenset({Kind.CODE.value, Kind.KOJIN_BANGO.value, Kind.SEARCH.value})


def _bursts(times: Sequence[int], window: int, threshold: int) -> list[tuple[int, int, int]]:
    """Spans (first, last, count) where at least `threshold` of the sorted `times` fall
    within `window` µs of each other; overlapping spans merged."""
    spans: list[tuple[int, int]] = []
    i = 0
    for j, t in enumerate(times):
        while t - times[i] >= window:
            i += 1
        if j - i + 1 >= threshold:
            if spans and times[i] <= spans[-1][1]:
                spans[-1] = (spans[-1][0], t)
            else:
                spans.append((times[i], t))
    return [(a, b, bisect.bisect_right(times, b) - bisect.bisect_left(times, a)) for a, b in spans]


def _at_night(t: int, th: Thresholds) -> bool:
    clock = from_micros(t).time()
    if th.night_start <= th.night_end:
        return th.night_start <= clock < th.night_end
    return clock >= th.night_start or clock < th.night_end


def anomalies(entries: Iterable[_core.AuditEntry], thresholds: Thresholds) -> list[Anomaly]:
    """Late-night use, mass single queries and repeated refusals, per requester, in
    the thresholds of the policy (`[anomalies]`). `entries` in time order."""
    found: list[Anomaly] = []
    night: dict[tuple[str, dt.date], list[int]] = defaultdict(list)
    singles: dict[str, list[int]] = defaultdict(list)
    denials: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        if e.kind not in QUERY_KINDS:
            continue
        if _at_night(e.time, thresholds):
            local = from_micros(e.time)
            # A night belongs to the evening it starts on.
            evening = (
                local.date()
                if local.time() >= thresholds.night_end
                else (local.date() - dt.timedelta(days=1))
            )
            night[(e.requester, evening)].append(e.time)
        if e.kind in _SINGLE_KINDS:
            singles[e.requester].append(e.time)
        if not e.allowed:
            denials[e.requester].append(e.time)

    def iso(us: int) -> str:
        return from_micros(us).isoformat()

    for (requester, evening), times in sorted(night.items()):
        found.append(
            Anomaly(
                kind="late_night",
                requester=requester,
                start=iso(times[0]),
                end=iso(times[-1]),
                count=len(times),
                detail=f"{len(times)} queries in the night of {evening.isoformat()} "
                f"({thresholds.night_start:%H:%M}–{thresholds.night_end:%H:%M})",
            )
        )
    minute = 60_000_000
    for kind, per_requester, window_min, threshold, what in (
        (
            "mass_search",
            singles,
            thresholds.mass_window_minutes,
            thresholds.mass_queries + 1,
            "single queries",
        ),
        (
            "repeated_denials",
            denials,
            thresholds.denial_window_minutes,
            thresholds.denials,
            "refusals",
        ),
    ):
        for requester, times in sorted(per_requester.items()):
            times.sort()
            for a, b, n in _bursts(times, window_min * minute, threshold):
                found.append(
                    Anomaly(
                        kind=kind,
                        requester=requester,
                        start=iso(a),
                        end=iso(b),
                        count=n,
                        detail=f"{n} {what} between {iso(a)} and {iso(b)} "
                        f"(threshold {threshold} within {window_min} min)",
                    )
                )
    found.sort(key=lambda a: (a.start, a.kind, a.requester))
    return found
