"""Synthetic residents and change streams: realistic, seeded, reproducible.

Used by `jukisync gen`, the demo, tests and benchmarks, so that every tier can be fed
data that looks like a municipality's (domain.md) without any real personal data.

- `generate_population` makes residents of real municipalities (Yamaguchi's 19,
  weighted by population, plus some in Tokyo, Hiroshima and Fukuoka) with common
  Japanese names and their katakana readings, an age pyramid like Japan's, street
  addresses, unique 住民票コード and valid unique 個人番号; about 2 % are foreign
  residents (alphabet or kanji names; some with a 通称), some Japanese have a 旧氏.
- `initial_load` is the population as creation updates, to seed a store.
- `generate_changes` is a stream of `(origin, Update)` whose mix of 異動事由 follows
  the national yearly figures (`ChangeMix`), with the moving season in March-April.
  It keeps the state of every resident, so the stream is internally consistent: a
  move between municipalities is a 転出 from the old one then, days later, a 転入 at
  the new one; removed residents never change again; codes are never reused.

Everything is a pure function of the seed (and of the arguments): same seed, same
stream. `random.Random` is used only through `random()`, `randrange()` and
`expovariate()`, whose outputs CPython keeps stable for a given seed.

The 住民票コード check digit is *not* the official one (its formula, 平成14年総務省
告示第436号, is unpublished): it is `placeholder_juminhyo_check_digit` unless the
caller passes another `CheckDigit`.

Modules: `reference` (municipalities, names, ages: the data files under
`jukisync/sim/data/`), `residents` (codes, names, addresses; `generate_population`,
`initial_load`), `mix` (`ChangeMix`, the moving season), `changes`
(`generate_changes`). `stream_population` yields the residents of
`generate_population` one at a time, for populations too large to hold. The names
below are importable from `jukisync.sim.synth`.
"""

from __future__ import annotations

from jukisync.sim.synth.changes import MOVE_IN_LAG_DAYS, generate_changes, span_until
from jukisync.sim.synth.mix import DEFAULT_MIX, MOVING_SEASON, ChangeMix
from jukisync.sim.synth.reference import (
    DEFAULT_AS_OF,
    MUNICIPALITIES,
    PREFECTURES,
    Municipality,
    Town,
)
from jukisync.sim.synth.residents import (
    CheckDigit,
    Population,
    Resident,
    generate_population,
    initial_load,
    placeholder_juminhyo_check,
    placeholder_juminhyo_check_digit,
    stream_population,
)

__all__ = [
    "DEFAULT_AS_OF",
    "DEFAULT_MIX",
    "MOVE_IN_LAG_DAYS",
    "MOVING_SEASON",
    "MUNICIPALITIES",
    "PREFECTURES",
    "ChangeMix",
    "CheckDigit",
    "Municipality",
    "Population",
    "Resident",
    "Town",
    "generate_changes",
    "generate_population",
    "initial_load",
    "placeholder_juminhyo_check",
    "placeholder_juminhyo_check_digit",
    "span_until",
    "stream_population",
]
