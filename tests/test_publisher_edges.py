"""The publisher's edges for municipal integrators (issue 11, items 1-4): every
invalid update refused on `add` (and the outbox still opens), the same rules as the
centres' core, one publisher per outbox across processes, bad bytes reported by line,
resume by position in an append-only file."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jukisync import Store, _core, lockfile
from jukisync.publisher.bundling import BundlePolicy, Numbered
from jukisync.publisher.feed import Feed, FeedError
from jukisync.publisher.input import BadLine
from jukisync.publisher.origin import Checked, Publisher
from jukisync.publisher.outbox import Change, Outbox, OutboxError
from jukisync.wire import codes
from jukisync.wire.codes import CodeError
from jukisync.wire.messages import ChangeReason, Update, encode
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

ORIGIN = YAMAGUCHI_CITY
KEY = _core.generate_signing_key()

# Values of each field class: most are wrong, some are right, so that the tests see
# both sides of every rule.
_DIGITS = "0123456789"
_TEXT = st.text(
    alphabet=st.sampled_from(
        [
            *"山口太郎 　ヤマグチタロウやまぐちabcー・-1\ufffd\x00\n\t\x7f\u2028\u0301\u3099",
            *("\u0085", "\ufeff", "\u200b", "\u180e"),
        ]
    ),
    max_size=12,
) | st.text(max_size=8)
_CODE = st.text(alphabet=_DIGITS + "a１", min_size=9, max_size=12)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.integers(-3, 3),
    "juminhyo_code": _CODE,
    "previous_juminhyo_code": st.none() | _CODE,
    "kojin_bango": st.text(alphabet=_DIGITS, min_size=11, max_size=13)
    | st.sampled_from(["123456789018", "983205673210", "１２３４５６７８９０１８"]),
    "name": _TEXT,
    "name_kana": st.text(alphabet="ヤマグチタロウァヺーヷ・ 　やa\u3099", max_size=10),
    "former_surname": st.none() | _TEXT,
    "alias": st.none() | _TEXT,
    "birth_date": st.dates(dt.date(1700, 1, 1), dt.date(2100, 1, 1))
    | st.sampled_from(["2024-02-30", "1990-1-1", "x"]),
    "sex": st.integers(-1, 4) | st.sampled_from(["1", "male", None]),
    "address": _TEXT,
    "municipality": st.sampled_from([ORIGIN, HAGI, CHIYODA, "352030", "000001", "35203"]),
    "reason": st.sampled_from([*ChangeReason, "marriage", "", "BIRTH"]),
    "changed_on": st.dates(dt.date(1700, 1, 1), dt.date(2100, 1, 1))
    | st.sampled_from(["2099-13-01", "today"]),
    "recorded_at": st.integers(-2, 1 << 62),
}


@st.composite
def mutated_updates(draw: st.DrawFn, min_fields: int = 1) -> tuple[Update, list[str]]:
    """A valid update with 1-3 fields replaced by values of their class."""
    base = update(ORIGIN, draw(st.integers(0, 5000)))
    fields = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), min_size=min_fields, max_size=3))
    changes = {f: draw(FIELD_VALUES[f]) for f in fields}
    return msgspec.structs.replace(base, **changes), fields


def publisher(path: Path, **kw: Any) -> Publisher:
    return Publisher(ORIGIN, KEY, "k1", path, sync=False, policy=BundlePolicy(max_updates=3), **kw)


def python_verdict(p: Publisher, candidate: Update) -> CodeError | None:
    try:
        p.validate(candidate)
    except CodeError as exc:
        return exc
    return None


# --- 1. validation on add ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["undecodable", "wrong seq"])
def test_a_damaged_open_update_is_refused_at_open_not_signed(tmp_path: Path, damage: str) -> None:
    """Open updates are kept as the bytes their bundle will carry: bytes damaged on disk
    must stop the publisher at open, naming the entry, and stay as they were."""
    p = publisher(tmp_path / "o")
    p.add(update(ORIGIN, 1))
    p.close()
    bad = msgspec.structs.replace(update(ORIGIN, 2), seq=2, sex=3)  # not a valid Update
    raw = msgspec.msgpack.encode(bad) if damage == "undecodable" else encode(update(ORIGIN, 2))
    outbox = Outbox(tmp_path / "o", ORIGIN)
    outbox.commit(Change(add_open=[Numbered(2, raw)], next_seq=3))
    before = outbox.raw_open()
    outbox.close()
    with pytest.raises(OutboxError, match="open update 2 cannot be sealed"):
        publisher(tmp_path / "o")
    outbox = Outbox(tmp_path / "o", ORIGIN)
    assert outbox.raw_open() == before and len(before) == 2
    outbox.close()


def test_the_reported_poison_is_refused_and_the_outbox_still_opens(tmp_path: Path) -> None:
    p = publisher(tmp_path / "o")
    p.add(update(ORIGIN, 1))
    poison = msgspec.structs.replace(
        update(ORIGIN, 2),
        sex=3,
        reason="marriage",
        municipality=HAGI,
        changed_on=dt.date(2099, 1, 1),
    )
    with pytest.raises(CodeError) as info:
        p.add(poison)
    assert info.value.field in ("sex", "reason", "municipality")
    p.close()
    again = publisher(tmp_path / "o")  # opens: nothing undecodable was kept
    assert again.open_count == 1 and again.next_seq == 2
    again.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_updates())
def test_every_invalid_update_is_refused_and_the_outbox_opens(
    case: tuple[Update, list[str]],
) -> None:
    candidate, fields = case
    with tempfile.TemporaryDirectory() as tmp:
        p = publisher(Path(tmp))
        p.add(update(ORIGIN, 9000))
        try:
            seq = p.add(candidate)
        except CodeError as exc:
            assert exc.field, exc  # names the field at fault
            accepted = False
        else:
            accepted = True
            assert seq == 2
        p.close()
        q = publisher(Path(tmp))  # whatever was accepted can be read back
        assert q.next_seq == (3 if accepted else 2), fields
        q.flush()
        q.close()


def _wrong_check_digit(first11: str) -> str:
    return first11 + str((codes.kojin_bango_check_digit(first11) + 1) % 10)


_BAD_TEXT = st.one_of(
    st.just(""),
    st.sampled_from([" ", "\u3000"]),
    st.builds(
        lambda a, c, b: a + c + b,
        st.text("山口太郎", max_size=3),
        st.sampled_from(["\ufffd", "\x00", "\n", "\x7f", "\u0085", "\u2028", "\u2029", "カ\u3099"]),
        st.text("山口太郎", max_size=3),
    ),
    st.integers(257, 400).map(lambda n: "山" * n),
    st.integers(0, 9),  # not a string at all
)
# Values of each field that are always wrong (with the base update's other fields).
INVALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "juminhyo_code": st.text(alphabet=_DIGITS + "a１-", max_size=14).filter(
        lambda s: not (len(s) == 11 and s.isascii() and s.isdigit())
    ),
    "previous_juminhyo_code": _CODE,  # only a code change may carry it
    "kojin_bango": st.text(alphabet=_DIGITS, min_size=11, max_size=11).map(_wrong_check_digit)
    | st.text(alphabet=_DIGITS + "x１", max_size=14).filter(lambda s: len(s) != 12),
    "name": _BAD_TEXT,
    "name_kana": st.builds(
        lambda a, c: a + c, st.text("ヤマグチ", max_size=4), st.sampled_from("やaA漢ｱ1\ufffd")
    ),
    "former_surname": _BAD_TEXT,
    "alias": _BAD_TEXT,
    "birth_date": st.dates(dt.date(2024, 4, 2), dt.date(2100, 1, 1))  # after changed_on
    | st.dates(dt.date(1, 1, 1), dt.date(1799, 12, 31))
    | st.sampled_from(["1990-02-30", "x", 19900101]),
    "sex": st.integers(-5, 300).filter(lambda n: n not in (1, 2)) | st.sampled_from(["1", None]),
    "address": _BAD_TEXT,
    "municipality": st.sampled_from([HAGI, CHIYODA, "352030", "000001", "35203", "３５２０３９"]),
    "reason": st.text(max_size=20).filter(lambda s: s not in set(ChangeReason)),
    "changed_on": st.dates(dt.date(1800, 1, 1), dt.date(1989, 12, 31))  # before birth
    | st.sampled_from(["2099-13-01", "today", None]),
    "recorded_at": st.integers(-(1 << 40), -1) | st.sampled_from(["now", 1.5]),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), field=st.sampled_from(sorted(INVALID_VALUES)))
def test_every_class_of_invalid_field_is_refused(data: st.DataObject, field: str) -> None:
    base = update(ORIGIN, data.draw(st.integers(0, 5000)))
    value = data.draw(INVALID_VALUES[field], label=field)
    candidate = msgspec.structs.replace(base, **{field: value})
    with tempfile.TemporaryDirectory() as tmp:
        p = publisher(Path(tmp))
        with pytest.raises(CodeError) as info:
            p.add(candidate)
        named = {field} | (
            {"birth_date", "changed_on"} if "date" in field or "changed" in field else set()
        )
        assert info.value.field in named, info.value
        p.close()
        q = publisher(Path(tmp))  # nothing was kept, and the outbox opens
        assert q.next_seq == 1 and q.open_count == 0
        q.close()


def _core_verdict(candidate: Update) -> str:
    """'applied' or why the centres' core refuses `candidate`, in a bundle of ORIGIN."""
    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    ring.add("centre-east")
    key_id, secret = ring.keys["centre-east"]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(
            tmp,
            role="aggregator",
            registry=ring.registry(),
            map_size=1 << 24,
            centre_id="centre-east",
            centre_key=secret,
            centre_key_id=key_id,
        )
        [result] = store.apply([origin.bundle([candidate])])
        del store  # the environment closes with its last reference
    return "applied" if result.status == "applied" else f"{result.status}: {result.reason}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_updates())
