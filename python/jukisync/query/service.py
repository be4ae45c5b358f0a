"""Purpose-bound queries (DESIGN.md §6): `QueryService` checks the policy, has the Rust
core answer (it returns the answer only once its audit entry is durable; concurrent
queries share that durable commit), and returns only the fields the task may see.

A refusal (unknown requester or task, task not granted, field not allowed, malformed
request) is an answer too, and is logged like any other query.

The service is transport-agnostic: the CLI calls its methods with `--requester`, and
an RPC server calls `handle(requester, request_bytes) -> response_bytes`, where the
requester is the broker-validated AMQP `user_id` and never part of the request body
(a request naming a requester is malformed: the Structs reject unknown fields).

Requests and responses are msgspec Structs, MessagePack on the wire, tagged by `kind`:

    request:  {"kind": "code", "task": "B5-11", "code": "12345678901"}
    response: {"kind": "found", "query": "code", "audit_id": 42, "records": [{...}], ...}
"""

from __future__ import annotations

import array
import contextlib
import csv
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Final

import msgspec

from jukisync import _core
from jukisync import clock as clock_mod
from jukisync.query.policy import Decision, Denial, Field, Kind, Policy
from jukisync.wire.codes import is_valid_juminhyo_code, is_valid_kojin_bango
from jukisync.wire.messages import Sex

__all__ = [
    "CONFIRM_STATUSES",
    "ByCode",
    "ByNumber",
    "Confirm",
    "ConfirmRow",
    "Confirmed",
    "Denied",
    "Found",
    "QueryService",
    "Request",
    "RequestError",
    "Response",
    "Search",
    "decode_request",
    "decode_response",
    "encode",
]

# The status byte of a batch confirmation (jukisync._core.ConfirmResult.status).
CONFIRM_STATUSES: Final = ("unknown", "current", "moved_out", "removed")

Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
Ref = Annotated[str, msgspec.Meta(max_length=128)]


class _Request(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="kind"
):
    task: str
    fields: list[str] | None = None  # a subset of the task's fields; None: all of them
    ref: Ref = ""  # the caller's reference (e.g. a correlation id), logged


class ByCode(_Request, tag="code", frozen=True, kw_only=True):
    code: str


class ByNumber(_Request, tag="kojin_bango", frozen=True, kw_only=True):
    kojin_bango: str


class Search(_Request, tag="search", frozen=True, kw_only=True):
    """The four basic items: name (kanji, as registered, or its alias) or reading
    (katakana, hiragana, half-width), birth date, sex; the address ranks candidates."""

    name: str
    birth_date: dt.date
    sex: Sex
    address: str | None = None
    limit: Limit = 20


class Confirm(_Request, tag="confirm", frozen=True, kw_only=True):
    """Batch confirmation (一括提供): the status of every code."""

    codes: list[str]


Request = ByCode | ByNumber | Search | Confirm

Value = str | int | None


class Denied(msgspec.Struct, tag_field="kind", tag="denied", frozen=True, kw_only=True):
    query: str  # the kind of query refused ("invalid" when it did not decode)
    reason: str  # "<denial>: <why>", naming the requester, task or field at fault
    audit_id: int


class Found(msgspec.Struct, tag_field="kind", tag="found", frozen=True, kw_only=True):
    """Records found, each holding only the fields the task may see. For a search,
    `scores` are the address similarities and `total` counts candidates before the
    limit; `redirected_from` is the code asked for when it was changed since."""

    query: str
    audit_id: int
    records: list[dict[str, Value]]
    scores: list[float] = []
    total: int = 0
    redirected_from: str | None = None


class Confirmed(msgspec.Struct, tag_field="kind", tag="confirmed", frozen=True, kw_only=True):
    """A batch confirmation's answer, compact: one status byte per code (index into
    CONFIRM_STATUSES), the reason byte (0 none, n = CONFIRM_REASONS[n - 1]) and the
    change date (u32 little-endian YYYYMMDD) per code when the task may see them, and
    the new codes of changed ones. When it was written to a file instead, `file`
    names it and the arrays are empty."""

    audit_id: int
    count: int
    counts: dict[str, int]
    status: bytes = b""
    reasons: bytes | None = None
    changed_on: bytes | None = None
    redirected: dict[int, str] = {}
    file: str | None = None

    def rows(self, codes: Sequence[str]) -> Iterator[ConfirmRow]:
        """The answer per code, in request order (`codes` as asked)."""
        if len(self.status) != len(codes):
            raise ValueError(f"{len(codes)} codes for an answer about {len(self.status)}")
        dates: array.array[int] | None = None
        if self.changed_on is not None:
            dates = array.array("I", self.changed_on)
            if sys.byteorder == "big":  # the core writes them little-endian
                dates.byteswap()
        reasons = _core.CONFIRM_REASONS
        for i, code in enumerate(codes):
            r = self.reasons[i] if self.reasons is not None else 0
            d = dates[i] if dates is not None else 0
            yield ConfirmRow(
                code,
                CONFIRM_STATUSES[self.status[i]],
                reasons[r - 1] if r else None,
                f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}" if d else None,
                self.redirected.get(i),
            )


