"""What a validly signed but wrong update can still do (issue 10), one class per test,
each with generated cases: times out of bounds, attestations and prefectures, revocation
at the receiving tier's time, per-item batch verification, capped reasons, invisible
characters, one owner rule, and names too long for a plain LMDB key."""

from __future__ import annotations

import datetime as dt
import tempfile
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import _core
from jukisync.clock import parse_instant
from jukisync.wire.codes import (
    LOCAL_GOVERNMENTS,
    YAMAGUCHI_MUNICIPALITIES,
    CodeError,
    validate_update,
)
from jukisync.wire.messages import (
    ChangeReason,
    KeyEntry,
    RegistryBody,
    SignedRegistry,
    Update,
    encode,
)
from netkit import CENTRE_PREFECTURES, CHIYODA, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

# The receiving tier's clock in these tests (Japan time 2026-06-10 10:00).
NOW = parse_instant("2026-06-10T10:00")
SKEW = 600_000_000  # the stores' default: ten minutes
DAY = 86_400_000_000
TODAY = dt.date(2026, 6, 10)
CENTRE = "centre-east"
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Tier:
    """Keys for a few origins and a centre, and a fresh store per call."""

    def __init__(self, origins: tuple[str, ...] = (YAMAGUCHI_CITY, CHIYODA)) -> None:
        self.ring = KeyRing()
        self.origins = {o: Origin(self.ring, o) for o in origins}
        self.ring.add(CENTRE)
        self.dir = tempfile.TemporaryDirectory()
        self.count = 0

    def registry(self, **changes_by_owner: Mapping[str, object]) -> _core.KeyRegistry:
        entries = []
        for owner, (key_id, secret) in self.ring.keys.items():
            entry = KeyEntry(
                owner=owner,
                key_id=key_id,
                public_key=_core.public_key(secret),
                not_before=0,
                prefectures=list(CENTRE_PREFECTURES) if _core.key_role(owner) == "centre" else [],
            )
            entry = msgspec.structs.replace(entry, **changes_by_owner.get(owner, {}))
            entries.append(entry)
        body = encode(RegistryBody(version=1, issued_at=0, entries=entries))
        signed = encode(SignedRegistry(body=body, sig=_core.sign(self.ring.root, body)))
        return _core.KeyRegistry(signed, _core.public_key(self.ring.root))

    def store(
        self, role: str = "aggregator", registry: _core.KeyRegistry | None = None, **options: object
    ) -> _core.Store:
        self.count += 1
        centre: dict[str, object] = {}
        if role == "aggregator":
            key_id, secret = self.ring.keys[CENTRE]
            centre = {"centre_id": CENTRE, "centre_key": secret, "centre_key_id": key_id}
        return _core.Store(
            str(Path(self.dir.name) / f"store{self.count}"),
            role=role,  # type: ignore[arg-type]
            registry=registry or self.registry(),
            map_size=1 << 26,
            **centre,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )


@contextmanager
def tier(origins: tuple[str, ...] = (YAMAGUCHI_CITY, CHIYODA)) -> Iterator[Tier]:
    t = Tier(origins)
    try:
        yield t
    finally:
        t.dir.cleanup()


def person(origin: str, n: int = 1, **changes: Any) -> Update:
    u = update(origin, n, changed_on=dt.date(2026, 4, 1))
    return msgspec.structs.replace(u, **{"recorded_at": NOW - DAY, **changes})


# --- 1. time bounds --------------------------------------------------------------------

FUTURE_US = st.one_of(
    st.integers(min_value=1, max_value=10 * 365 * DAY),
    st.sampled_from([2**63 - NOW - SKEW, 2**64 - 1 - NOW - SKEW]),
)


