"""Lag bookkeeping, the request limiter and signed head announcements (tier/lag.py,
trust/heads.py): the rules, over the whole class of inputs where it is wide."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukisync.tier.lag import HeadBook, KnownHead, RequestLimiter, lag
from jukisync.trust.heads import HeadRejected, sign_head, verify_head
from jukisync.wire.messages import (
    Head,
    HeadAnnouncement,
    RepairRequest,
    decode_heads_message,
    encode,
)
from netkit import KeyRing, update

ORIGIN = "352039"
OTHER = "352021"
NOW = 1_780_000_000_000_000  # µs; a fixed instant, never the wall clock

seqs = st.integers(min_value=0, max_value=10**9)
times = st.integers(min_value=0, max_value=2 * NOW)


def _head(seq: int, *, hash_: bytes = b"\1" * 32, created_at: int = NOW - 5_000_000) -> Head:
    return Head(origin=ORIGIN, seq=seq, hash=hash_, created_at=created_at, announced_at=NOW)


# --- lag ---------------------------------------------------------------------------------


@given(applied=seqs, announced=seqs, pending_top=seqs, created_at=times, now=times)
def test_lag_is_what_is_known_to_exist_beyond_the_head(
    applied: int, announced: int, pending_top: int, created_at: int, now: int
) -> None:
    known = KnownHead(announced, b"\0" * 32, created_at, ORIGIN)
    result = lag(applied, known, pending_top, now)
    assert result.seqs == max(0, max(announced, pending_top) - applied)
    assert result.seconds >= 0
    if announced <= applied:
        assert result.seconds == 0  # caught up with the announcement: nothing stale
    else:
        assert result.seconds == max(0, now - created_at) / 1e6


@given(applied=seqs, pending_top=seqs, now=times)
def test_lag_without_announcement_counts_pending_only(
    applied: int, pending_top: int, now: int
) -> None:
    result = lag(applied, None, pending_top, now)
    assert (result.seqs, result.seconds) == (max(0, pending_top - applied), 0.0)


@given(st.lists(st.tuples(seqs, st.binary(min_size=32, max_size=32)), min_size=1))
def test_head_book_keeps_the_highest_and_notes_conflicts(
    heads: list[tuple[int, bytes]],
) -> None:
    book = HeadBook()
    kept: tuple[int, bytes] | None = None  # the model: highest seq, first hash heard of it
    conflict = False
    for seq, hash_ in heads:
        raised = book.observe(_head(seq, hash_=hash_))
        assert raised == (kept is None or seq > kept[0])
        if kept is None or seq > kept[0]:
            kept = (seq, hash_)
        elif seq == kept[0] and hash_ != kept[1]:
            conflict = True
    known = book.known(ORIGIN)
    assert known is not None and kept is not None
    assert (known.seq, known.hash) == kept
    assert (ORIGIN in book.conflicts) == conflict


# --- the request limiter -----------------------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.floats(min_value=0, max_value=5)),
    max_size=200,
)


@given(
    steps=steps,
    interval=st.floats(min_value=0, max_value=2),
    rate=st.floats(min_value=0.5, max_value=50),
    burst=st.integers(min_value=1, max_value=10),
)
def test_limiter_bounds_requests_per_key_and_overall(
    steps: list[tuple[str, float]], interval: float, rate: float, burst: int
) -> None:
    limiter = RequestLimiter(interval_s=interval, rate_per_s=rate, burst=burst)
    now = 0.0
    granted: list[tuple[str, float]] = []
    for key, advance in steps:
        now += advance
        if limiter.allow(key, now):
            granted.append((key, now))
    for key in {k for k, _ in granted}:
        times_ = [t for k, t in granted if k == key]
        assert all(b - a >= interval for a, b in itertools.pairwise(times_))
    # Over any window [t0, t1]: at most the burst plus what the rate refilled.
    instants = [t for _, t in granted]
    for i, start in enumerate(instants):
        for j in range(i, len(instants)):
            window = instants[j] - start
            assert j - i + 1 <= burst + window * rate + 1e-9


def test_limiter_forget_lets_the_next_request_through() -> None:
    limiter = RequestLimiter(interval_s=10, rate_per_s=100, burst=5)
    assert limiter.allow("o", 0.0)
    assert not limiter.allow("o", 1.0)
    limiter.forget("o")
    assert limiter.allow("o", 1.0)


# --- signed announcements ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    keyring = KeyRing()
    for owner in (ORIGIN, OTHER, "centre-a"):
        keyring.add(owner)
    return keyring


def _announce(ring: KeyRing, owner: str, head: Head) -> HeadAnnouncement:
    message = decode_heads_message(sign_head(head, ring.key_id(owner), ring.secret(owner)))
    assert isinstance(message, HeadAnnouncement)
    return message


def test_origin_and_centre_heads_verify(ring: KeyRing) -> None:
    registry = ring.registry()
    head = _head(7)
    assert verify_head(_announce(ring, ORIGIN, head), registry, now_us=NOW) == head
    relayed = msgspec.structs.replace(head, relayed_by="centre-a")
    assert verify_head(_announce(ring, "centre-a", relayed), registry, now_us=NOW) == relayed


@pytest.mark.parametrize(
    ("signer", "relayed_by", "why"),
    [
        (OTHER, None, "signed by 352021's key"),  # another origin's head
        ("centre-a", None, "signed by centre-a's key"),  # a centre speaking as the origin
        (OTHER, OTHER, "relayed by"),  # an origin passing itself off as a centre
        ("centre-a", "centre-b", "relayed by"),  # a centre speaking for another
    ],
)
def test_heads_signed_against_the_role_rules_are_refused(
    ring: KeyRing, signer: str, relayed_by: str | None, why: str
) -> None:
    head = msgspec.structs.replace(_head(7), relayed_by=relayed_by)
    with pytest.raises(HeadRejected, match=why):
        verify_head(_announce(ring, signer, head), ring.registry(), now_us=NOW)


def test_tampered_future_or_unknown_heads_are_refused(ring: KeyRing) -> None:
    registry = ring.registry()
    good = _announce(ring, ORIGIN, _head(7))
    tampered = msgspec.structs.replace(good, body=encode(_head(8)))
    with pytest.raises(HeadRejected, match="bad signature"):
        verify_head(tampered, registry, now_us=NOW)
    with pytest.raises(HeadRejected, match="unknown key"):
        verify_head(msgspec.structs.replace(good, key_id="nobody"), registry, now_us=NOW)
    future = _announce(ring, ORIGIN, msgspec.structs.replace(_head(7), announced_at=NOW + 10**12))
    with pytest.raises(HeadRejected, match="future"):
        verify_head(future, registry, now_us=NOW)


def test_heads_messages_refuse_unknown_fields() -> None:
    request = RepairRequest(
        origin=ORIGIN, from_seq=3, max_bundles=10, requester="national", to="national"
    )
    assert decode_heads_message(encode(request)) == request
    raw = msgspec.msgpack.decode(encode(request))
    raw["extra"] = 1
    with pytest.raises(msgspec.ValidationError):
        decode_heads_message(msgspec.msgpack.encode(raw))


def test_publisher_announces_its_confirmed_head(tmp_path: Path) -> None:
    """Only what the transport confirmed is announced: the centres can have it."""
    from jukisync.publisher.bundling import BundlePolicy
    from jukisync.publisher.origin import Publisher

    ring = KeyRing()
    key_id, secret = ring.add(ORIGIN)
    publisher = Publisher(
        ORIGIN,
        secret,
        key_id,
        tmp_path / "outbox",
        policy=BundlePolicy(max_updates=2),
        sync=False,
        clock_us=lambda: NOW,
    )
    try:
        assert publisher.announcement() is None  # nothing sealed yet
        # Recorded by the publisher's own (fixed) clock: it refuses later times.
        publisher.add_many(
            [msgspec.structs.replace(update(ORIGIN, i), recorded_at=NOW) for i in range(1, 6)]
        )
        publisher.flush()
        sealed = publisher.unconfirmed()
        assert [e.last_seq for e in sealed] == [2, 4, 5]
        assert publisher.announcement() is None  # sealed, none confirmed
        publisher.confirm(sealed[:2])
        message = publisher.announcement()
        assert message is not None
        announcement = decode_heads_message(message)
        assert isinstance(announcement, HeadAnnouncement)
        head = verify_head(announcement, ring.registry(), now_us=NOW)
        assert (head.origin, head.seq, head.hash) == (ORIGIN, 4, sealed[1].hash)
        assert head.relayed_by is None and head.announced_at == NOW
    finally:
        publisher.close()
