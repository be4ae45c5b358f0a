"""The reference data of the synthetic population: municipalities and their towns,
names and readings (Japanese and foreign), the age pyramid, mortality and mobility.

The data lives in files beside the code (`jukisync/sim/data/`: `municipalities.txt`,
`names.toml`, `ages.toml`), read once at import with `importlib.resources` (so it
works from a wheel too); this module turns them into the tables the generator draws
from.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

__all__ = [
    "DEFAULT_AS_OF",
    "MUNICIPALITIES",
    "PREFECTURES",
    "Municipality",
    "Name",
    "Nationality",
    "Town",
]

DEFAULT_AS_OF: Final = dt.date(2024, 1, 1)  # the date of domain.md's resident count

JST: Final = dt.timezone(dt.timedelta(hours=9))
US_PER_DAY: Final = 86_400_000_000
IDEOGRAPHIC_SPACE: Final = "\u3000"  # between surname and given name (and readings)
NATIONAL_RESIDENTS: Final = 124_885_175  # domain.md, 2024-01-01


def _data(name: str) -> str:
    return resources.files("jukisync.sim").joinpath("data", name).read_text(encoding="utf-8")


def _toml(name: str) -> dict[str, Any]:
    return tomllib.loads(_data(name))


# --- municipalities ---------------------------------------------------------------------

PREFECTURES: Final = {"13": "東京都", "34": "広島県", "35": "山口県", "40": "福岡県"}


@dataclass(frozen=True, slots=True)
class Town:
    """A 町名 (or 大字) and how its addresses are written.

    `chome` > 0: 住居表示 with 丁目 ("中央二丁目3番4号"); 0: 住居表示 without 丁目
    ("唐戸町3番4号"); -1: 地番 style of rural areas ("大字奈古1234番地").
    """

    name: str
    chome: int


@dataclass(frozen=True, slots=True)
class Municipality:
    code: str  # 6-digit local government code (JIS X 0402, with check digit)
    name: str  # as written in addresses after the prefecture: 下関市, 広島市中区
    population: int  # approximate, 2020 census
    towns: tuple[Town, ...]
    weight: float  # share of the synthetic population (relative)

    @property
    def prefecture(self) -> str:
        return self.code[:2]

    @property
    def prefix(self) -> str:
        """The address up to the town: 山口県下関市."""
        return PREFECTURES[self.prefecture] + self.name


# Municipalities outside Yamaguchi get a tenth of their real weight: the project's
# seed is Yamaguchi's, so most records should be there, while enough live elsewhere
# for moves between prefectures (山口 <-> 東京, 広島, 福岡) to be common.
_OUTSIDE_WEIGHT: Final = 0.1


def _parse_municipalities(data: str) -> tuple[Municipality, ...]:
    # Entries may wrap over lines: after the code, name and population every token of
    # an entry is a town ("name:chome"), so a token without ":" starts the next entry.
    entries: list[list[str]] = []
    lines = (line for line in data.splitlines() if not line.startswith("#"))
    for token in " ".join(lines).split():
        if ":" not in token and (not entries or len(entries[-1]) >= 3):
            entries.append([])
        entries[-1].append(token)
    result = []
    for code, name, population, *towns in entries:
        parsed = tuple(Town(t, int(c)) for t, c in (town.split(":") for town in towns))
        weight = int(population) * (1.0 if code.startswith("35") else _OUTSIDE_WEIGHT)
        result.append(Municipality(code, name, int(population), parsed, weight))
    return tuple(result)


MUNICIPALITIES: Final = _parse_municipalities(_data("municipalities.txt"))


# --- names ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    kanji: str  # or alphabet, for foreign residents
    readings: tuple[str, ...]  # katakana; the first is the usual one


def _parse_names(data: str) -> tuple[Name, ...]:
    words = data.split()
    # "_" stands for the space inside a multi-part foreign given name: an ASCII space
    # in the name (VAN AN), an ideographic one in the reading (ヴァン　アン).
    return tuple(
        Name(k.replace("_", " "), tuple(r.replace("_", IDEOGRAPHIC_SPACE).split("/")))
        for k, r in zip(words[::2], words[1::2], strict=True)
    )


_NAMES: Final = _toml("names.toml")
SURNAMES: Final = _parse_names(_NAMES["surnames"])
MALE_GIVEN: Final = tuple(_parse_names(d) for d in _NAMES["given"]["male"])
FEMALE_GIVEN: Final = tuple(_parse_names(d) for d in _NAMES["given"]["female"])
# birth years where the given-name lists change
COHORT_BOUNDS: Final = tuple(int(year) for year in _NAMES["given"]["cohorts"])
# Surname frequencies fall off roughly as a power of the rank (佐藤 1.8 M people,
# the 200th name about 60 k): weights 1/rank^0.8 give that spread.
SURNAME_CUM: Final = list(
    itertools.accumulate(1.0 / (rank**0.8) for rank in range(1, len(SURNAMES) + 1))
)


@dataclass(frozen=True, slots=True)
class Nationality:
    code: str
    share: float
    alias_share: float
    surnames: tuple[Name, ...]
    male: tuple[Name, ...]
    female: tuple[Name, ...]


NATIONALITIES: Final = tuple(
    Nationality(
        f["nationality"],
        float(f["share"]),
        float(f["alias_share"]),
        _parse_names(f["surnames"]),
        _parse_names(f["male"]),
        _parse_names(f["female"]),
    )
    for f in _NAMES["foreign"]
)
NATIONALITY_CUM: Final = list(itertools.accumulate(n.share for n in NATIONALITIES))
BY_NATIONALITY: Final = {n.code: n for n in NATIONALITIES}

ALT_READINGS: Final = {
    n.kanji: n.readings
    for n in itertools.chain(SURNAMES, *MALE_GIVEN, *FEMALE_GIVEN)
    if len(n.readings) > 1
}


# --- ages -------------------------------------------------------------------------------

AGE_BANDS: Final = tuple((int(a), int(n), float(f)) for a, n, f in _toml("ages.toml")["bands"])
AGE_CUM: Final = list(itertools.accumulate(b[1] for b in AGE_BANDS))
MAX_AGE: Final = 125


def _mortality(age: int) -> float:
    # Gompertz law fitted to Japan's life table: ~0.04 %/year at 30, 0.2 % at 50,
    # 10 % at 90, ~30 % at 100; infants somewhat higher than young children.
    base = 0.0002 + 0.00002 * math.exp(0.095 * age)
    return min(0.5, base + (0.0015 if age == 0 else 0.0))


def _mobility(age: int) -> float:
    # Relative propensity to move house by age: highest for students and young
    # workers (the March-April season), children moving with their parents.
    if age < 18:
        return 0.5
    if age < 20:
        return 1.5
    if age < 30:
        return 2.5
    if age < 40:
        return 1.5
    if age < 50:
        return 0.8
    if age < 65:
        return 0.5
    return 0.3


MORTALITY: Final = [_mortality(a) for a in range(MAX_AGE + 1)]
MOBILITY: Final = [_mobility(a) for a in range(MAX_AGE + 1)]
MOBILITY_MAX: Final = max(MOBILITY)