@EXAMPLES
@given(
    field=st.sampled_from(["changed_on", "recorded_at", "created_at", "recorded_after_created"]),
    beyond=FUTURE_US,
)
def test_times_beyond_the_tiers_clock_halt_the_origin_and_pin_nothing(
    field: str, beyond: int
) -> None:
    with tier() as t:
        store = t.store()
        origin = t.origins[YAMAGUCHI_CITY]
        first = person(YAMAGUCHI_CITY)
        assert store.apply([origin.bundle([first], created_at=NOW - DAY)], NOW)[0].status == (
            "applied"
        )
        before_bad = origin.head
        created_at = NOW - DAY
        bad = msgspec.structs.replace(first, reason=ChangeReason.ADDRESS_CHANGE, address="偽")
        if field == "changed_on":
            days = min(beyond // DAY, (dt.date(9999, 12, 31) - TODAY).days - 3)
            bad = msgspec.structs.replace(bad, changed_on=TODAY + dt.timedelta(days=2 + days))
        elif field == "recorded_at":
            bad = msgspec.structs.replace(bad, recorded_at=NOW + SKEW + beyond)
        elif field == "created_at":
            created_at = NOW + SKEW + beyond
        else:  # recorded after the bundle holding it was made
            bad = msgspec.structs.replace(bad, recorded_at=NOW)
            created_at = NOW - SKEW - min(beyond, NOW // 2)
        result = store.apply([origin.bundle([bad], created_at=created_at)], NOW)[0]
        assert (result.status, result.kind) == ("rejected", "halt"), result
        assert len(result.reason or "") < 400
        record = store.get(first.juminhyo_code)
        assert record is not None and record.address == first.address
        # The operator drops it; the origin re-issues a genuine correction in its place,
        # and the record takes it (nothing was pinned by the future-dated update).
        store.drop(result.quarantine_id)  # type: ignore[arg-type]
        origin.head = before_bad
        fixed = msgspec.structs.replace(
            first,
            reason=ChangeReason.ADDRESS_CHANGE,
            address="山口県山口市中央2-2-2",
            changed_on=TODAY,
            recorded_at=NOW,
        )
        reissue = origin.bundle([fixed], created_at=NOW, supersedes=result.hash)
        assert store.apply([reissue], NOW)[0].status == "applied"
        record = store.get(first.juminhyo_code)
        assert record is not None and record.address == "山口県山口市中央2-2-2"


@EXAMPLES
@given(ahead=st.integers(min_value=0, max_value=SKEW))
def test_times_within_the_skew_are_applied(ahead: int) -> None:
    with tier() as t:
        store = t.store()
        origin = t.origins[YAMAGUCHI_CITY]
        u = person(YAMAGUCHI_CITY, changed_on=TODAY + dt.timedelta(days=1), recorded_at=NOW + ahead)
        result = store.apply([origin.bundle([u], created_at=NOW + ahead)], NOW)[0]
        assert result.status == "applied", result


def test_the_publisher_can_ask_the_same_rules() -> None:
    good = person(YAMAGUCHI_CITY)
    assert _core.validate_update(encode(good), YAMAGUCHI_CITY, NOW) is None
    future = msgspec.structs.replace(good, changed_on=dt.date(2999, 12, 31))
    assert "changed_on" in (_core.validate_update(encode(future), YAMAGUCHI_CITY, NOW) or "")
    assert "municipality" in (_core.validate_update(encode(good), CHIYODA, NOW) or "")


# --- 3, 4. who may attest, and what a centre carries ---------------------------------------

ORIGINS = sorted({*YAMAGUCHI_MUNICIPALITIES, "131016", "011002", "401005"})


@EXAMPLES
@given(
    origin=st.sampled_from(ORIGINS),
    served=st.sets(st.sampled_from(["01", "13", "35", "40"]), min_size=1),
)
def test_a_centre_carries_only_the_prefectures_it_serves(origin: str, served: set[str]) -> None:
    with tier((origin,)) as t:
        store = t.store(prefectures=sorted(served))
        result = store.apply(
            [t.origins[origin].bundle([person(origin)], created_at=NOW - DAY)], NOW
        )[0]
        if origin[:2] in served:
            assert result.status == "applied", result
        else:
            assert (result.status, result.kind) == ("rejected", "security"), result
            assert store.forward_batch() == [] and store.halted() == {}


@EXAMPLES
@given(origin=st.sampled_from(ORIGINS), attester=st.sampled_from(["origin", "other centre"]))
def test_national_refuses_attestations_by_non_centres(origin: str, attester: str) -> None:
    with tier((origin,)) as t:
        envelope = msgspec.msgpack.decode(
            t.origins[origin].bundle([person(origin)], created_at=NOW - DAY)
        )
        body = envelope["body"]
        if attester == "origin":  # a municipality bypassing its centre
            signer, registry = origin, t.registry()
        else:  # a centre attesting for a prefecture it does not serve
            elsewhere = ("01",) if origin[:2] != "01" else ("47",)
            signer, registry = CENTRE, t.registry(**{CENTRE: {"prefectures": list(elsewhere)}})
        national = t.store("national", registry=registry)
        key_id, secret = t.ring.keys[signer]
        message = _core.attestation_message(_core.sha256(body), NOW)
        envelope["attestations"] = [
            {
                "centre": signer,
                "key_id": key_id,
                "received_at": NOW,
                "sig": _core.sign(secret, message),
            }
        ]
        result = national.apply([msgspec.msgpack.encode(envelope)], NOW)[0]
        assert (result.status, result.kind) == ("rejected", "security"), result
        assert national.halted() == {}


# --- 5. revocation at the receiving tier's time --------------------------------------------


@EXAMPLES
@given(
    revoked_in=st.integers(min_value=1, max_value=30 * DAY),
    claimed_before=st.integers(min_value=1, max_value=365 * DAY),
    received_after=st.integers(min_value=-30 * DAY, max_value=30 * DAY),
)
def test_a_revoked_key_signs_nothing_new_whatever_it_claims(
    revoked_in: int, claimed_before: int, received_after: int
) -> None:
    with tier() as t:
        revoked_at = NOW - 60 * DAY + revoked_in
        registry = t.registry(**{YAMAGUCHI_CITY: {"revoked_at": revoked_at}})
        store = t.store(registry=registry)
        received = revoked_at + received_after
        # always claims a time before revocation (and before it was received)
        created_at = min(revoked_at, received) - claimed_before
        u = person(YAMAGUCHI_CITY, recorded_at=created_at - 1, changed_on=dt.date(2025, 1, 6))
        bundle = t.origins[YAMAGUCHI_CITY].bundle([u], created_at=created_at)
        result = store.apply([bundle], received)[0]
        if received < revoked_at:
            assert result.status == "applied", result
        else:
            assert (result.status, result.kind) == ("rejected", "security"), result
            assert "revoked" in (result.reason or "")


# --- 6. per-item answers, capped reasons, invisible characters, one owner rule -----------


def _not_a_point(seed: int) -> bytes:
    for i in range(1000):
        candidate = _core.sha256(f"{seed}:{i}".encode())
        try:
            _core.verify(candidate, b"", bytes(64))
        except _core.SignatureError:
            return candidate
    raise AssertionError("no invalid point found")


@EXAMPLES
@given(kinds=st.lists(st.sampled_from(["good", "bad sig", "not a point"]), min_size=1, max_size=8))
def test_verify_batch_answers_per_item(kinds: list[str]) -> None:
    items = []
    for i, kind in enumerate(kinds):
        secret = _core.sha256(f"key {i}".encode())
        message = f"message {i}".encode()
        sig = _core.sign(secret, message)
        key = _core.public_key(secret)
        if kind == "bad sig":
            sig = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]
        elif kind == "not a point":
            key = _not_a_point(i)
        items.append((key, message, sig))
    assert _core.verify_batch(items) == [kind == "good" for kind in kinds]


@EXAMPLES
@given(
    size=st.integers(min_value=300, max_value=100_000), field=st.sampled_from(["name", "address"])
)
def test_halt_reasons_quote_long_values_capped(size: int, field: str) -> None:
    with tier() as t:
        store = t.store()
        garbled = "山" * (size - 1) + "\ufffd"
        result = store.apply(
            [
                t.origins[YAMAGUCHI_CITY].bundle(
                    [person(YAMAGUCHI_CITY, 1, **{field: garbled})], created_at=NOW - DAY
                )
            ],
            NOW,
        )[0]
        assert (result.status, result.kind) == ("rejected", "halt")
        assert len(result.reason or "") < 600, len(result.reason or "")
        entry = store.quarantine_entry(result.quarantine_id)  # type: ignore[arg-type]
        assert len(entry.reason) < 600 and "bytes)" in entry.reason


FORMAT_CHARS = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]


