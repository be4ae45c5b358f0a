"""Synthetic residents: codes (with the placeholder 住民票コード check digit), names, birth
dates and addresses drawn from the reference data; `generate_population` (and
`stream_population`, the same residents one at a time) and `initial_load`."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from jukisync.sim.synth.reference import (
    AGE_BANDS,
    AGE_CUM,
    BY_NATIONALITY,
    COHORT_BOUNDS,
    DEFAULT_AS_OF,
    FEMALE_GIVEN,
    IDEOGRAPHIC_SPACE,
    JST,
    MALE_GIVEN,
    MUNICIPALITIES,
    NATIONALITIES,
    NATIONALITY_CUM,
    PREFECTURES,
    SURNAME_CUM,
    SURNAMES,
    US_PER_DAY,
    Municipality,
    Name,
    Nationality,
)
from jukisync.wire.codes import kojin_bango_check_digit, local_government_check_digit
from jukisync.wire.messages import ChangeReason, Sex, Update

CheckDigit = Callable[[str], int]
"""Check digit of a 住民票コード from its first 10 digits."""

# --- 住民票コード placeholder check digit ------------------------------------------------


def placeholder_juminhyo_check_digit(first10: str) -> int:
    """A stand-in check digit for 住民票コード: NOT the official formula.

    The official one is not public, so this is a plain mod-10 with weights 3,1,3,...
    from the right (as in EAN): it catches every single-digit error and most adjacent
    swaps, which is all synthetic data needs. Pass the real one as a `CheckDigit`
    where it is known.
    """
    if len(first10) != 10 or not (first10.isascii() and first10.isdigit()):
        raise ValueError(f"expected the first 10 ASCII digits of a 住民票コード: {first10!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(first10)))
    return (10 - total % 10) % 10


def placeholder_juminhyo_check(code: str) -> bool:
    """The placeholder as a whole-code predicate (`jukisync.codes.JuminhyoCheck`)."""
    return (
        len(code) == 11
        and code.isascii()
        and code.isdigit()
        and placeholder_juminhyo_check_digit(code[:10]) == int(code[10])
    )


@dataclass(frozen=True, slots=True)
class Resident:
    """One synthetic resident as the population holds them (before any change).

    `nationality` (None for Japanese nationals) is the generator's own bookkeeping:
    like 本籍 it never leaves the municipality, so it is not in `Update`.
    """

    juminhyo_code: str
    kojin_bango: str
    surname: str
    given_name: str
    surname_kana: str
    given_kana: str
    former_surname: str | None
    alias: str | None
    birth_date: dt.date
    sex: Sex
    municipality: str
    address: str
    nationality: str | None

    @property
    def name(self) -> str:
        return _join_name(self.surname, self.given_name)

    @property
    def name_kana(self) -> str:
        return self.surname_kana + IDEOGRAPHIC_SPACE + self.given_kana


def _join_name(surname: str, given: str) -> str:
    return surname + (" " if surname.isascii() else IDEOGRAPHIC_SPACE) + given


@dataclass(frozen=True, slots=True)
class Population:
    """Residents on `as_of`: where a change stream starts (see `generate_changes`)."""

    residents: tuple[Resident, ...]
    as_of: dt.date
    municipalities: tuple[Municipality, ...]
    juminhyo_check_digit: CheckDigit
    seed: int

    def __len__(self) -> int:
        return len(self.residents)


class Codes:
    """Issues unique codes; remembers every code ever issued, retired ones included."""

    __slots__ = ("_check", "_rng", "juminhyo", "kojin")

    def __init__(self, rng: random.Random, check: CheckDigit) -> None:
        self._rng = rng
        self._check = check
        self.juminhyo: set[str] = set()
        self.kojin: set[str] = set()

    def new_juminhyo(self) -> str:
        while True:
            first = f"{self._rng.randrange(10**10):010d}"
            code = first + str(self._check(first))
            if code not in self.juminhyo:
                self.juminhyo.add(code)
                return code

    def new_kojin(self) -> str:
        while True:
            first = f"{self._rng.randrange(10**11):011d}"
            code = first + str(kojin_bango_check_digit(first))
            if code not in self.kojin:
                self.kojin.add(code)
                return code


_KANJI_NUMERALS: Final = "〇一二三四五六七八九"


def _kanji_number(n: int) -> str:
    # 丁目 are written in kanji numerals on the register (二丁目, 十二丁目).
    if n < 10:
        return _KANJI_NUMERALS[n]
    tens, ones = divmod(n, 10)
    return (
        ("" if tens == 1 else _KANJI_NUMERALS[tens])
        + "十"
        + ("" if ones == 0 else _KANJI_NUMERALS[ones])
    )


def random_address(rng: random.Random, muni: Municipality) -> str:
    town = muni.towns[int(rng.random() * len(muni.towns))]
    if town.chome > 0:
        chome = 1 + int(rng.random() * town.chome)
        ban = 1 + int(rng.random() * 30)
        go = 1 + int(rng.random() * 25)
        return f"{muni.prefix}{town.name}{_kanji_number(chome)}丁目{ban}番{go}号"
    if town.chome == 0:
        return (
            f"{muni.prefix}{town.name}{1 + int(rng.random() * 40)}番{1 + int(rng.random() * 30)}号"
        )
    banchi = 1 + int(rng.random() * 3000)
    if rng.random() < 0.3:  # with a 枝番: "1234番地5"
        return f"{muni.prefix}{town.name}{banchi}番地{1 + int(rng.random() * 9)}"
    return f"{muni.prefix}{town.name}{banchi}番地"


def pick_index(rng: random.Random, cum: Sequence[float]) -> int:
    """An index drawn with weights given as their running sums."""
    # min(): random() * total can round up to total itself.
    return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


def _cohort(birth_year: int) -> int:
    return bisect.bisect_right(COHORT_BOUNDS, birth_year)


def _given_name(rng: random.Random, sex: Sex, birth_year: int, nat: Nationality | None) -> Name:
    if nat is None:
        names = (MALE_GIVEN if sex is Sex.MALE else FEMALE_GIVEN)[_cohort(birth_year)]
    else:
        names = nat.male if sex is Sex.MALE else nat.female
    return names[int(rng.random() * len(names))]


def random_japanese_surname(rng: random.Random, other_than: str | None = None) -> Name:
    while True:
        name = SURNAMES[pick_index(rng, SURNAME_CUM)]
        if name.kanji != other_than:
            return name


def random_alias(rng: random.Random, sex: Sex, birth_year: int) -> str:
    # A 通称 is an ordinary Japanese name the resident uses in daily life.
    return _join_name(
        random_japanese_surname(rng).kanji, _given_name(rng, sex, birth_year, None).kanji
    )


class Person:
    """The generator's mutable state of one resident."""

    __slots__ = (
        "address",
        "alias",
        "birth",
        "birth_ord",
        "code",
        "former",
        "given",
        "given_kana",
        "kojin",
        "muni",
        "nationality",
        "pos",
        "sex",
        "surname",
        "surname_kana",
        "ypos",
    )

    def __init__(self, r: Resident) -> None:
        self.code = r.juminhyo_code
        self.kojin = r.kojin_bango
        self.surname = r.surname
        self.given = r.given_name
        self.surname_kana = r.surname_kana
        self.given_kana = r.given_kana
        self.former = r.former_surname
        self.alias = r.alias
        self.birth = r.birth_date
        self.birth_ord = r.birth_date.toordinal()
        self.sex = r.sex
        self.muni = r.municipality
        self.address = r.address
        self.nationality = r.nationality
        self.pos = -1  # index in the active list, -1 when not active
        self.ypos = -1  # index in the active list of its birth year

    def update(
        self,
        reason: ChangeReason,
        changed_on: dt.date,
        recorded_at: int,
        previous_code: str | None = None,
    ) -> Update:
        return Update(
            seq=0,  # the publisher assigns it
            juminhyo_code=self.code,
            previous_juminhyo_code=previous_code,
            kojin_bango=self.kojin,
            name=_join_name(self.surname, self.given),
            name_kana=self.surname_kana + IDEOGRAPHIC_SPACE + self.given_kana,
            former_surname=self.former,
            alias=self.alias,
            birth_date=self.birth,
            sex=self.sex,
            address=self.address,
            municipality=self.muni,
            reason=reason,
            changed_on=changed_on,
            recorded_at=recorded_at,
        )


