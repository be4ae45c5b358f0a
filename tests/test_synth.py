"""The synthetic population and change stream (jukisync.synth) and `jukisync gen`."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import math
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.publisher.input import BadLine, read_updates
from jukisync.sim import synth
from jukisync.sim.synth import reference, residents
from jukisync.wire import codes
from jukisync.wire.messages import ChangeFamily, ChangeReason, Sex, Update, decode_update

R = ChangeReason
JST = dt.timezone(dt.timedelta(hours=9))
MUNIS = {m.code: m for m in synth.MUNICIPALITIES}
IDENTITY_FIELDS = (
    "juminhyo_code",
    "kojin_bango",
    "name",
    "name_kana",
    "former_surname",
    "alias",
    "birth_date",
    "sex",
    "address",
    "municipality",
)
REMOVALS = {R.DEATH, R.MOVE_OUT_ABROAD, R.REMOVAL_BY_AUTHORITY}
# Which identity fields each kind of change may alter; `None` = must alter at least one.
ALLOWED_CHANGES: dict[ChangeReason, frozenset[str]] = {
    R.MOVE_OUT: frozenset(),
    R.DEATH: frozenset(),
    R.MOVE_OUT_ABROAD: frozenset(),
    R.REMOVAL_BY_AUTHORITY: frozenset(),
    R.MOVE_IN: frozenset({"address", "municipality"}),
    R.ADDRESS_CHANGE: frozenset({"address"}),
    R.KOJIN_BANGO_CHANGE: frozenset({"kojin_bango"}),
    R.JUMINHYO_CODE_CHANGE: frozenset({"juminhyo_code"}),
    R.FORMER_SURNAME_ALIAS: frozenset({"former_surname", "alias"}),
    R.ERROR_CORRECTION: frozenset({"name_kana", "birth_date"}),
    R.CORRECTION_BY_AUTHORITY: frozenset({"name", "name_kana", "address"}),
}
MUST_CHANGE = {
    R.MOVE_IN: "municipality",
    R.ADDRESS_CHANGE: "address",
    R.KOJIN_BANGO_CHANGE: "kojin_bango",
    R.JUMINHYO_CODE_CHANGE: "juminhyo_code",
}


def jst_date(recorded_at: int) -> dt.date:
    return dt.datetime.fromtimestamp(recorded_at / 1e6, JST).date()


def is_katakana_reading(text: str) -> bool:
    # Katakana letters, the long-vowel mark and an ideographic space between parts.
    return bool(text) and all("\u30a1" <= ch <= "\u30fa" or ch in "ー\u3000" for ch in text)


@dataclasses.dataclass
class Replay:
    """What a replay of a stream saw, for the tests to look at."""

    reasons: collections.Counter[ChangeReason]
    move_pairs: list[tuple[Update, Update]]
    final_status: dict[str, str]


def replay(
    initial: Iterable[tuple[str, Update]],
    changes: Iterable[tuple[str, Update]],
    check: codes.JuminhyoCheck = synth.placeholder_juminhyo_check,
) -> Replay:
    """Replay the initial load then the changes, asserting every rule of a sane stream."""
    status: dict[str, str] = {}  # code -> active | moving | removed | retired
    holder: dict[str, str] = {}  # code -> municipality holding the record
    current: dict[str, Update] = {}  # code -> the record's last update
    kojin_seen: set[str] = set()
    moving_out: dict[str, Update] = {}
    pairs: list[tuple[Update, Update]] = []
    reasons: collections.Counter[ChangeReason] = collections.Counter()
    previous_register = codes.register_juminhyo_check(check)
    try:
        for stage, stream in (("initial", initial), ("changes", changes)):
            last: tuple[dt.date, int] | None = None
            for origin, u in stream:
                reasons[u.reason] += 1
                # Every update is valid as a publisher checks it before signing.
                codes.validate_update(u, origin=origin)
                assert u.seq == 0
                assert origin == u.municipality, "an update comes from its municipality"
                assert is_katakana_reading(u.name_kana), u.name_kana
                assert u.sex in (Sex.MALE, Sex.FEMALE)
                assert u.birth_date <= u.changed_on
                muni = MUNIS[u.municipality]
                assert u.address.startswith(muni.prefix), (u.address, muni)
                assert u.address != muni.prefix
                assert u.changed_on == jst_date(u.recorded_at)
                version = (u.changed_on, u.recorded_at)
                assert last is None or version > last, "time goes strictly forward"
                assert last is None or u.recorded_at > last[1]
                last = version

                code = u.juminhyo_code
                if stage == "initial":
                    assert u.reason in (R.ENTRY_BY_AUTHORITY, R.BIRTH)
                if u.reason.family is ChangeFamily.CREATION and u.reason is not R.MOVE_IN:
                    assert code not in status, "a new record gets a code never used before"
                    assert u.kojin_bango not in kojin_seen
                    kojin_seen.add(u.kojin_bango)
                    if u.reason is R.BIRTH:
                        assert u.birth_date == u.changed_on or stage == "initial"
                    status[code], holder[code], current[code] = "active", origin, u
                    continue

                old_code = code
                if u.reason is R.JUMINHYO_CODE_CHANGE:
                    assert u.previous_juminhyo_code is not None
                    old_code = u.previous_juminhyo_code
                    assert code not in status, "a new code is never a used one"
                    status[old_code] = "retired"
                else:
                    assert u.previous_juminhyo_code is None
                before = current[old_code]
                if u.reason is R.MOVE_IN:
                    assert status[code] == "moving", "a 転入 follows a 転出"
                    out = moving_out.pop(code)
                    assert origin != out.municipality
                    assert version > (out.changed_on, out.recorded_at)
                    pairs.append((out, u))
                else:
                    assert status[old_code] in ("active", "retired")
                    assert holder[old_code] == origin, "only the holder changes a record"

                changed = {f for f in IDENTITY_FIELDS if getattr(before, f) != getattr(u, f)}
                assert changed <= ALLOWED_CHANGES[u.reason], (u.reason, changed)
                if u.reason in MUST_CHANGE:
                    assert MUST_CHANGE[u.reason] in changed, u.reason
                elif u.reason in (
                    R.FORMER_SURNAME_ALIAS,
                    R.ERROR_CORRECTION,
                    R.CORRECTION_BY_AUTHORITY,
                ):
                    assert changed, f"a {u.reason} that changes nothing"
                if u.reason is R.CORRECTION_BY_AUTHORITY and "address" in changed:
                    assert changed == {"address"}
                if u.reason is R.KOJIN_BANGO_CHANGE:
                    assert u.kojin_bango not in kojin_seen, "a 個人番号 is never reused"
                    kojin_seen.add(u.kojin_bango)

                if u.reason is R.MOVE_OUT:
                    status[code] = "moving"
                    moving_out[code] = u
                elif u.reason in REMOVALS:
                    status[code] = "removed"
                else:
                    status[code] = "active"
                holder[code], current[code] = origin, u
    finally:
        codes.register_juminhyo_check(previous_register)
    assert not moving_out, "every 転出 has its 転入 within the stream"
    return Replay(reasons, pairs, status)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population() -> synth.Population:
    return synth.generate_population(3000, seed=11)


@pytest.fixture(scope="module")
def stream(population: synth.Population) -> list[tuple[str, Update]]:
    return list(synth.generate_changes(population, 30_000, seed=11))


@pytest.fixture(scope="module")
def replayed(population: synth.Population, stream: list[tuple[str, Update]]) -> Replay:
    return replay(synth.initial_load(population), stream)


# --- reference data -------------------------------------------------------------------------


@pytest.mark.parametrize("m", synth.MUNICIPALITIES, ids=lambda m: f"{m.code}-{m.name}")
def test_every_municipality_code_has_a_valid_check_digit(m: synth.Municipality) -> None:
    assert codes.is_valid_local_government_code(m.code)
    assert codes.local_government_check_digit(m.code[:5]) == int(m.code[5])
    assert m.prefix.startswith(synth.PREFECTURES[m.code[:2]])


def test_yamaguchi_municipalities_match_domain_table() -> None:
    ours = {m.code: m.name for m in synth.MUNICIPALITIES if m.prefecture == "35"}
    assert ours == dict(codes.YAMAGUCHI_MUNICIPALITIES)
    assert {m.code: m.name for m in synth.MUNICIPALITIES}["131016"] == "千代田区"
    prefectures = {m.prefecture for m in synth.MUNICIPALITIES}
    assert {"13", "34", "35", "40"} <= prefectures


def test_yamaguchi_weights_follow_population() -> None:
    yamaguchi = sorted(
        (m for m in synth.MUNICIPALITIES if m.prefecture == "35"), key=lambda m: -m.weight
    )
    assert yamaguchi[0].name == "下関市"
    assert yamaguchi[-1].name == "上関町"


def test_reference_readings_are_katakana() -> None:
    names = itertools.chain(
        reference.SURNAMES,
        *reference.MALE_GIVEN,
        *reference.FEMALE_GIVEN,
        *(n.surnames + n.male + n.female for n in reference.NATIONALITIES),
    )
    for name in names:
        for reading in name.readings:
            assert is_katakana_reading(reading), (name.kanji, reading)
    assert len(reference.SURNAMES) >= 200
    assert len({n.kanji for n in reference.SURNAMES}) == len(reference.SURNAMES)


def test_kanji_numbers_for_chome() -> None:
    assert [residents._kanji_number(n) for n in (1, 9, 10, 11, 20, 24)] == [
        "一",
        "九",
        "十",
        "十一",
        "二十",
        "二十四",
    ]


# --- placeholder 住民票コード check digit -------------------------------------------------


def test_placeholder_check_digit_example() -> None:
    # weights 3,1,3,... from the right over 1234567890: 0*3+9+8*3+7+6*3+5+4*3+3+2*3+1 = 85
    assert synth.placeholder_juminhyo_check_digit("1234567890") == 5
    assert synth.placeholder_juminhyo_check("12345678905")
    assert not synth.placeholder_juminhyo_check("12345678904")
    assert not synth.placeholder_juminhyo_check("1234567890")
    with pytest.raises(ValueError):
        synth.placeholder_juminhyo_check_digit("12345")


@given(
    first10=st.text(alphabet="0123456789", min_size=10, max_size=10),
    pos=st.integers(0, 10),
    delta=st.integers(1, 9),
)
def test_placeholder_check_catches_every_single_digit_error(
    first10: str, pos: int, delta: int
) -> None:
    code = first10 + str(synth.placeholder_juminhyo_check_digit(first10))
    assert synth.placeholder_juminhyo_check(code)
    wrong = code[:pos] + str((int(code[pos]) + delta) % 10) + code[pos + 1 :]
    assert not synth.placeholder_juminhyo_check(wrong)


# --- population ---------------------------------------------------------------------------


def test_population_is_deterministic(population: synth.Population) -> None:
    again = synth.generate_population(3000, seed=11)
    assert again.residents == population.residents
    other = synth.generate_population(3000, seed=12)
    assert other.residents != population.residents


def test_population_codes_are_valid_and_unique(population: synth.Population) -> None:
    residents = population.residents
    assert len(residents) == 3000
    assert len({r.juminhyo_code for r in residents}) == len(residents)
    assert len({r.kojin_bango for r in residents}) == len(residents)
    for r in residents:
        assert synth.placeholder_juminhyo_check(r.juminhyo_code)
        assert codes.is_valid_kojin_bango(r.kojin_bango)
        assert is_katakana_reading(r.name_kana)


def test_population_looks_like_japan() -> None:
    pop = synth.generate_population(20_000, seed=3)
    residents = pop.residents
    n = len(residents)
    ages = [(pop.as_of - r.birth_date).days / 365.2425 for r in residents]
    assert all(0 <= a < 106 for a in ages)
    share_65 = sum(a >= 65 for a in ages) / n
    share_under_15 = sum(a < 15 for a in ages) / n
    assert 0.26 < share_65 < 0.33  # Japan: 29 %
    assert 0.09 < share_under_15 < 0.14  # Japan: 11.4 %
    women = sum(r.sex is Sex.FEMALE for r in residents) / n
    assert 0.49 < women < 0.54
    old_women = [r.sex for r, a in zip(residents, ages, strict=True) if a >= 90]
    assert sum(s is Sex.FEMALE for s in old_women) / len(old_women) > 0.65
    by_muni = collections.Counter(r.municipality for r in residents)
    yamaguchi = sum(c for code, c in by_muni.items() if code.startswith("35")) / n
    assert 0.7 < yamaguchi < 0.85
    assert by_muni["352012"] > by_muni["352039"] > by_muni["352047"] > by_muni["355020"]
    assert set(by_muni) == {m.code for m in synth.MUNICIPALITIES}
    foreign = [r for r in residents if r.nationality is not None]
    assert 0.01 < len(foreign) / n < 0.03
    assert any(r.alias for r in foreign)
    assert not any(r.alias for r in residents if r.nationality is None)
    former = [r for r in residents if r.former_surname]
    assert former and not any(r.nationality for r in former)
    assert all(r.former_surname != r.surname for r in former)
    surnames = collections.Counter(r.surname for r in residents)
    assert surnames.most_common(1)[0][1] > 10 * surnames["河内"]  # common names are common


def test_given_names_follow_the_generation() -> None:
    pop = synth.generate_population(5000, seed=5)
    old_men = {
        r.given_name for r in pop.residents if r.sex is Sex.MALE and r.birth_date.year < 1950
    }
    young_men = {
        r.given_name for r in pop.residents if r.sex is Sex.MALE and r.birth_date.year >= 2005
    }
    assert "清" in old_men or "茂" in old_men
    assert not {"蓮", "陽翔", "湊"} & old_men
    assert "清" not in young_men


def test_custom_check_digit_is_used_everywhere() -> None:
    pop = synth.generate_population(200, seed=1, juminhyo_check_digit=lambda first10: 7)
    assert all(r.juminhyo_code.endswith("7") for r in pop.residents)
    zero = {f.name: 0.0 for f in dataclasses.fields(synth.ChangeMix)}
    mix = synth.ChangeMix(**{**zero, "juminhyo_code_changes": 1.0, "births": 1.0})
    updates = [u for _, u in synth.generate_changes(pop, 300, seed=1, mix=mix)]
    assert {u.reason for u in updates} == {R.JUMINHYO_CODE_CHANGE, R.BIRTH}
    assert all(u.juminhyo_code.endswith("7") for u in updates)


def test_population_rejects_bad_municipality() -> None:
    bad = dataclasses.replace(synth.MUNICIPALITIES[0], code="352013")
    with pytest.raises(ValueError, match="check digit"):
        synth.generate_population(10, seed=1, municipalities=[bad])
    with pytest.raises(ValueError):
        synth.generate_population(-1, seed=1)


# --- initial load ---------------------------------------------------------------------------


def test_initial_load_creates_every_resident_once(population: synth.Population) -> None:
    load = list(synth.initial_load(population))
    assert len(load) == len(population)
    assert {u.juminhyo_code for _, u in load} == {r.juminhyo_code for r in population.residents}
    by_code = {r.juminhyo_code: r for r in population.residents}
    for origin, u in load:
        r = by_code[u.juminhyo_code]
        assert origin == u.municipality == r.municipality
        assert (u.name, u.name_kana, u.address, u.kojin_bango) == (
            r.name,
            r.name_kana,
            r.address,
            r.kojin_bango,
        )
        if u.reason is R.BIRTH:
            assert u.changed_on == u.birth_date
        else:
            assert u.reason is R.ENTRY_BY_AUTHORITY
            assert u.changed_on == population.as_of - dt.timedelta(days=1)
    assert any(u.reason is R.BIRTH for _, u in load)
    # The whole load is before the population's date, so changes from then supersede it.
    first_change = dt.datetime.combine(population.as_of, dt.time(), JST).timestamp() * 1e6
    assert max(u.recorded_at for _, u in load) < first_change


# --- the change stream ----------------------------------------------------------------------


def test_stream_is_consistent(replayed: Replay, stream: list[tuple[str, Update]]) -> None:
    assert sum(replayed.reasons.values()) == 3000 + len(stream)
    assert len(stream) == 30_000
    # Every kind of change the mix has, happens.
    assert set(replayed.reasons) == set(ChangeReason)
    statuses = collections.Counter(replayed.final_status.values())
    assert statuses["removed"] > 0 and statuses["retired"] > 0 and statuses["active"] > 0


def test_stream_is_deterministic(
    population: synth.Population, stream: list[tuple[str, Update]]
) -> None:
    # Generating again from the same population gives the same stream: the generator
    # works on its own copy of the state.
    assert list(synth.generate_changes(population, 30_000, seed=11)) == stream
    other = list(synth.generate_changes(population, 1000, seed=12))
    assert other != stream[:1000]


def test_moves_are_pairs_in_order(replayed: Replay) -> None:
    assert replayed.reasons[R.MOVE_OUT] == replayed.reasons[R.MOVE_IN] == len(replayed.move_pairs)
    for out, into in replayed.move_pairs:
        assert out.juminhyo_code == into.juminhyo_code
        assert out.municipality != into.municipality
        assert (into.changed_on, into.recorded_at) > (out.changed_on, out.recorded_at)
        # the 転入 is notified within 14 days
        assert (into.changed_on - out.changed_on).days <= 15
        assert out.address != into.address
    prefectures = collections.Counter(
        (out.municipality[:2], into.municipality[:2]) for out, into in replayed.move_pairs
    )
    assert prefectures[("35", "13")] > 0 and prefectures[("13", "35")] > 0  # 山口 <-> 東京
    within = sum(c for (a, b), c in prefectures.items() if a == b)
    assert 0.4 < within / len(replayed.move_pairs) < 0.9


def test_proportions_follow_the_mix() -> None:
    pop = synth.generate_population(20_000, seed=2)
    n = 100_000
    counts = collections.Counter(
        u.reason for _, u in synth.generate_changes(pop, n, seed=2, seasonality=None)
    )
    assert sum(counts.values()) == n
    for reason, share in synth.DEFAULT_MIX.update_shares().items():
        expected = n * share
        # binomial noise (4 sigma) plus a little for the end-of-stream adjustments
        assert abs(counts[reason] - expected) <= 4 * math.sqrt(expected) + 0.02 * expected, (
            reason,
            counts[reason],
            expected,
        )
    # domain.md: roughly 2x as many deaths as births, ~6.6 move-ins per birth
    assert 1.8 < counts[R.DEATH] / counts[R.BIRTH] < 2.5
    assert 5.5 < counts[R.MOVE_IN] / counts[R.BIRTH] < 7.5


def test_custom_mix_is_honoured() -> None:
    pop = synth.generate_population(500, seed=4)
    zero = {f.name: 0.0 for f in dataclasses.fields(synth.ChangeMix)}
    only_deaths = synth.ChangeMix(**{**zero, "deaths": 1.0})
    reasons = collections.Counter(
        u.reason for _, u in synth.generate_changes(pop, 400, seed=4, mix=only_deaths)
    )
    assert reasons == {R.DEATH: 400}
    # Deaths are taken by age: the dead are far older than the living.
    dead = [u.birth_date for _, u in synth.generate_changes(pop, 50, seed=4, mix=only_deaths)]
    mean_birth_dead = sum(d.year for d in dead) / len(dead)
    mean_birth_all = sum(r.birth_date.year for r in pop.residents) / len(pop)
    assert mean_birth_dead < mean_birth_all - 15
    # Once everyone is dead, only arrivals from abroad can still happen.
    after = collections.Counter(
        u.reason for _, u in synth.generate_changes(pop, 520, seed=4, mix=only_deaths)
    )
    # (each newcomer is the next death's only candidate)
    assert after == {R.DEATH: 510, R.MOVE_IN_FROM_ABROAD: 10}
    with pytest.raises(ValueError):
        synth.ChangeMix(deaths=-1.0)
    with pytest.raises(ValueError):
        list(synth.generate_changes(pop, 1, seed=1, mix=synth.ChangeMix(**zero)))


def test_moving_season_peaks_in_april() -> None:
    pop = synth.generate_population(2000, seed=8)
    # 24k updates squeezed into two years: ~270 move-outs a month on average.
    moves = collections.Counter(
        u.changed_on.month
        for _, u in synth.generate_changes(pop, 24_000, seed=8, max_span_days=730)
        if u.reason is R.MOVE_OUT
    )
    deaths = collections.Counter(
        u.changed_on.month
        for _, u in synth.generate_changes(pop, 24_000, seed=8, max_span_days=730)
        if u.reason is R.DEATH
    )
    average = sum(moves.values()) / 12
    assert moves[4] > 1.4 * average
    assert moves[4] > 1.6 * moves[6]
    # Deaths do not follow the moving season: April is not their peak.
    assert deaths[4] < 1.25 * sum(deaths.values()) / 12


def test_time_advances_at_the_national_rate() -> None:
    # 124.9 M residents make ~17.5 M updates a year: 10 000 make ~1 400.
    pop = synth.generate_population(10_000, seed=6)
    updates = [u for _, u in synth.generate_changes(pop, 1400, seed=6, seasonality=None)]
    span = (updates[-1].changed_on - updates[0].changed_on).days
    assert 300 < span < 430
    # ... unless that would take longer than max_span_days.
    # (Unsqueezed, 5000 updates would take three and a half years; the last 転入s may
    # come up to 14 days after the last other event.)
    squeezed = [
        u for _, u in synth.generate_changes(pop, 5000, seed=6, max_span_days=30, seasonality=None)
    ]
    assert 25 <= (squeezed[-1].changed_on - pop.as_of).days <= 30 * 1.1 + 15


def test_start_date(population: synth.Population) -> None:
    start = dt.date(2025, 4, 1)
    first = next(synth.generate_changes(population, 10, seed=1, start=start))[1]
    assert first.changed_on >= start
    with pytest.raises(ValueError, match="before"):
        next(synth.generate_changes(population, 10, seed=1, start=dt.date(2023, 12, 31)))


def test_code_changes_never_reuse_codes() -> None:
    pop = synth.generate_population(30, seed=9)
    zero = {f.name: 0.0 for f in dataclasses.fields(synth.ChangeMix)}
    churn = synth.ChangeMix(**{**zero, "juminhyo_code_changes": 1.0, "kojin_bango_changes": 1.0})
    updates = [u for _, u in synth.generate_changes(pop, 3000, seed=9, mix=churn)]
    # ~100 changes per person: every code ever seen is distinct, old codes never return.
    codes_seen = [r.juminhyo_code for r in pop.residents] + [
        u.juminhyo_code for u in updates if u.reason is R.JUMINHYO_CODE_CHANGE
    ]
    assert len(codes_seen) == len(set(codes_seen))
    retired: set[str] = set()
    for u in updates:
        if u.previous_juminhyo_code:
            assert u.previous_juminhyo_code not in retired
            retired.add(u.previous_juminhyo_code)
        assert u.juminhyo_code not in retired, "a retired code came back"
    assert len(retired) > 1000
    numbers = [r.kojin_bango for r in pop.residents] + [
        u.kojin_bango for u in updates if u.reason is R.KOJIN_BANGO_CHANGE
    ]
    assert len(numbers) == len(set(numbers))
    replay(synth.initial_load(pop), ((u.municipality, u) for u in updates))


@settings(max_examples=30, deadline=None)
@given(
    residents=st.integers(0, 80),
    changes=st.integers(0, 400),
    seed=st.integers(0, 2**32),
    municipalities=st.sampled_from(
        [
            synth.MUNICIPALITIES,
            synth.MUNICIPALITIES[:1],  # nowhere to move to: moves become 転居
            (MUNIS["355020"], MUNIS["131016"]),  # 阿武町 and 千代田区 only
        ]
    ),
    seasonal=st.booleans(),
)
def test_any_stream_is_consistent(
    residents: int,
    changes: int,
    seed: int,
    municipalities: tuple[synth.Municipality, ...],
    seasonal: bool,
) -> None:
    pop = synth.generate_population(residents, seed, municipalities)
    stream = list(
        synth.generate_changes(
            pop, changes, seed, seasonality=synth.MOVING_SEASON if seasonal else None
        )
    )
    assert len(stream) == changes
    result = replay(synth.initial_load(pop), stream)
    if len(municipalities) == 1:
        assert result.reasons[R.MOVE_OUT] == 0


def test_json_lines_round_trip(stream: list[tuple[str, Update]]) -> None:
    updates = [u for _, u in stream[:5000]]
    data = msgspec.json.Encoder().encode_lines(updates)
    lines = data.splitlines()
    assert len(lines) == len(updates)
    assert [decode_update(line) for line in lines] == updates


# --- the CLI --------------------------------------------------------------------------------


def run_gen(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["gen", *args], catch_exceptions=False)
    return result.exit_code, result.output


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_gen_is_registered() -> None:
    assert "gen" in main.commands
    code, out = run_gen("--help")
    assert code == ExitCode.OK
    assert "Examples:" in out and "--no-initial" in out


def test_gen_writes_a_deterministic_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert run_gen("--residents", "300", "--changes", "700", "--seed", "5", "--out", str(a))[0] == 0
    assert run_gen("--residents", "300", "--changes", "700", "--seed", "5", "--out", str(b))[0] == 0
    assert run_gen("--residents", "300", "--changes", "700", "--seed", "6", "--out", str(c))[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    lines = lines_of(a)
    assert len(lines) == 1000
    updates = [decode_update(line) for line in lines]
    assert all(u.reason in (R.ENTRY_BY_AUTHORITY, R.BIRTH) for u in updates[:300])
    replay(
        ((u.municipality, u) for u in updates[:300]), ((u.municipality, u) for u in updates[300:])
    )
    # The file is what `publish` reads: every line passes its checks.
    assert not [item for item in read_updates(lines) if isinstance(item, BadLine)]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_gen_without_initial_load(tmp_path: Path) -> None:
    out = tmp_path / "changes.jsonl"
    code, output = run_gen(
        "--residents", "100", "--changes", "250", "--no-initial", "--start", "2025-03-01",
        "--out", str(out),
    )  # fmt: skip
    assert code == ExitCode.OK
    assert "wrote 250 updates" in output
    updates = [decode_update(line) for line in lines_of(out)]
    assert len(updates) == 250
    assert updates[0].changed_on >= dt.date(2025, 3, 1)


def test_gen_to_stdout() -> None:
    result = CliRunner().invoke(
        main, ["gen", "--residents", "5", "--changes", "5", "--out", "-"], catch_exceptions=False
    )
    assert result.exit_code == ExitCode.OK
    json_lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 10
    assert all(decode_update(line) for line in json_lines)


def test_gen_exit_codes(tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    assert run_gen("--residents", "-1", "--out", out)[0] == ExitCode.USAGE
    assert run_gen("--out", out, "--start", "2020-01-01")[0] == ExitCode.USAGE
    assert run_gen("--residents", "1")[0] == ExitCode.USAGE  # --out is required
    code, output = run_gen(
        "--residents", "3", "--changes", "3", "--out", str(tmp_path / "no" / "x")
    )
    assert code == ExitCode.FAILURE
    assert "cannot write" in output


def test_gen_is_deterministic_across_processes(tmp_path: Path) -> None:
    # String hashing is randomised per process: nothing in the stream may depend on it.
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"h{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", "from jukisync.cli import main; main()", "gen",
             "--residents", "500", "--changes", "1500", "--seed", "3", "--out", str(out)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_reference_data_comes_from_the_package_data_files() -> None:
    # The tables are read with importlib.resources from jukisync/sim/data/, so they
    # must ship with the package (maturin includes the python-source tree).
    from importlib import resources

    data = resources.files("jukisync.sim").joinpath("data")
    names = {p.name for p in data.iterdir()}
    assert {"municipalities.txt", "names.toml", "ages.toml"} <= names
    listed = [
        line.split()[0]
        for line in data.joinpath("municipalities.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith(("#", " "))
    ]
    assert [m.code for m in synth.MUNICIPALITIES] == listed
    assert len(reference.NATIONALITIES) == 5 and len(reference.MALE_GIVEN) == 3
    assert reference.AGE_BANDS[0] == (0, 4200, 0.488)
