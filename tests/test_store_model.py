"""A stateful model-based test of the Store API (issue 9): origins publish bundles
(births, address changes, moves between municipalities, 住民票コード changes, deaths,
and now and then a validly signed but wrong bundle), two centres receive them in any
order with duplicates and forward to national in any order, stores are closed and
reopened, a centre joins late, halts are released at every tier.

After every step: `check()` is clean everywhere and no tier is ahead of an origin.
After a drain (everything delivered, forwarded, released): every tier equals an
independent model of the conflict rule, record by record and through the 個人番号
index, and the tiers reconcile as equal.

`JUKISYNC_MODEL_PROFILE=long` runs it longer (the profile `store-model-long`).
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jukisync import _core
from jukisync.wire.codes import kojin_bango_check_digit
from jukisync.wire.messages import ChangeReason, Sex, Update
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing
from storekit import Origin

settings.register_profile("store-model", max_examples=30, stateful_step_count=30, deadline=None)
settings.register_profile(
    "store-model-long", max_examples=500, stateful_step_count=80, deadline=None
)
PROFILE = (
    "store-model-long" if os.environ.get("JUKISYNC_MODEL_PROFILE") == "long" else "store-model"
)

ORIGINS = (YAMAGUCHI_CITY, HAGI, CHIYODA)
CENTRES = ("centre-a", "centre-b")
NATIONAL = "national"
REMOVALS = {ChangeReason.MOVE_OUT, ChangeReason.DEATH}
START = dt.date(2024, 4, 1)


@dataclass
class Resident:
    number: str
    code: str
    holder: str | None  # the municipality holding the record; None once dead
    name: str


# Every field of a record (what `Store.get_many_field` reads).
RECORD_FIELDS = (
    "juminhyo_code",
    "status",
    "redirect_to",
    "kojin_bango",
    "name",
    "name_kana",
    "former_surname",
    "alias",
    "birth_date",
    "sex",
    "address",
    "municipality",
    "reason",
    "changed_on",
    "recorded_at",
    "origin",
    "seq",
)


def _number(n: int) -> str:
    first11 = f"{n:011d}"
    return first11 + str(kojin_bango_check_digit(first11))


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="jukisync-model-"))
        self.ring = KeyRing()
        self.origins = {o: Origin(self.ring, o) for o in ORIGINS}
        for centre in CENTRES:
            self.ring.add(centre)
        self.registry = self.ring.registry()
        self.chains: dict[str, list[bytes]] = {o: [] for o in ORIGINS}  # as published
        self.updates: list[tuple[str, Update]] = []  # accepted: (origin, update)
        self.residents: list[Resident] = []
        self.day = 0
        self.clock = 0
        self.serial = 0
        self.opened: dict[str, _core.Store] = {}
        self.joined = {"centre-a", NATIONAL}
        self.forwarded: list[bytes] = []  # attested envelopes centres queued for national
        self.bad: set[bytes] = set()  # hashes of wrong bundles published
        for name in self.joined:
            self._open(name)

    # --- plumbing ---------------------------------------------------------------------
    def _open(self, name: str) -> _core.Store:
        if name not in self.opened:
            centre: dict[str, object] = {}
            if name in CENTRES:
                key_id, secret = self.ring.keys[name]
                centre = {"centre_id": name, "centre_key": secret, "centre_key_id": key_id}
            self.opened[name] = _core.Store(
                str(self.root / name),
                role="aggregator" if name in CENTRES else "national",
                registry=self.registry,
                map_size=1 << 26,
                **centre,  # type: ignore[arg-type]
            )
        return self.opened[name]

    def _update(
        self, r: Resident, origin: str, reason: ChangeReason, previous: str | None = None
    ) -> Update:
        self.day += 1
        self.clock += 1
        return Update(
            seq=1,
            juminhyo_code=r.code,
            previous_juminhyo_code=previous,
            kojin_bango=r.number,
            name=r.name,
            name_kana="ヤマグチ タロウ",
            former_surname=None,
            alias=None,
            birth_date=dt.date(1990, 1, 1),
            sex=Sex.MALE,
            address=f"{origin} {self.day}番地",
            municipality=origin,
            reason=reason,
            changed_on=START + dt.timedelta(days=self.day),
            recorded_at=self.clock,
        )

    def _publish(self, origin: str, updates: list[Update], *, accepted: bool = True) -> bytes:
        envelope = self.origins[origin].bundle(updates, created_at=1_000_000)
        numbered = msgspec.msgpack.decode(
            msgspec.msgpack.decode(envelope, type=dict)["body"], type=dict
        )["updates"]
        self.chains[origin].append(envelope)
        if accepted:
            for u, raw in zip(updates, numbered, strict=True):
                self.updates.append((origin, msgspec.structs.replace(u, seq=raw["seq"])))
        return envelope

    def _forward(self, centre: str) -> None:
        store = self.opened[centre]
        batch = store.forward_batch(limit=1 << 20)
        self.forwarded += [env for _, _, env in batch]
        store.forward_done([i for i, _, _ in batch])

    # --- rules: the municipalities ------------------------------------------------------
    @rule(origin=st.sampled_from(ORIGINS))
    def birth(self, origin: str) -> None:
        self.serial += 1
        r = Resident(
            _number(100 + self.serial), f"{90000000000 + self.serial:011d}", origin, "山口 太郎"
        )
        self.residents.append(r)
        self._publish(origin, [self._update(r, origin, ChangeReason.BIRTH)])

    def _living(self) -> list[Resident]:
        return [r for r in self.residents if r.holder is not None]

    @precondition(lambda self: any(r.holder for r in self.residents))
    @rule(data=st.data())
    def address_change(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._living()))
        assert r.holder is not None
        self._publish(r.holder, [self._update(r, r.holder, ChangeReason.ADDRESS_CHANGE)])

    @precondition(lambda self: any(r.holder for r in self.residents))
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._living()))
        old = r.holder
        assert old is not None
        new = data.draw(st.sampled_from([o for o in ORIGINS if o != old]))
        self._publish(old, [self._update(r, old, ChangeReason.MOVE_OUT)])
        r.holder = new
        self._publish(new, [self._update(r, new, ChangeReason.MOVE_IN)])

    @precondition(lambda self: any(r.holder for r in self.residents))
    @rule(data=st.data())
    def code_change(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._living()))
        assert r.holder is not None
        self.serial += 1
        old_code, r.code = r.code, f"{80000000000 + self.serial:011d}"
        u = self._update(r, r.holder, ChangeReason.JUMINHYO_CODE_CHANGE, old_code)
        self._publish(r.holder, [u])

    @precondition(lambda self: any(r.holder for r in self.residents))
    @rule(data=st.data())
    def death(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._living()))
        assert r.holder is not None
        self._publish(r.holder, [self._update(r, r.holder, ChangeReason.DEATH)])
        r.holder = None

    @precondition(lambda self: any(r.holder for r in self.residents))
    @rule(data=st.data())
    def wrong_but_signed(self, data: st.DataObject) -> None:
        """A CS signs a garbled name; every tier halts that origin until released."""
        r = data.draw(st.sampled_from(self._living()))
        assert r.holder is not None
        u = self._update(r, r.holder, ChangeReason.ADDRESS_CHANGE)
        u = msgspec.structs.replace(u, name=u.name + "\ufffd")
        envelope = self._publish(r.holder, [u])  # accepted: the operators release it
        self.bad.add(_core.sha256(msgspec.msgpack.decode(envelope, type=dict)["body"]))

    # --- rules: the tiers ----------------------------------------------------------------
    @precondition(lambda self: any(self.chains.values()))
    @rule(data=st.data(), centre=st.sampled_from(CENTRES))
    def deliver(self, data: st.DataObject, centre: str) -> None:
        if centre not in self.joined:
            return
        every = [e for chain in self.chains.values() for e in chain]
        batch = data.draw(st.lists(st.sampled_from(every), min_size=1, max_size=4))
        for result in self.opened[centre].apply(batch):
            assert result.status != "rejected" or result.kind == "halt", result.reason
        self._forward(centre)

    @precondition(lambda self: bool(self.forwarded))
    @rule(data=st.data())
    def deliver_national(self, data: st.DataObject) -> None:
        batch = data.draw(st.lists(st.sampled_from(self.forwarded), min_size=1, max_size=4))
        for result in self.opened[NATIONAL].apply(batch):
            assert result.status != "rejected" or result.kind == "halt", result.reason

    @rule(data=st.data())
    def read_many(self, data: st.DataObject) -> None:
        """`get_many` and `get_many_field` answer, in the caller's order, exactly what
        `get` answers code by code: duplicates, unknown codes and redirects included."""
        known = sorted(self._model())  # current codes and the old (redirect) ones
        # Unknown codes: 11 digits nobody has, and strings no code is (the lookup in key
        # order sorts 11-digit codes as numbers and looks the others up apart).
        unknown = st.one_of(st.from_regex(r"\A[0-9]{11}\Z"), st.text(max_size=13)).filter(
            lambda c: c not in known
        )
        pick = st.one_of(st.sampled_from(known), unknown) if known else unknown
        codes = data.draw(st.lists(pick, max_size=12))
        name = data.draw(st.sampled_from(sorted(self.opened)))
        field = data.draw(st.sampled_from(RECORD_FIELDS))
        store = self.opened[name]
        one_by_one = [store.get(code) for code in codes]
        many = store.get_many(codes)
        assert [r.to_dict() if r else None for r in many] == [
            r.to_dict() if r else None for r in one_by_one
        ]
        # Any sequence of codes: a list, a tuple.
        as_given = data.draw(st.sampled_from([list, tuple]))(codes)
        assert store.get_many_field(as_given, field) == [
            getattr(r, field) if r else None for r in one_by_one
        ]

    @rule(name=st.sampled_from((*CENTRES, NATIONAL)))
    def reopen(self, name: str) -> None:
        if name in self.opened:
            del self.opened[name]
            gc.collect()
            self._open(name)

    @precondition(lambda self: "centre-b" not in self.joined)
    @rule()
    def late_join(self) -> None:
        self.joined.add("centre-b")
        self._open("centre-b")

    @rule()
    def release_everywhere(self) -> None:
        for name, store in self.opened.items():
            for entry in store.quarantine():
                assert entry.kind == "halt" and entry.hash in self.bad, entry.reason
                # released now (the tiers judge the bundles it frees against their clock)
                store.release(entry.id, operator="op", reason="accepted as is")
                if name in CENTRES:
                    self._forward(name)

    # --- invariants -----------------------------------------------------------------------
    @invariant()
    def consistent_and_never_ahead(self) -> None:
        published = {o: len(c) for o, c in self.chains.items()}
        for name, store in self.opened.items():
            assert store.check() == [], name
            for origin, (seq, _) in store.chain_heads().items():
                assert seq <= self.origins[origin].head.last_seq, (name, origin)
        assert published  # (chains only grow)

    # --- the drain and the model ----------------------------------------------------------
    def teardown(self) -> None:
        try:
            self._drain_and_compare()
        finally:
            self.opened.clear()
            gc.collect()

    def _drain_and_compare(self) -> None:
        self.late_join() if "centre-b" not in self.joined else None
        every = [e for chain in self.chains.values() for e in chain]
        want = {
            o: origin.head.last_seq for o, origin in self.origins.items() if origin.head.last_seq
        }

        def caught_up() -> bool:
            return all(
                {o: seq for o, (seq, _) in s.chain_heads().items()} == want
                for s in self.opened.values()
            )

        for _ in range(len(every) + 2):  # each round releases at most one halt per origin
            for centre in CENTRES:
                self.opened[centre].apply(every)
                self._forward(centre)
            self.opened[NATIONAL].apply(self.forwarded)
            self.release_everywhere()
            if caught_up():
                break
        expected = self._model()
        stores = list(self.opened.values())
        for store in stores:
            assert store.check() == []
            assert {o: seq for o, (seq, _) in store.chain_heads().items()} == want
            assert store.stats()["records"] == len(expected)
            for code, model in expected.items():
                got = store.get(code)
                assert got is not None, code
                have = (got.status, got.redirect_to, got.municipality, got.kojin_bango, got.seq)
                assert have == model[:5], (code, have, model)
            for r in self.residents:
                holder = store.by_number(r.number)
                assert holder is not None and holder.juminhyo_code == _model_holder(
                    expected, r.number
                ), r
        for other in stores[1:]:
            assert stores[0].reconcile(other).equal

    def _model(self) -> dict[str, tuple[str, str | None, str, str, int, tuple[str, int, str, int]]]:
        """The conflict rule, independently: per code, the highest version wins."""
        best: dict[str, tuple[str, str | None, str, str, int, tuple[str, int, str, int]]] = {}

        def offer(code: str, status: str, to: str | None, origin: str, u: Update) -> None:
            version = (u.changed_on.isoformat(), u.recorded_at, origin, u.seq)
            if code not in best or best[code][5] < version:
                best[code] = (status, to, u.municipality, u.kojin_bango, u.seq, version)

        for origin, u in self.updates:
            status = "removed" if u.reason in REMOVALS else "active"
            offer(u.juminhyo_code, status, None, origin, u)
            if u.previous_juminhyo_code:
                offer(u.previous_juminhyo_code, "redirect", u.juminhyo_code, origin, u)
        return best


def _model_holder(expected: dict[str, tuple], number: str) -> str:  # type: ignore[type-arg]
    """Active before removed, then the highest version (Store.by_number's rule)."""
    holders = [
        (v[0] == "active", v[5], code)
        for code, v in expected.items()
        if v[3] == number and v[0] != "redirect"
    ]
    return max(holders, key=lambda h: (h[0], h[1]))[2]


StoreModel.TestCase.settings = settings.get_profile(PROFILE)
TestStoreModel = StoreModel.TestCase