class ConfirmRow(msgspec.Struct, array_like=True, frozen=True):
    code: str
    status: str
    reason: str | None
    changed_on: str | None
    new_code: str | None


Response = Denied | Found | Confirmed

_encoder = msgspec.msgpack.Encoder()
_request_decoder: msgspec.msgpack.Decoder[Request] = msgspec.msgpack.Decoder(Request)
_response_decoder: msgspec.msgpack.Decoder[Response] = msgspec.msgpack.Decoder(Response)


def encode(message: Request | Response) -> bytes:
    return _encoder.encode(message)


class RequestError(ValueError):
    """Bytes that are not a request, whatever is wrong with them (malformed
    MessagePack, invalid UTF-8, nesting too deep, wrong types, unknown fields)."""


def decode_request(data: bytes) -> Request:
    """A request from MessagePack; any failure to decode is a `RequestError`.

    msgspec raises more than `DecodeError` on hostile bytes: `UnicodeDecodeError` for
    invalid UTF-8 in a string, `RecursionError` for containers nested ~1000 deep. A
    request service must answer them all, so they are one error here."""
    try:
        return _request_decoder.decode(data)
    except (ValueError, RecursionError) as exc:  # DecodeError, UnicodeDecodeError
        raise RequestError(_first_line(str(exc))) from None


def _first_line(text: str, limit: int = 200) -> str:
    line = text.splitlines()[0] if text else "undecodable"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def decode_response(data: bytes) -> Response:
    return _response_decoder.decode(data)


# A dict of a record keeps the order fields are listed in the catalogue vocabulary.
_FIELD_ORDER: Final = tuple(f.value for f in Field)