def test_the_publisher_and_the_centres_agree(case: tuple[Update, list[str]]) -> None:
    candidate, fields = case
    with tempfile.TemporaryDirectory() as tmp:
        p = publisher(Path(tmp))
        refused = python_verdict(p, candidate)
        p.close()
    try:
        core = _core_verdict(msgspec.structs.replace(candidate, seq=1))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        core = "cannot be encoded"
    # One rule set: never sign what a centre would halt on, never refuse what it takes.
    assert (refused is None) == (core == "applied"), (fields, candidate, refused, core)


# --- 2. one publisher per outbox --------------------------------------------------------


def test_a_second_publisher_on_one_outbox_is_refused_across_processes(tmp_path: Path) -> None:
    outbox = tmp_path / "o"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys
                from jukisync import _core
                from jukisync.publisher.origin import Publisher
                p = Publisher({ORIGIN!r}, _core.generate_signing_key(), "k1", {str(outbox)!r})
                print("open", flush=True)
                sys.stdin.read()
                p.close()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(
            lockfile.LockHeld, match=f"in use by another process \\(pid {holder.pid}\\)"
        ):
            publisher(outbox)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    publisher(outbox).close()  # released when the holder ended


def test_a_second_publisher_in_one_process_is_refused(tmp_path: Path) -> None:
    p = publisher(tmp_path / "o")
    with pytest.raises(lockfile.LockHeld, match="already open in this process"):
        publisher(tmp_path / "o")
    p.close()
    publisher(tmp_path / "o").close()