@EXAMPLES
@given(
    char=st.sampled_from(FORMAT_CHARS),
    at=st.integers(min_value=0, max_value=5),
    field=st.sampled_from(["name", "former_surname", "alias", "address"]),
)
def test_invisible_format_characters_are_garbled_text(char: str, at: int, field: str) -> None:
    text = "山口 太郎"
    value = text[:at] + char + text[at:]
    with tier() as t:
        store = t.store()
        u = person(YAMAGUCHI_CITY, 1, **{field: value})
        assert "format character" in (_core.validate_update(encode(u), YAMAGUCHI_CITY, NOW) or "")
        with pytest.raises(CodeError, match="format character"):
            validate_update(u, origin=YAMAGUCHI_CITY)  # the publisher's own check agrees
        result = store.apply([t.origins[YAMAGUCHI_CITY].bundle([u], created_at=NOW - DAY)], NOW)[0]
        assert (result.status, result.kind) == ("rejected", "halt"), result


@EXAMPLES
@given(owner=st.from_regex(r"\A[0-9]{6}\Z"))
def test_registry_owners_follow_the_cores_one_rule(owner: str) -> None:
    ring = KeyRing()
    secret = _core.generate_signing_key()
    entry = KeyEntry(owner=owner, key_id="k1", public_key=_core.public_key(secret), not_before=0)
    body = encode(RegistryBody(version=1, issued_at=0, entries=[entry]))
    signed = encode(SignedRegistry(body=body, sig=_core.sign(ring.root, body)))
    valid = owner in LOCAL_GOVERNMENTS or _is_valid_code(owner)
    if valid:
        _core.KeyRegistry(signed, _core.public_key(ring.root))
    else:
        with pytest.raises(_core.RegistryError):
            _core.KeyRegistry(signed, _core.public_key(ring.root))