def new_resident(
    rng: random.Random,
    codes: Codes,
    muni: Municipality,
    birth_date: dt.date,
    sex: Sex,
    *,
    foreign_share: float,
    as_of: dt.date,
    address: str | None = None,
    parent: Person | None = None,
) -> Resident:
    """A new resident; a newborn (`parent` given) takes the parent's surname and address."""
    if parent is not None:
        nat = BY_NATIONALITY.get(parent.nationality) if parent.nationality else None
        surname, surname_kana = parent.surname, parent.surname_kana
    else:
        nat = None
        if rng.random() < foreign_share:
            nat = NATIONALITIES[pick_index(rng, NATIONALITY_CUM)]
            name = nat.surnames[int(rng.random() * len(nat.surnames))]
        else:
            name = random_japanese_surname(rng)
        surname, surname_kana = name.kanji, name.readings[0]
    given = _given_name(rng, sex, birth_date.year, nat)
    age = (as_of - birth_date).days // 365
    former = alias = None
    if nat is None:
        # 旧氏 (since 2019, on request): mostly married women keeping their maiden name.
        if age >= 25 and rng.random() < (0.03 if sex is Sex.FEMALE else 0.002):
            former = random_japanese_surname(rng, other_than=surname).kanji
    elif age >= 18 and rng.random() < nat.alias_share:
        alias = random_alias(rng, sex, birth_date.year)
    return Resident(
        juminhyo_code=codes.new_juminhyo(),
        kojin_bango=codes.new_kojin(),
        surname=surname,
        given_name=given.kanji,
        surname_kana=surname_kana,
        given_kana=given.readings[0],
        former_surname=former,
        alias=alias,
        birth_date=birth_date,
        sex=sex,
        municipality=muni.code,
        address=address if address is not None else random_address(rng, muni),
        nationality=nat.code if nat else None,
    )