# --- 3. bad bytes ------------------------------------------------------------------------

_INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe", b"\xc3", b"\xe3\x81", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xf8\x88"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad_at=st.sets(st.integers(0, 9), min_size=1, max_size=4),
    junk=_INVALID_UTF8,
    where=st.sampled_from(["name", "address", "start", "end"]),
)
def test_lines_with_invalid_utf8_are_reported_and_the_rest_published(
    bad_at: set[int], junk: bytes, where: str
) -> None:
    lines = []
    for i in range(10):
        line = msgspec.json.encode(update(ORIGIN, i))
        if i in bad_at:
            if where in ("name", "address"):
                value = msgspec.json.encode(getattr(update(ORIGIN, i), where))
                line = line.replace(value, value[:-1] + junk + b'"', 1)
            else:
                line = junk + line if where == "start" else line + junk
        lines.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in.jsonl"
        data.write_bytes(b"\n".join(lines) + b"\n")
        seen: list[BadLine] = []
        p = publisher(Path(tmp) / "o")
        feed = Feed(p, str(data), on_bad=seen.append)
        for _ in feed.batches():
            pass
        assert [b.line_no for b in seen] == sorted(i + 1 for i in bad_at)
        assert all("UTF-8" in b.error for b in seen), seen
        assert feed.report.accepted == 10 - len(bad_at) == p.next_seq - 1
        p.close()