def _is_valid_code(owner: str) -> bool:
    from jukisync.wire.codes import is_valid_local_government_code

    return is_valid_local_government_code(owner)


# --- 7. names too long for a plain LMDB key -------------------------------------------------

LONG_TEXT = st.one_of(
    st.builds(lambda n: "鷗" * n, st.integers(min_value=160, max_value=256)),
    st.builds(lambda n: "\ufdfa" * n, st.integers(min_value=1, max_value=256)),
    st.builds(lambda n: "山" * n, st.integers(min_value=1, max_value=256)),
)
LONG_KANA = st.builds(lambda n: "ア" * n, st.integers(min_value=1, max_value=256))


@EXAMPLES
@given(name=LONG_TEXT, kana=LONG_KANA)
def test_any_valid_name_is_indexed_and_found(name: str, kana: str) -> None:
    with tier() as t:
        store = t.store()
        long = person(YAMAGUCHI_CITY, name=name, name_kana=kana, alias=name)
        other = person(CHIYODA, 2)
        results = store.apply(
            [
                t.origins[YAMAGUCHI_CITY].bundle([long], created_at=NOW - DAY),
                t.origins[CHIYODA].bundle([other], created_at=NOW - DAY),
            ],
            NOW,
        )
        assert [r.status for r in results] == ["applied", "applied"], results
        born, sex = long.birth_date.isoformat(), int(long.sex)
        for query in (name, kana):
            found = store.search(query, born, sex, requester="r", task="t", time=NOW)
            assert [c.record.juminhyo_code for c in found.candidates] == [long.juminhyo_code]
        # a different long name with the same birth date and sex is not a match
        near = name[:-1] + ("山" if name[-1] != "山" else "川")
        found = store.search(near, born, sex, requester="r", task="t", time=NOW)
        assert found.candidates == []