class QueryService:
    """Answers queries against one tier store under one policy.

    `clock` gives the time logged (µs since the epoch); `out_dir` is where batch
    confirmations larger than `inline_limit` codes are written as CSV files.
    """

    def __init__(
        self,
        store: _core.Store,
        policy: Policy,
        *,
        clock: Callable[[], int] = clock_mod.now_us,
        out_dir: str | os.PathLike[str] | None = None,
        inline_limit: int = 100_000,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.inline_limit = inline_limit

    # --- the transport-agnostic entry point --------------------------------------------

    def handle(self, requester: str, data: bytes) -> bytes:
        """One request as MessagePack bytes in, its response out (for the RPC server)."""
        try:
            request = decode_request(data)
        except RequestError as exc:
            return encode(self._refuse(requester, "", "invalid", Denial.INVALID_REQUEST, str(exc)))
        if isinstance(request, ByCode | ByNumber):
            return self._lookup_answer(requester, request)
        return encode(self.ask(requester, request))

    def _lookup_answer(self, requester: str, request: ByCode | ByNumber) -> bytes:
        """A lookup on the RPC path: the checks of `by_code` / `by_number`, then one
        core call that reads, logs, waits for the durable commit and encodes the answer
        with the GIL released (the bytes `encode(by_code(...))` would give). Under 32
        concurrent requesters the GIL is what they queue for, so the Python done here
        per query is kept to the policy and the request."""
        if isinstance(request, ByNumber):
            kind, key, by_number = Kind.KOJIN_BANGO, request.kojin_bango, True
        else:
            kind, key, by_number = Kind.CODE, request.code, False
        checked = self._check_lookup(
            requester, request.task, kind, key, request.fields, request.ref
        )
        if isinstance(checked, Denied):
            return encode(checked)
        now, decision = checked
        return self.store.lookup_answer(
            key,
            requester=requester,
            task=request.task,
            fields=_field_mask(decision.fields),
            by_number=by_number,
            time=now,
            detail=request.ref,
        )

    def ask(self, requester: str, request: Request) -> Response:
        if isinstance(request, ByCode):
            return self.by_code(
                requester, request.task, request.code, request.fields, ref=request.ref
            )
        if isinstance(request, ByNumber):
            return self.by_number(
                requester, request.task, request.kojin_bango, request.fields, ref=request.ref
            )
        if isinstance(request, Search):
            return self.search(
                requester,
                request.task,
                request.name,
                request.birth_date,
                request.sex,
                request.address,
                limit=request.limit,
                fields=request.fields,
                ref=request.ref,
            )
        return self.confirm(requester, request.task, request.codes, request.fields, ref=request.ref)

    # --- the four kinds ---------------------------------------------------------------

    def by_code(
        self,
        requester: str,
        task: str,
        code: str,
        fields: Sequence[str] | None = None,
        *,
        ref: str = "",
    ) -> Found | Denied:
        checked = self._check_lookup(requester, task, Kind.CODE, code, fields, ref)
        if isinstance(checked, Denied):
            return checked
        now, decision = checked
        result = self.store.lookup(code, requester=requester, task=task, time=now, detail=ref)
        return self._found(Kind.CODE, result, decision)

    def by_number(
        self,
        requester: str,
        task: str,
        kojin_bango: str,
        fields: Sequence[str] | None = None,
        *,
        ref: str = "",
    ) -> Found | Denied:
        checked = self._check_lookup(requester, task, Kind.KOJIN_BANGO, kojin_bango, fields, ref)
        if isinstance(checked, Denied):
            return checked
        now, decision = checked
        result = self.store.lookup_number(
            kojin_bango, requester=requester, task=task, time=now, detail=ref
        )
        return self._found(Kind.KOJIN_BANGO, result, decision)

    def search(
        self,
        requester: str,
        task: str,
        name: str,
        birth_date: dt.date | str,
        sex: int,
        address: str | None = None,
        *,
        limit: int = 20,
        fields: Sequence[str] | None = None,
        ref: str = "",
    ) -> Found | Denied:
        now = self.clock()
        decision = self.policy.decide(requester, task, Kind.SEARCH, fields, on=_day(now))
        if not decision.allowed:
            return self._deny(requester, task, Kind.SEARCH, decision, ref=ref, now=now)
        problem = _search_problem(name, birth_date, sex, limit)
        if problem is not None:
            return self._refuse(
                requester, task, Kind.SEARCH, Denial.INVALID_REQUEST, problem, ref=ref, now=now
            )
        birth = birth_date.isoformat() if isinstance(birth_date, dt.date) else birth_date
        result = self.store.search(
            name,
            birth,
            int(sex),
            address,
            requester=requester,
            task=task,
            limit=limit,
            time=now,
            detail=ref,
        )
        records = [_filtered(c.record, decision) for c in result.candidates]
        return Found(
            query=Kind.SEARCH.value,
            audit_id=result.audit_id,
            records=records,
            scores=[round(c.score, 4) for c in result.candidates],
            total=result.total,
        )

    def confirm(
        self,
        requester: str,
        task: str,
        codes: Sequence[str],
        fields: Sequence[str] | None = None,
        *,
        out: str | os.PathLike[str] | None = None,
        ref: str = "",
    ) -> Confirmed | Denied:
        """Batch confirmation. The answer is written to `out` (CSV) when given, or to
        `out_dir` when the batch is larger than `inline_limit`."""
        now = self.clock()
        decision = self.policy.decide(
            requester, task, Kind.CONFIRM, fields, items=len(codes), on=_day(now)
        )
        if not decision.allowed:
            return self._deny(
                requester, task, Kind.CONFIRM, decision, items=len(codes), ref=ref, now=now
            )
        codes = codes if isinstance(codes, list) else list(codes)
        result = self.store.confirm(codes, requester=requester, task=task, time=now, detail=ref)
        answer = Confirmed(
            audit_id=result.audit_id,
            count=len(result),
            counts=result.counts(),
            status=result.status,
            reasons=result.reason if Field.REASON in decision.fields else None,
            changed_on=result.changed_on if Field.CHANGED_ON in decision.fields else None,
            redirected=result.redirected if Field.JUMINHYO_CODE in decision.fields else {},
        )
        path: Path | None = Path(out) if out is not None else None
        if path is None and self.out_dir is not None and len(codes) > self.inline_limit:
            path = self.out_dir / f"confirm-{result.audit_id}.csv"
        if path is None:
            return answer
        write_confirmation(path, answer, codes)
        return msgspec.structs.replace(
            answer, status=b"", reasons=None, changed_on=None, redirected={}, file=str(path)
        )

    # --- helpers ----------------------------------------------------------------------

    def _check_lookup(
        self,
        requester: str,
        task: str,
        kind: Kind,
        key: str,
        fields: Sequence[str] | None,
        ref: str,
    ) -> tuple[int, Decision] | Denied:
        """(the time to log, the policy's decision) for a lookup that may go ahead, or
        its refusal, logged."""
        now = self.clock()  # once: the day checked is the time logged
        decision = self.policy.decide(requester, task, kind, fields, on=_day(now))
        if not decision.allowed:
            return self._deny(requester, task, kind, decision, ref=ref, now=now)
        if kind is Kind.CODE:
            if not is_valid_juminhyo_code(key):
                why = f"{key!r} is not a 住民票コード (11 ASCII digits)"
                return self._refuse(
                    requester, task, kind, Denial.INVALID_REQUEST, why, ref=ref, now=now
                )
        elif not is_valid_kojin_bango(key):
            # The number itself is not logged: a mistyped number is still someone's.
            why = "not a 個人番号 (12 digits with a valid check digit)"
            return self._refuse(
                requester, task, kind, Denial.INVALID_REQUEST, why, ref=ref, now=now
            )
        return now, decision

    def _found(self, kind: Kind, result: _core.LookupResult, decision: Decision) -> Found:
        records = [] if result.record is None else [_filtered(result.record, decision)]
        redirected = result.redirected_from if Field.JUMINHYO_CODE in decision.fields else None
        return Found(
            query=kind.value,
            audit_id=result.audit_id,
            records=records,
            total=len(records),
            redirected_from=redirected,
        )

    def _deny(
        self,
        requester: str,
        task: str,
        kind: str,
        decision: Decision,
        *,
        items: int = 1,
        ref: str = "",
        now: int | None = None,
    ) -> Denied:
        audit_id = self.store.audit_log(
            str(kind),
            requester=requester,
            task=task,
            allowed=False,
            reason=decision.reason,
            items=items,
            time=self.clock() if now is None else now,
            detail=ref,
        )
        return Denied(query=str(kind), reason=decision.reason, audit_id=audit_id)

    def _refuse(
        self,
        requester: str,
        task: str,
        kind: str,
        denial: Denial,
        why: str,
        *,
        ref: str = "",
        now: int | None = None,
    ) -> Denied:
        return self._deny(requester, task, kind, Decision.deny(denial, why), ref=ref, now=now)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# (first µs, end µs, date) of the last Japanese day asked about: every query asks
# for its day, and the time-zone arithmetic costs more than the rest of the policy.
_last_day: tuple[int, int, dt.date] = (0, 0, dt.date.min)


def _day(us: int) -> dt.date:
    """The date in Japan at `us` µs since the epoch (the day a query is made on)."""
    global _last_day
    first, end, day = _last_day
    if first <= us < end:
        return day
    day = (_EPOCH + dt.timedelta(microseconds=us)).astimezone(clock_mod.JST).date()
    midnight = dt.datetime.combine(day, dt.time(), clock_mod.JST)
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), clock_mod.JST)
    one_us = dt.timedelta(microseconds=1)
    _last_day = ((midnight - _EPOCH) // one_us, (next_midnight - _EPOCH) // one_us, day)
    return day


# Each field's bit in an answer-field mask (bit i: `_core.ANSWER_FIELDS[i]`, the order of
# `Field`, checked by tests/test_query.py).
_FIELD_BITS: Final = {Field(name): 1 << i for i, name in enumerate(_core.ANSWER_FIELDS)}


def _field_mask(fields: frozenset[Field]) -> int:
    return sum(_FIELD_BITS[f] for f in fields)


def _search_problem(name: str, birth_date: dt.date | str, sex: int, limit: int) -> str | None:
    if not _core.normalize_reading(name):
        return "name: empty once normalised"
    if isinstance(birth_date, str):
        try:
            dt.date.fromisoformat(birth_date)
        except ValueError:
            return f"birth_date: {birth_date!r} is not a date (YYYY-MM-DD)"
        if len(birth_date) != 10:
            return f"birth_date: {birth_date!r} is not YYYY-MM-DD"
    if sex not in (1, 2):
        return f"sex: {sex!r} is neither 1 (male) nor 2 (female)"
    if not 1 <= limit <= 100:
        return f"limit: {limit} is not within 1..100"
    return None


def _filtered(record: _core.Record, decision: Decision) -> dict[str, Value]:
    full = record.to_dict()
    allowed = decision.fields
    return {name: full[name] for name in _FIELD_ORDER if name in allowed}


def write_confirmation(path: Path, answer: Confirmed, codes: Sequence[str]) -> None:
    """The answer as CSV (code, status, reason, changed_on, new_code), written to a
    temporary name and renamed, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(ConfirmRow.__struct_fields__)
            writer.writerows(
                (r.code, r.status, r.reason or "", r.changed_on or "", r.new_code or "")
                for r in answer.rows(codes)
            )
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