# --- 4. resume by position --------------------------------------------------------------


def _write(path: Path, updates: list[Update], mode: str = "wb") -> None:
    with path.open(mode) as f:
        f.write(msgspec.json.Encoder().encode_lines(updates))


def _fed(p: Publisher, path: Path, **kw: Any) -> Feed:
    feed = Feed(p, str(path), **kw)
    for _ in feed.batches():
        pass
    return feed


def test_a_grown_file_publishes_only_its_new_lines(tmp_path: Path, rng: random.Random) -> None:
    data = tmp_path / "in.jsonl"
    p = publisher(tmp_path / "o")
    written = 0
    for _ in range(rng.randint(2, 5)):
        more = [update(ORIGIN, written + i) for i in range(rng.randint(1, 7))]
        _write(data, more, "ab")
        written += len(more)
        feed = _fed(p, data, chunk=rng.randint(1, 4))
        assert feed.report.accepted == len(more)
        assert p.next_seq - 1 == written  # every line once, none again
    p.flush()
    codes = [u.juminhyo_code for e in p.resend(1) for u in _body(e.envelope).updates]
    assert codes == [update(ORIGIN, i).juminhyo_code for i in range(written)]
    p.close()


def _update_of(encoded: bytes) -> Update:
    return msgspec.msgpack.decode(encoded, type=Update)


def _body(envelope: bytes) -> Any:
    from jukisync.wire.messages import decode_body, decode_envelope

    return decode_body(decode_envelope(envelope).body)


@pytest.mark.parametrize("change", ["rewritten", "truncated"])
def test_a_rewritten_file_is_refused(tmp_path: Path, change: str) -> None:
    data = tmp_path / "in.jsonl"
    _write(data, [update(ORIGIN, i) for i in range(4)])
    p = publisher(tmp_path / "o")
    _fed(p, data)
    if change == "rewritten":
        _write(data, [update(ORIGIN, i) for i in range(10, 16)])
    else:
        _write(data, [update(ORIGIN, 0)])
    with pytest.raises(FeedError, match=r"lines 1-4 .* rewritten"):
        Feed(p, str(data))
    fresh = _fed(p, data, resume=False)  # the operator says every line is new
    assert fresh.report.accepted == (6 if change == "rewritten" else 1)
    p.close()


