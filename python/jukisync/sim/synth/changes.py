"""The change stream: `generate_changes` keeps every resident's state so the stream is
internally consistent (a move is a 転出 then, days later, a 転入; removed residents never
change again; codes are never reused)."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from jukisync.sim.synth.mix import (
    DEFAULT_MIX,
    MOVING_SEASON,
    NEWCOMERS,
    REMOVALS,
    SEASONAL,
    ChangeMix,
)
from jukisync.sim.synth.reference import (
    ALT_READINGS,
    MAX_AGE,
    MOBILITY,
    MOBILITY_MAX,
    MORTALITY,
    NATIONAL_RESIDENTS,
    US_PER_DAY,
    Municipality,
)
from jukisync.sim.synth.residents import (
    Codes,
    Person,
    Population,
    day_start_us,
    new_resident,
    pick_index,
    random_address,
    random_alias,
    random_japanese_surname,
)
from jukisync.wire.messages import ChangeReason, Sex, Update


class _Active:
    """The residents that can change: O(1) random pick, add and remove, overall and
    within a birth year (for picks weighted by age, such as who dies)."""

    __slots__ = ("by_year", "people")

    def __init__(self) -> None:
        self.people: list[Person] = []
        self.by_year: dict[int, list[Person]] = {}

    def add(self, p: Person) -> None:
        p.pos = len(self.people)
        self.people.append(p)
        cohort = self.by_year.setdefault(p.birth.year, [])
        p.ypos = len(cohort)
        cohort.append(p)

    def remove(self, p: Person) -> None:
        last = self.people.pop()
        if last is not p:
            self.people[p.pos] = last
            last.pos = p.pos
        p.pos = -1
        cohort = self.by_year[p.birth.year]
        last = cohort.pop()
        if last is not p:
            cohort[p.ypos] = last
            last.ypos = p.ypos
        p.ypos = -1

    def __len__(self) -> int:
        return len(self.people)


# The 転入 of a move comes up to this many days after its 転出 (see generate_changes).
MOVE_IN_LAG_DAYS: Final = 14


def span_until(start: dt.date, today: dt.date, max_span_days: int = 3653) -> int:
    """A `max_span_days` for `generate_changes` from `start` whose stream ends before
    `today` (even the last moves' 転入s), so that no tier refuses it as future-dated
    (they bound every date by their clock); at least 1 day."""
    return max(1, min(max_span_days, (today - start).days - MOVE_IN_LAG_DAYS - 1))


def generate_changes(
    population: Population,
    changes: int,
    seed: int,
    start: dt.date | None = None,
    *,
    mix: ChangeMix = DEFAULT_MIX,
    seasonality: Sequence[float] | None = MOVING_SEASON,
    max_span_days: int = 3653,
    foreign_share: float = 0.02,
) -> Iterator[tuple[str, Update]]:
    """Exactly `changes` updates as `(origin, update)`, in time order from `start`.

    `origin` is always `update.municipality`: the municipality that sends the update.
    `(changed_on, recorded_at)` strictly increases along the stream; `changed_on` is
    the Japan-time date of `recorded_at`. Events arrive at the national rate per
    resident (so a small population changes slowly), except that the stream is
    squeezed into about `max_span_days` if it would last longer (the 転入s of the last
    moves can come up to 14 days later). `seasonality` (12 monthly factors, or None for
    flat) shapes when people move.

    A stream much longer than the population is large (say, 10 updates per resident)
    stays internally consistent but ages oddly: deaths keep their share of the
    updates, so the old die out faster than the young grow old.

    The population is not modified. If no resident is left who could be the subject
    of a drawn change (a tiny population that died out), the event becomes a move-in
    from abroad instead.
    """
    if changes < 0:
        raise ValueError(f"changes must be >= 0: {changes}")
    if max_span_days < 1:
        raise ValueError(f"max_span_days must be >= 1: {max_span_days}")
    start = population.as_of if start is None else start
    if start < population.as_of:
        raise ValueError(f"start {start} is before the population's date {population.as_of}")
    season = tuple(seasonality) if seasonality is not None else (1.0,) * 12
    if len(season) != 12 or any(not (f > 0 and math.isfinite(f)) for f in season):
        raise ValueError("seasonality needs 12 positive monthly factors")
    mean = sum(season) / 12
    season = tuple(f / mean for f in season)
    gen = _Generator(population, seed, mix, season, foreign_share, start)
    return gen.run(changes, max_span_days)


class _Generator:
    def __init__(
        self,
        population: Population,
        seed: int,
        mix: ChangeMix,
        season: tuple[float, ...],
        foreign_share: float,
        start: dt.date,
    ) -> None:
        self.start = start
        self.epoch_us = day_start_us(start)
        self.day_cache: dict[int, dt.date] = {}
        self.rng = random.Random(f"jukisync.synth.changes:{seed}")
        self.foreign_share = foreign_share
        self.munis = {m.code: m for m in population.municipalities}
        self.muni_list = population.municipalities
        self.muni_cum = list(itertools.accumulate(m.weight for m in self.muni_list))
        # Same-prefecture destinations for moves that stay within the prefecture.
        self.by_pref: dict[str, tuple[list[Municipality], list[float]]] = {}
        for pref in {m.prefecture for m in self.muni_list}:
            ms = [m for m in self.muni_list if m.prefecture == pref]
            self.by_pref[pref] = (ms, list(itertools.accumulate(m.weight for m in ms)))
        self.codes = Codes(self.rng, population.juminhyo_check_digit)
        for r in population.residents:
            self.codes.juminhyo.add(r.juminhyo_code)
            self.codes.kojin.add(r.kojin_bango)
        self.active = _Active()
        for r in population.residents:
            self.active.add(Person(r))

        events = mix._events()
        if sum(w for _, w in events) <= 0:
            raise ValueError("ChangeMix has no changes at all")
        self.kinds = [reason for reason, _ in events]
        # Per month: cumulative weights for the draw, and the month's event rate
        # relative to a flat year (more events per day in the moving season).
        base_total = sum(w for _, w in events)
        self.month_cum: list[list[float]] = []
        self.month_rate: list[float] = []
        for factor in season:
            weights = [w * (factor if r in SEASONAL else 1.0) for r, w in events]
            self.month_cum.append(list(itertools.accumulate(weights)))
            self.month_rate.append(sum(weights) / base_total)
        self.events_per_update = base_total / (base_total + mix.domestic_moves)
        self.per_resident_year = (base_total + mix.domestic_moves) * 1e6 / NATIONAL_RESIDENTS
        self.start_population = len(population.residents)

    # -- time --

    def _date(self, us: int) -> dt.date:
        day = (us - self.epoch_us) // US_PER_DAY
        cached = self.day_cache.get(day)
        if cached is None:
            cached = self.day_cache[day] = self.start + dt.timedelta(days=day)
        return cached

    # -- picking subjects --

    def _age(self, p: Person, today_ord: int) -> int:
        return min(MAX_AGE, max(0, (today_ord - p.birth_ord) // 365))

    def _any(self) -> Person | None:
        people = self.active.people
        return people[int(self.rng.random() * len(people))] if people else None

    def _by_table(self, table: list[float], table_max: float, today: int) -> Person | None:
        # Rejection sampling: uniform candidates accepted in proportion to the table
        # value of their age (mortality, mobility); after many misses take the last.
        # The hot loop of the generator (a death takes ~30 draws): ages inlined.
        people = self.active.people
        if not people:
            return None
        rand = self.rng.random
        n = len(people)
        p = people[0]
        for _ in range(500):
            p = people[int(rand() * n)]
            age = (today - p.birth_ord) // 365
            if rand() * table_max < table[age if age < MAX_AGE else MAX_AGE]:
                return p
        return p

    def _dying(self, year: int) -> Person | None:
        # Weighted by mortality exactly, per birth year: rejection sampling would stall
        # once a long stream has taken most of the old (a population that dies ten
        # times faster than it ages), while a walk over ~125 cohorts stays cheap.
        cohorts = [c for c in self.active.by_year.items() if c[1]]
        if not cohorts:
            return None
        cum = list(
            itertools.accumulate(
                len(c) * MORTALITY[min(MAX_AGE, max(0, year - y))] for y, c in cohorts
            )
        )
        cohort = cohorts[pick_index(self.rng, cum)][1]
        return cohort[int(self.rng.random() * len(cohort))]

    def _matching(self, accept: Callable[[Person], bool]) -> Person | None:
        people = self.active.people
        for _ in range(100):
            if not people:
                return None
            p = people[int(self.rng.random() * len(people))]
            if accept(p):
                return p
        return None

    def _destination(self, origin: str) -> Municipality | None:
        if len(self.muni_list) < 2:
            return None
        here = self.munis.get(origin)
        rng = self.rng
        # About half of moves between municipalities stay within the prefecture.
        if here is not None and rng.random() < 0.5:
            ms, cum = self.by_pref[here.prefecture]
            if len(ms) > 1:
                while True:
                    m = ms[pick_index(rng, cum)]
                    if m.code != origin:
                        return m
        while True:
            m = self.muni_list[pick_index(rng, self.muni_cum)]
            if m.code != origin:
                return m

    # -- the stream --

    def run(self, changes: int, max_span_days: int) -> Iterator[tuple[str, Update]]:
        rng = self.rng
        updates_per_day = max(
            self.start_population * self.per_resident_year / 365.2425,
            changes / max_span_days,
        )
        events_per_us = updates_per_day * self.events_per_update / US_PER_DAY
        now = self.epoch_us
        last = now  # the last recorded_at emitted; every next one is strictly later
        emitted = 0
        # Moves in progress: (time of the 転入, tiebreak, person, destination, address).
        pending: list[tuple[int, int, Person, str, str]] = []
        tiebreak = itertools.count()

        def move_in(entry: tuple[int, int, Person, str, str]) -> tuple[str, Update]:
            nonlocal last
            at, _, p, dest, address = entry
            last = max(at, last + 1)
            p.muni, p.address = dest, address
            self.active.add(p)
            return dest, p.update(ChangeReason.MOVE_IN, self._date(last), last)

        while emitted < changes:
            free = changes - emitted - len(pending)
            if free <= 0:
                # Only the second halves of moves fit: finish them, in time order.
                while pending:
                    yield move_in(heapq.heappop(pending))
                    emitted += 1
                break
            month = self._date(now).month - 1
            rate = events_per_us * self.month_rate[month]
            gap = rng.expovariate(rate) if rate > 0 else 1.0
            now += max(1, int(gap))
            while pending and pending[0][0] <= now:
                yield move_in(heapq.heappop(pending))
                emitted += 1
            if emitted >= changes:
                break
            free = changes - emitted - len(pending)
            if free <= 0:
                continue
            kind = self.kinds[pick_index(rng, self.month_cum[month])]
            last = max(now, last + 1)
            now = last
            today = self._date(last)
            result = self._event(kind, today, last, free, pending, tiebreak)
            if result is not None:
                yield result
                emitted += 1

    def _event(
        self,
        kind: ChangeReason,
        today: dt.date,
        at: int,
        free: int,
        pending: list[tuple[int, int, Person, str, str]],
        tiebreak: Iterator[int],
    ) -> tuple[str, Update]:
        rng = self.rng
        today_ord = today.toordinal()
        p: Person | None = None
        if kind is ChangeReason.MOVE_OUT:
            # A move takes two updates: only start one if both fit in the stream.
            if free >= 2 and len(self.muni_list) > 1:
                p = self._by_table(MOBILITY, MOBILITY_MAX, today_ord)
            if p is None:
                kind = ChangeReason.ADDRESS_CHANGE
            else:
                dest = self._destination(p.muni)
                assert dest is not None  # more than one municipality
                origin = p.muni
                self.active.remove(p)
                # The 転入 is notified within 14 days of moving (住基法 第22条).
                arrive = at + 1 + int((0.5 + rng.random() * 13.5) * US_PER_DAY)
                address = random_address(rng, dest)
                heapq.heappush(pending, (arrive, next(tiebreak), p, dest.code, address))
                return origin, p.update(ChangeReason.MOVE_OUT, today, at)

        if kind in NEWCOMERS or not self.active.people:
            return self._newcomer(kind if kind in NEWCOMERS else None, today, at)

        if kind is ChangeReason.DEATH:
            p = self._dying(today.year)
        elif kind in (ChangeReason.MOVE_OUT_ABROAD, ChangeReason.REMOVAL_BY_AUTHORITY):
            p = self._abroad_candidate(today_ord)
        elif kind is ChangeReason.ADDRESS_CHANGE:
            p = self._by_table(MOBILITY, MOBILITY_MAX, today_ord)
        else:
            p = self._any()
        assert p is not None  # the active list is not empty

        if kind in REMOVALS:
            # The record stays as it was (除票), with its last address; never changed again.
            self.active.remove(p)
            return p.muni, p.update(kind, today, at)
        previous_code = None
        if kind is ChangeReason.ADDRESS_CHANGE:
            p.address = self._new_address(p.address, self.munis[p.muni])
        elif kind is ChangeReason.CORRECTION_BY_AUTHORITY:
            p = self._correct_by_authority(p, today_ord)
        elif kind is ChangeReason.ERROR_CORRECTION:
            self._correct_error(p, today_ord)
        elif kind is ChangeReason.KOJIN_BANGO_CHANGE:
            p.kojin = self.codes.new_kojin()
        elif kind is ChangeReason.JUMINHYO_CODE_CHANGE:
            previous_code = p.code
            p.code = self.codes.new_juminhyo()
        elif kind is ChangeReason.FORMER_SURNAME_ALIAS:
            self._toggle_former_or_alias(p)
        return p.muni, p.update(kind, today, at, previous_code)

    def _abroad_candidate(self, today_ord: int) -> Person | None:
        # Foreign residents leave the country far more often than nationals do.
        people = self.active.people
        rng = self.rng
        p = people[0]
        for _ in range(500):
            p = people[int(rng.random() * len(people))]
            weight = MOBILITY[self._age(p, today_ord)] * (10.0 if p.nationality else 1.0)
            if rng.random() * MOBILITY_MAX * 10.0 < weight:
                return p
        return p

    def _new_address(self, old: str, muni: Municipality) -> str:
        for _ in range(10):
            address = random_address(self.rng, muni)
            if address != old:
                return address
        return address

    def _newcomer(self, kind: ChangeReason | None, today: dt.date, at: int) -> tuple[str, Update]:
        rng = self.rng
        today_ord = today.toordinal()
        mother: Person | None = None
        if kind is ChangeReason.BIRTH:
            mother = self._matching(
                lambda p: p.sex is Sex.FEMALE and 20 <= self._age(p, today_ord) < 45
            )
            if mother is None:
                mother = self._matching(lambda p: p.sex is Sex.FEMALE)
        if kind is None:
            kind = ChangeReason.MOVE_IN_FROM_ABROAD
        if mother is not None:
            muni = self.munis[mother.muni]
            birth, sex = today, (Sex.MALE if rng.random() < 105 / 205 else Sex.FEMALE)
            resident = new_resident(
                rng,
                self.codes,
                muni,
                birth,
                sex,
                foreign_share=self.foreign_share,
                as_of=today,
                address=mother.address,
                parent=mother,
            )
        else:
            muni = self.muni_list[pick_index(rng, self.muni_cum)]
            if kind is ChangeReason.BIRTH:
                birth = today
                sex = Sex.MALE if rng.random() < 105 / 205 else Sex.FEMALE
            else:
                # Arrivals from abroad and entries by authority are mostly young adults.
                birth = today - dt.timedelta(days=int((18 + rng.random() * 30) * 365.2425))
                sex = Sex.MALE if rng.random() < 0.5 else Sex.FEMALE
            share = self.foreign_share
            if kind is ChangeReason.MOVE_IN_FROM_ABROAD:
                # Most arrivals from abroad are foreign nationals, the rest returnees.
                share = max(share, 0.7)
            resident = new_resident(
                rng, self.codes, muni, birth, sex, foreign_share=share, as_of=today
            )
        p = Person(resident)
        self.active.add(p)
        return p.muni, p.update(kind, today, at)

    def _correct_by_authority(self, p: Person, today_ord: int) -> Person:
        # Mostly a surname change on marriage (applied from the family register), to a
        # Japanese national aged 20-49, the wife in ~95 % of cases.
        rng = self.rng
        spouse = self._matching(
            lambda q: (
                q.nationality is None
                and 20 <= self._age(q, today_ord) < 50
                and (q.sex is Sex.FEMALE) == (rng.random() < 0.95)
            )
        )
        if spouse is not None and rng.random() < 0.85:
            name = random_japanese_surname(rng, other_than=spouse.surname)
            spouse.surname, spouse.surname_kana = name.kanji, name.readings[0]
            return spouse
        # Otherwise the address is rewritten (e.g. a 住居表示 change renumbering it).
        p.address = self._new_address(p.address, self.munis[p.muni])
        return p

    def _correct_error(self, p: Person, today_ord: int) -> None:
        # Switch to the other common reading where the name has one (a wrong 振り仮名),
        # else fix the birth date by a day.
        for kanji_attr, kana_attr in (("surname", "surname_kana"), ("given", "given_kana")):
            readings = ALT_READINGS.get(getattr(p, kanji_attr))
            if readings:
                current = getattr(p, kana_attr)
                others = [r for r in readings if r != current]
                setattr(p, kana_attr, others[int(self.rng.random() * len(others))])
                return
        shift = 1 if self.rng.random() < 0.5 else -1
        if p.birth_ord + shift > today_ord:
            shift = -1
        self.active.remove(p)  # the birth year may change: re-file the person
        p.birth_ord += shift
        p.birth = dt.date.fromordinal(p.birth_ord)
        self.active.add(p)

    def _toggle_former_or_alias(self, p: Person) -> None:
        rng = self.rng
        if p.nationality is None:
            if p.former is not None:
                p.former = None
            else:
                p.former = random_japanese_surname(rng, other_than=p.surname).kanji
        elif p.alias is not None:
            p.alias = None
        else:
            p.alias = random_alias(rng, p.sex, p.birth.year)
