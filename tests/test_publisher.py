"""Publisher: bundling, chaining, signing, the durable outbox and re-issue after a drop."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukisync import _core
from jukisync.publisher.bundling import BundlePolicy, ChainHead, Linger, number, rechain, seal
from jukisync.publisher.feed import Feed
from jukisync.publisher.input import BadLine, read_updates
from jukisync.publisher.origin import Publisher, PublisherError
from jukisync.publisher.outbox import OutboxEntry, OutboxError
from jukisync.wire.codes import CodeError
from jukisync.wire.messages import (
    ZERO_HASH,
    BundleBody,
    decode_body,
    decode_envelope,
    encode,
    with_seq,
)
from netkit import HAGI, YAMAGUCHI_CITY, update

ORIGIN = YAMAGUCHI_CITY


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> bytes:
    return _core.generate_signing_key()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path: Path, key: bytes, clock: FakeClock) -> Iterator[object]:
    opened: list[Publisher] = []

    def _make(max_updates: int = 3, linger_s: float = 1.0, retain: int = 100) -> Publisher:
        p = Publisher(
            ORIGIN,
            key,
            "k1",
            tmp_path / "outbox",
            policy=BundlePolicy(max_updates=max_updates, linger_s=linger_s),
            sync=False,
            retain_confirmed=retain,
            monotonic=clock,
        )
        opened.append(p)
        return p

    yield _make
    for p in opened:
        with contextlib.suppress(lmdb.Error):  # a test may have closed it already
            p.close()


def bodies(entries: list[OutboxEntry]) -> list[BundleBody]:
    return [decode_body(decode_envelope(e.envelope).body) for e in entries]


def check_chain(entries: list[OutboxEntry], key: bytes) -> None:
    """Signed, hashed, chained from ZERO_HASH, contiguous seqs from 1."""
    prev, next_seq = ZERO_HASH, 1
    for entry in entries:
        env = decode_envelope(entry.envelope)
        assert _core.verify(_core.public_key(key), env.body, env.sig)
        assert env.key_id == "k1"
        body = decode_body(env.body)
        assert entry.hash == hashlib.sha256(env.body).digest()
        assert body.prev_hash == prev
        assert body.first_seq == next_seq == entry.first_seq
        assert [u.seq for u in body.updates] == list(range(body.first_seq, body.last_seq + 1))
        prev, next_seq = entry.hash, body.last_seq + 1


# --- pure bundling -----------------------------------------------------------------------


def test_seal_refuses_a_broken_sequence() -> None:
    updates = number([update(ORIGIN, 1), update(ORIGIN, 2)], 5)
    with pytest.raises(ValueError, match="expected 1"):
        seal(ORIGIN, ChainHead(), updates, 0)
    sealed = seal(ORIGIN, ChainHead(4, b"h" * 32), updates, 7)
    body = decode_body(sealed.encoded)
    assert (sealed.first_seq, sealed.last_seq, sealed.prev_hash) == (5, 6, b"h" * 32)
    assert (body.first_seq, body.last_seq, body.prev_hash, body.created_at) == (5, 6, b"h" * 32, 7)
    assert sealed.hash == hashlib.sha256(sealed.encoded).digest()


_UINTS = st.integers(0, (1 << 64) - 1) | st.sampled_from(
    [0, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1]
)


@given(
    n=st.integers(0, 99_999),
    name=st.text(min_size=1, max_size=40),
    recorded_at=_UINTS,
    old=_UINTS,
    new=_UINTS,
)
def test_an_encoded_update_is_renumbered_to_the_bytes_encode_gives(
    n: int, name: str, recorded_at: int, old: int, new: int
) -> None:
    """The publisher encodes an update once and only replaces its seq afterwards: the
    result must be byte for byte what encoding the renumbered update gives, whatever
    width either seq takes in MessagePack (the signature covers these bytes)."""
    u = msgspec.structs.replace(update(ORIGIN, n), name=name, recorded_at=recorded_at)
    encoded = encode(msgspec.structs.replace(u, seq=old))
    assert with_seq(encoded, new) == encode(msgspec.structs.replace(u, seq=new))


def test_only_an_encoded_update_is_renumbered() -> None:
    not_updates = (b"", b"\x8f\xa3seq", msgspec.msgpack.encode({"seq": 1}), b"\x8f\xa3seq\xc0")
    for not_an_update in not_updates:
        with pytest.raises(ValueError, match="not an encoded Update"):
            with_seq(not_an_update, 1)


@given(sizes=st.lists(st.integers(0, 3), min_size=1, max_size=5), first=st.integers(1, 1 << 40))
def test_a_sealed_body_is_the_encoding_of_the_body_it_decodes_to(
    sizes: list[int], first: int
) -> None:
    """`seal` writes the updates' own bytes into the body (no re-encoding); every tier
    decodes and hashes that body, so it must equal the canonical encoding."""
    updates = [update(ORIGIN, i * 7 + s) for i, s in enumerate(sizes)]
    sealed = seal(ORIGIN, ChainHead(first - 1, b"p" * 32), number(updates, first), 9, b"s" * 32)
    body = decode_body(sealed.encoded)
    assert encode(body) == sealed.encoded
    assert [u.seq for u in body.updates] == list(range(first, first + len(updates)))
    assert body.updates == [
        msgspec.structs.replace(u, seq=x.seq) for u, x in zip(updates, body.updates, strict=True)
    ]


def test_rechain_renumbers_and_links() -> None:
    a = seal(ORIGIN, ChainHead(), number([update(ORIGIN, i) for i in range(3)], 1), 0)
    b = seal(ORIGIN, a.head, number([update(ORIGIN, i) for i in range(3, 5)], 4), 0)
    new = rechain(ChainHead(1, b"x" * 32), [decode_body(a.encoded), decode_body(b.encoded)], 9)
    assert [(s.first_seq, s.last_seq) for s in new] == [(2, 4), (5, 6)]
    assert new[0].prev_hash == b"x" * 32
    assert new[1].prev_hash == new[0].hash


def test_linger() -> None:
    linger = Linger(BundlePolicy(max_updates=10, linger_s=2.0))
    assert not linger.due(0, 0.0) and linger.wait_s(0.0) is None
    linger.opened(10.0)
    linger.opened(11.0)  # the age counts from the first update
    assert not linger.due(1, 11.9)
    assert linger.due(1, 12.0)
    assert linger.due(10, 10.0)  # full
    assert linger.wait_s(11.0) == pytest.approx(1.0)


# --- publisher -----------------------------------------------------------------------------


def test_bundles_cut_at_max_and_chained(make: object, key: bytes) -> None:
    p = make()  # type: ignore[operator]
    seqs = p.add_many([update(ORIGIN, i) for i in range(7)])
    assert seqs == list(range(1, 8))
    entries = p.unconfirmed()
    assert [(e.first_seq, e.last_seq) for e in entries] == [(1, 3), (4, 6)]
    assert p.open_count == 1 and p.next_seq == 8
    assert p.flush() is not None
    entries = p.unconfirmed()
    assert [(e.first_seq, e.last_seq) for e in entries] == [(1, 3), (4, 6), (7, 7)]
    check_chain(entries, key)
    assert p.head == ChainHead(7, entries[-1].hash)
    assert all(b.origin == ORIGIN for b in bodies(entries))


def test_linger_cuts_a_partial_bundle(make: object, clock: FakeClock) -> None:
    p = make(max_updates=100, linger_s=0.5)  # type: ignore[operator]
    p.add(update(ORIGIN, 1))
    assert p.cut_due() is None
    clock.now += 0.5
    entry = p.cut_due()
    assert entry is not None and (entry.first_seq, entry.last_seq) == (1, 1)
    assert p.wait_s() is None


def test_invalid_update_is_refused_before_anything_is_signed(make: object) -> None:
    p = make()  # type: ignore[operator]
    good = update(ORIGIN, 1)
    bad = msgspec.structs.replace(update(ORIGIN, 2), kojin_bango="983205673210")
    with pytest.raises(CodeError) as info:
        p.add_many([good, good, bad])  # would fill a bundle if it were accepted
    assert info.value.field == "kojin_bango"
    assert p.unconfirmed() == [] and p.open_count == 0 and p.next_seq == 1


def test_outbox_resumes_after_crash(make: object, key: bytes, clock: FakeClock) -> None:
    p = make()  # type: ignore[operator]
    p.add_many([update(ORIGIN, i) for i in range(5)])  # bundle 1-3 sealed, 4-5 open
    p.confirm(p.unconfirmed()[:1])
    # A crash: the process dies without flush or close; the environment is reopened.
    p._outbox._env.close()
    p._lock.release()  # the kernel drops a dead process's flock
    q = make()  # type: ignore[operator]
    assert q.next_seq == 6 and q.open_count == 2
    assert [(e.first_seq, e.last_seq) for e in q.unconfirmed()] == []  # 1-3 was confirmed
    assert q.head.last_seq == 3
    q.add(update(ORIGIN, 5))  # seq 6 completes bundle 4-6: the open ones were kept
    entries = q.resend(1)
    assert [(e.first_seq, e.last_seq) for e in entries] == [(1, 3), (4, 6)]
    check_chain(entries, key)
    assert [u.juminhyo_code for u in bodies(entries)[1].updates] == [
        update(ORIGIN, i).juminhyo_code for i in (3, 4, 5)
    ]


def test_outbox_belongs_to_one_origin(tmp_path: Path, key: bytes) -> None:
    Publisher(ORIGIN, key, "k1", tmp_path / "o", sync=False).close()
    with pytest.raises(OutboxError, match=ORIGIN):
        Publisher(HAGI, key, "k1", tmp_path / "o", sync=False)


def test_confirmed_bundles_are_retained_within_bound(make: object) -> None:
    p = make(max_updates=1, retain=2)  # type: ignore[operator]
    p.add_many([update(ORIGIN, i) for i in range(5)])
    p.confirm(p.unconfirmed()[:4])  # 1..4 confirmed, 5 not
    assert [e.first_seq for e in p.resend(3)] == [3, 4, 5]
    with pytest.raises(PublisherError, match="no longer retained"):
        p.resend(2)
    assert p.resend(6) == []
    assert [e.first_seq for e in p.unconfirmed()] == [5]


def test_unconfirmed_bundles_are_never_pruned(make: object) -> None:
    p = make(max_updates=1, retain=0)  # type: ignore[operator]
    p.add_many([update(ORIGIN, i) for i in range(3)])
    p.confirm([p.unconfirmed()[1]])  # seq 2 confirmed out of order
    assert [e.first_seq for e in p.resend(1)] == [1, 3]  # 2 pruned, 1 and 3 kept


def test_reissue_supersedes_and_rechains(make: object, key: bytes) -> None:
    p = make(max_updates=2)  # type: ignore[operator]
    p.add_many([update(ORIGIN, i) for i in range(7)])  # 1-2, 3-4, 5-6 sealed; 7 open
    first, dropped, third = p.unconfirmed()
    p.confirm([first, dropped, third])
    fixed = [update(ORIGIN, 100), update(ORIGIN, 101), update(ORIGIN, 102)]
    new = p.reissue(dropped.hash, fixed)
    assert [(e.first_seq, e.last_seq) for e in new] == [(3, 5), (6, 7)]
    new_bodies = bodies(new)
    assert new_bodies[0].supersedes == dropped.hash
    assert new_bodies[0].prev_hash == first.hash
    assert [u.juminhyo_code for u in new_bodies[0].updates] == [u.juminhyo_code for u in fixed]
    assert new_bodies[1].supersedes is None
    assert [u.juminhyo_code for u in new_bodies[1].updates] == [
        update(ORIGIN, i).juminhyo_code for i in (4, 5)
    ]
    assert p.unconfirmed() == new  # all must go out again
    assert p.open_count == 1 and p.next_seq == 9
    p.flush()
    check_chain(p.resend(1), key)
    with pytest.raises(PublisherError, match="not in the outbox"):
        p.reissue(b"\x01" * 32, fixed)


# --- the update file reader ------------------------------------------------------------


def test_file_reader_reports_bad_lines_and_keeps_the_rest(make: object, tmp_path: Path) -> None:
    good = [update(ORIGIN, i) for i in range(4)]
    bad_digit = msgspec.structs.replace(good[1], kojin_bango="983205673210")
    lines = [
        msgspec.json.encode(good[0]),
        b"",
        msgspec.json.encode(bad_digit),
        b'{"seq": 1, "name": ',
        msgspec.json.encode(good[2])
        .replace(b'"sex":1', b'"sex":"x"')
        .replace(b'"sex":2', b'"sex":"x"'),
        msgspec.json.encode(good[3]),
    ]
    items = list(read_updates(lines))
    bad = [i for i in items if isinstance(i, BadLine)]
    assert [b.line_no for b in bad] == [3, 4, 5]
    assert "kojin_bango" in bad[0].error
    assert "JSON" in bad[1].error
    assert "$.sex" in bad[2].error
    assert str(bad[0]).startswith("line 3: ")

    p = make(max_updates=10)  # type: ignore[operator]
    seen: list[BadLine] = []
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join(lines))
    feed = Feed(p, str(data), chunk=1, on_bad=seen.append)
    for _ in feed.batches():
        pass
    assert feed.report.accepted == 2 and feed.report.invalid == 3 and seen == bad
    assert p.next_seq == 3  # the file's seq values were not trusted


def test_a_fed_update_is_checked_once_and_encoded_once_for_the_check(
    make: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed checks each line as it reads it (to report bad ones); `add_many` takes
    the result as it is: the content rules and the core's verdict run once per update,
    on the bytes the type check made."""
    from jukisync.wire import codes

    p = make(max_updates=10)  # type: ignore[operator]
    lines = [msgspec.json.encode(update(ORIGIN, i)) for i in range(1, 6)]
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    rules: list[str] = []
    verdicts: list[bytes] = []
    real_rules, real_verdict = codes.validate_update, _core.validate_update

    def counted_rules(u: object, **kw: object) -> None:
        rules.append(u.juminhyo_code)  # type: ignore[attr-defined]
        real_rules(u, **kw)  # type: ignore[arg-type]

    def counted_verdict(raw: bytes, *args: object) -> str | None:
        verdicts.append(raw)
        return real_verdict(raw, *args)  # type: ignore[arg-type]

    # The publisher reaches both through their modules: patch them there.
    monkeypatch.setattr(codes, "validate_update", counted_rules)
    monkeypatch.setattr(_core, "validate_update", counted_verdict)
    feed = Feed(p, str(data))
    accepted = [u for batch in feed.batches() for u in batch]
    assert len(accepted) == 5 and p.next_seq == 6
    assert len(rules) == 5 and len(verdicts) == 5
    # The core judged the bytes made for the type check (seq 0: the publisher numbers).
    assert all(msgspec.msgpack.decode(raw)["seq"] == 0 for raw in verdicts)
    # An update that was not checked before is checked by add_many itself, once.
    p.add_many([update(ORIGIN, 9)])
    assert len(rules) == 6 and len(verdicts) == 6