def test_a_half_written_last_line_is_read_once_complete(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    first, second = (msgspec.json.encode(update(ORIGIN, i)) for i in (1, 2))
    data.write_bytes(first + b"\n" + second[:20])
    p = publisher(tmp_path / "o")
    feed = Feed(p, str(data), follow=True, poll_s=0.01)
    lines = feed.lines()
    got = next(lines)
    assert got.line_no == 1 and isinstance(got.item, Checked)
    with data.open("ab") as f:
        f.write(second[20:] + b"\n")
    got = next(lines)
    assert got.line_no == 2 and isinstance(got.item, Checked)
    assert got.item.update.juminhyo_code == update(ORIGIN, 2).juminhyo_code
    assert got.position is not None and got.position.offset == data.stat().st_size
    feed._stop.set()
    p.close()


def test_what_an_older_publish_recorded_is_taken_over(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    _write(data, [update(ORIGIN, i) for i in range(5)])
    p = publisher(tmp_path / "o")
    p.add_many([update(ORIGIN, i) for i in range(3)])
    # The old `publish` kept "3 lines accepted" under the hash of the whole file.
    digest = hashlib.sha256(data.read_bytes()).digest()
    p.add_many([], progress=(b"file:" + digest, (3).to_bytes(8, "big")))
    feed = _fed(p, data)
    assert feed.report.resumed_after_line == 3 and feed.report.accepted == 2
    assert p.next_seq == 6
    p.close()


class AppendOnlyFeed(RuleBasedStateMachine):
    """A file that grows (whole lines, bad lines, half-written lines) and is fed again
    and again, with crashes between feeds: every valid line is accepted exactly once,
    in file order, whatever the interleaving; a half-written last line is neither lost
    nor taken in two pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.data = self.dir / "in.jsonl"
        self.data.write_bytes(b"")
        self.written: list[str] = []  # juminhyo codes of the valid complete lines
        self.pending = b""  # the start of a line not yet ended
        self.n = 0
        self.p = publisher(self.dir / "o")

    @rule(count=st.integers(1, 5), bad=st.booleans())
    def append_lines(self, count: int, bad: bool) -> None:
        chunk = self.pending  # the end of a half-written line first
        self.pending = b""
        for _ in range(count):
            u = update(ORIGIN, self.n)
            self.n += 1
            if bad and self.n % 2:
                chunk += b'{"not": "an update"}\n'
            else:
                chunk += msgspec.json.encode(u) + b"\n"
                self.written.append(u.juminhyo_code)
        with self.data.open("ab") as f:
            f.write(chunk)

    @rule(cut=st.integers(1, 40))
    def append_half_a_line(self, cut: int) -> None:
        """A line still being written: its end comes with the next append."""
        if self.pending:
            return
        u = update(ORIGIN, self.n)
        self.n += 1
        line = msgspec.json.encode(u) + b"\n"
        self.written.append(u.juminhyo_code)
        with self.data.open("ab") as f:
            f.write(line[:cut])
        self.pending = line[cut:]

    @rule(chunk=st.integers(1, 4))
    def feed(self, chunk: int) -> None:
        _fed(self.p, self.data, chunk=chunk)

    @rule()
    def crash_and_reopen(self) -> None:
        self.p._outbox._env.close()  # no flush, no close: as if killed
        self.p._lock.release()
        self.p = publisher(self.dir / "o")

    @invariant()
    def each_accepted_line_once_in_order(self) -> None:
        accepted = [u.juminhyo_code for u in self._accepted()]
        assert accepted == self.written[: len(accepted)]

    def _accepted(self) -> list[Update]:
        sealed = [u for e in self.p.resend(1) for u in _body(e.envelope).updates]
        return sealed + [_update_of(u.raw) for u in self.p._outbox.open_updates()]

    def teardown(self) -> None:
        with self.data.open("ab") as f:
            f.write(self.pending)
        _fed(self.p, self.data)
        assert [u.juminhyo_code for u in self._accepted()] == self.written
        self.p.close()
        self.tmp.cleanup()


AppendOnlyFeed.TestCase.settings = settings(max_examples=40, stateful_step_count=12, deadline=None)
test_append_only_feed = AppendOnlyFeed.TestCase