# --- 2. moves under clock skew: the holder's record wins ------------------------------------

HOUR = 3_600_000_000
MOVERS = (YAMAGUCHI_CITY, "352012", "352047", CHIYODA)


@st.composite
def move_history(draw: st.DrawFn) -> tuple[list[tuple[str, Update]], str]:
    """A resident's life across municipalities as each one records it: a birth, moves
    (a 転出 at the old one, a 転入 at the new one) at least 30 days apart, corrections
    by whoever holds the record; every municipality's clock off by up to ±3 h, a 転出
    filed up to 14 days before or after the 転入 and dated up to 14 days after the move.
    Returns each municipality's updates and the final holder."""
    skew = {m: draw(st.integers(-3 * HOUR, 3 * HOUR)) for m in MOVERS}
    base = parse_instant("2025-01-06T09:00")
    template = person(YAMAGUCHI_CITY, birth_date=dt.date(1990, 1, 1))
    holder = draw(st.sampled_from(MOVERS))
    events: list[tuple[str, Update]] = []

    def record(muni: str, reason: ChangeReason, at: int, on: int, **changes: object) -> None:
        day = dt.date(1970, 1, 1) + dt.timedelta(microseconds=on + 9 * HOUR)
        events.append(
            (
                muni,
                msgspec.structs.replace(
                    template,
                    municipality=muni,
                    reason=reason,
                    changed_on=day,
                    recorded_at=at + skew[muni],
                    address=f"{muni} {len(events)}",
                    **changes,
                ),
            )
        )

    t = base
    record(holder, ChangeReason.BIRTH, t, t)
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(0, 2))):  # corrections by the holder
            t += draw(st.integers(1, 10)) * DAY
            record(holder, ChangeReason.ADDRESS_CHANGE, t, t)
        t += 30 * DAY
        new = draw(st.sampled_from([m for m in MOVERS if m != holder]))
        moved = t
        filed_out = moved + draw(st.integers(-14 * DAY, 14 * DAY))
        dated_out = moved + draw(st.integers(0, 14 * DAY))
        filed_in = moved + draw(st.integers(0, 14 * DAY))
        record(holder, ChangeReason.MOVE_OUT, filed_out, dated_out)
        record(new, ChangeReason.MOVE_IN, filed_in, moved)
        holder = new
        t = max(filed_in, filed_out, dated_out) + DAY
        for _ in range(draw(st.integers(0, 2))):  # the new holder corrects soon after
            t += draw(st.integers(0, 3)) * DAY
            record(holder, ChangeReason.ADDRESS_CHANGE, t, t)
    return events, holder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=move_history(), data=st.data())
def test_any_delivery_order_converges_to_the_holders_active_record(
    history: tuple[list[tuple[str, Update]], str], data: st.DataObject
) -> None:
    events, holder = history
    with tier(MOVERS) as t:
        chains: dict[str, list[bytes]] = {}
        for muni in MOVERS:  # each municipality sends its updates in its own order
            mine = sorted((u for m, u in events if m == muni), key=lambda u: u.recorded_at)
            origin = t.origins[muni]
            chains[muni] = [origin.bundle([u], created_at=u.recorded_at + 1) for u in mine]
        final = [u for m, u in events if m == holder][-1]
        digests = set()
        for _ in range(2):
            store = t.store()
            queues = {m: list(c) for m, c in chains.items() if c}
            while queues:
                muni = data.draw(st.sampled_from(sorted(queues)))
                take = data.draw(st.integers(1, len(queues[muni])))
                batch, queues[muni] = queues[muni][:take], queues[muni][take:]
                assert all(r.status == "applied" for r in store.apply(batch, NOW))
                if not queues[muni]:
                    del queues[muni]
            record = store.get(final.juminhyo_code)
            assert record is not None
            assert (record.status, record.municipality, record.address) == (
                "active",
                holder,
                final.address,
            )
            digests.add(store.digest())
        assert len(digests) == 1