def _random_birth(rng: random.Random, as_of: dt.date) -> tuple[dt.date, Sex]:
    band = AGE_BANDS[pick_index(rng, AGE_CUM)]
    start_age, _, female_share = band
    # Uniform over the band's 5 years, never later than the day before `as_of`.
    days = int((start_age + rng.random() * 5) * 365.2425)
    birth = as_of - dt.timedelta(days=max(1, days))
    sex = Sex.FEMALE if rng.random() < female_share else Sex.MALE
    return birth, sex


def _check_municipalities(municipalities: Sequence[Municipality]) -> tuple[Municipality, ...]:
    result = tuple(municipalities)
    if not result:
        raise ValueError("at least one municipality is needed")
    for m in result:
        if m.prefecture not in PREFECTURES:
            raise ValueError(f"{m.code} {m.name}: prefecture {m.prefecture} has no name here")
        if local_government_check_digit(m.code[:5]) != int(m.code[5]):
            raise ValueError(f"{m.code} {m.name}: wrong check digit (JIS X 0402)")
        if not m.towns or m.weight <= 0:
            raise ValueError(f"{m.code} {m.name}: needs towns and a positive weight")
    if len({m.code for m in result}) != len(result):
        raise ValueError("municipality codes must be unique")
    return result


def generate_population(
    residents: int,
    seed: int,
    municipalities: Sequence[Municipality] = MUNICIPALITIES,
    *,
    as_of: dt.date = DEFAULT_AS_OF,
    foreign_share: float = 0.02,
    juminhyo_check_digit: CheckDigit = placeholder_juminhyo_check_digit,
) -> Population:
    """`residents` people living in `municipalities` (weighted by `weight`) on `as_of`."""
    munis = _check_municipalities(municipalities)
    people = stream_population(
        residents,
        seed,
        munis,
        as_of=as_of,
        foreign_share=foreign_share,
        juminhyo_check_digit=juminhyo_check_digit,
    )
    return Population(tuple(people), as_of, munis, juminhyo_check_digit, seed)


def stream_population(
    residents: int,
    seed: int,
    municipalities: Sequence[Municipality] = MUNICIPALITIES,
    *,
    as_of: dt.date = DEFAULT_AS_OF,
    foreign_share: float = 0.02,
    juminhyo_check_digit: CheckDigit = placeholder_juminhyo_check_digit,
) -> Iterator[Resident]:
    """The residents of `generate_population` with the same arguments, in the same
    order, one at a time: for populations too large to hold (the scale benchmark).
    Only the codes issued are remembered (to keep them unique): ~90 bytes a resident."""
    if residents < 0:
        raise ValueError(f"residents must be >= 0: {residents}")
    if not 0 <= foreign_share <= 1:
        raise ValueError(f"foreign_share must be within 0..1: {foreign_share}")
    munis = _check_municipalities(municipalities)
    return _stream(residents, seed, munis, as_of, foreign_share, juminhyo_check_digit)


def _stream(
    residents: int,
    seed: int,
    munis: tuple[Municipality, ...],
    as_of: dt.date,
    foreign_share: float,
    check: CheckDigit,
) -> Iterator[Resident]:
    # The population and the change stream take independent generators derived from the
    # seed, so asking for more residents does not shift the codes of the first ones.
    rng = random.Random(f"jukisync.synth.population:{seed}")
    codes = Codes(rng, check)
    muni_cum = list(itertools.accumulate(m.weight for m in munis))
    for _ in range(residents):
        muni = munis[pick_index(rng, muni_cum)]
        birth, sex = _random_birth(rng, as_of)
        yield new_resident(rng, codes, muni, birth, sex, foreign_share=foreign_share, as_of=as_of)


def day_start_us(day: dt.date) -> int:
    """Microseconds since the epoch at 00:00 Japan time on `day`."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=JST)
    return (start - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def initial_load(population: Population) -> Iterator[tuple[str, Update]]:
    """Every resident as a creation update from their municipality, to seed a store.

    A baby born in the year before `as_of` comes as its 出生 (changed on its birth
    date); everyone else as 職権記載 on the day before `as_of`. The updates are in
    time order, all before `as_of` (Japan time), so a change stream starting on
    `as_of` supersedes them under the conflict rule (DESIGN.md §3).
    """
    load_day = population.as_of - dt.timedelta(days=1)
    year_ago = population.as_of - dt.timedelta(days=365)
    dated = []
    for i, r in enumerate(population.residents):
        if r.birth_date > year_ago:
            dated.append((r.birth_date, i, ChangeReason.BIRTH))
        else:
            dated.append((load_day, i, ChangeReason.ENTRY_BY_AUTHORITY))
    dated.sort()
    for day, group in itertools.groupby(dated, key=lambda item: item[0]):
        items = list(group)
        base = day_start_us(day)
        step = US_PER_DAY // (len(items) + 1)  # spread over the day, strictly increasing
        for k, (_, i, reason) in enumerate(items, start=1):
            person = Person(population.residents[i])
            yield person.muni, person.update(reason, day, base + k * step)
