"""Check digits and update validation (jukisync.codes) against domain.md."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Final, Literal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukisync.wire import codes
from jukisync.wire.codes import (
    LOCAL_GOVERNMENTS,
    YAMAGUCHI_MUNICIPALITIES,
    CodeError,
    is_valid_juminhyo_code,
    is_valid_kojin_bango,
    is_valid_local_government_code,
    kojin_bango_check_digit,
    local_government_check_digit,
    prefecture_of,
    register_juminhyo_check,
    validate_update,
)
from jukisync.wire.messages import ChangeReason, Sex, Update

SURROGATES: Final[tuple[Literal["Cs"]]] = ("Cs",)  # not encodable as UTF-8

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


def ascii_digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


@pytest.fixture(autouse=True)
def _no_default_juminhyo_check() -> Iterator[None]:
    # The registered default check is module state: never let one test leak it.
    previous = register_juminhyo_check(None)
    yield
    register_juminhyo_check(previous)


# --- 個人番号 ----------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["123456789018", "983205673214", "111111111118", "000111111111"])
def test_kojin_bango_valid_examples(number: str) -> None:
    assert is_valid_kojin_bango(number)
    assert kojin_bango_check_digit(number[:11]) == int(number[11])


@pytest.mark.parametrize(
    "number",
    [
        "983205673210",  # domain.md's invalid example
        "12345678901",  # 11 digits
        "1234567890188",  # 13 digits
        "１２３４５６７８９０１８",  # full-width digits pass str.isdigit but are no number
        "12345678901a",
        " 123456789018",
        "",
    ],
)
def test_kojin_bango_invalid_examples(number: str) -> None:
    assert not is_valid_kojin_bango(number)


@pytest.mark.parametrize("value", [None, 123456789018, b"123456789018"])
def test_kojin_bango_non_strings_are_invalid(value: object) -> None:
    assert not is_valid_kojin_bango(value)


def test_kojin_bango_check_digit_worked_example() -> None:
    # 12345678901 from the right: 1·2 + 0·3 + 9·4 + 8·5 + 7·6 + 6·7 + 5·2 + 4·3 + 3·4
    # + 2·5 + 1·6 = 212; 212 mod 11 = 3; 11 − 3 = 8.
    assert kojin_bango_check_digit("12345678901") == 8


@pytest.mark.parametrize(
    "bad", ["1234567890", "123456789012", "1234567890x", "１２３４５６７８９０１"]
)
def test_kojin_bango_check_digit_rejects_bad_input(bad: str) -> None:
    with pytest.raises(CodeError) as info:
        kojin_bango_check_digit(bad)
    assert info.value.value == bad


@given(ascii_digits(11))
def test_kojin_bango_appending_check_digit_validates(first11: str) -> None:
    digit = kojin_bango_check_digit(first11)
    assert 0 <= digit <= 9
    assert is_valid_kojin_bango(first11 + str(digit))


def _remainder(first11: str) -> int:
    weights = [6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2]  # Q_n for n = 11..1, left to right
    return sum(int(d) * w for d, w in zip(first11, weights, strict=True)) % 11


@given(ascii_digits(11), st.integers(0, 11), st.integers(1, 9))
def test_kojin_bango_single_digit_change_invalidates(first11: str, pos: int, delta: int) -> None:
    # Every weight is coprime to 11, so a one-digit change always changes r. But the
    # formula maps both r = 0 and r = 1 to check digit 0, so exactly the changes that
    # move r between 0 and 1 go unnoticed; every other one is caught.
    valid = first11 + str(kojin_bango_check_digit(first11))
    changed = valid[:pos] + str((int(valid[pos]) + delta) % 10) + valid[pos + 1 :]
    assert changed != valid
    if pos < 11 and {_remainder(valid[:11]), _remainder(changed[:11])} == {0, 1}:
        assert is_valid_kojin_bango(changed)
    else:
        assert not is_valid_kojin_bango(changed)


def test_kojin_bango_blind_spot_of_the_formula() -> None:
    # 12012087008 has r = 1 and 14012087008 has r = 0: both get check digit 0, so this
    # one-digit change of a valid number yields another valid number (by the law's
    # formula, not a bug here).
    assert _remainder("12012087008") == 1
    assert _remainder("14012087008") == 0
    assert is_valid_kojin_bango("120120870080")
    assert is_valid_kojin_bango("140120870080")


@given(ascii_digits(11))
def test_kojin_bango_check_digit_matches_reference(first11: str) -> None:
    # An independent transcription of 第5条, weights listed left to right.
    r = _remainder(first11)
    assert kojin_bango_check_digit(first11) == (0 if r <= 1 else 11 - r)


# --- 全国地方公共団体コード ----------------------------------------------------------------


def test_local_government_table_has_yamaguchi_19() -> None:
    assert len(YAMAGUCHI_MUNICIPALITIES) == 19
    assert all(code.startswith("35") for code in YAMAGUCHI_MUNICIPALITIES)
    assert YAMAGUCHI_MUNICIPALITIES["352012"] == "下関市"
    assert LOCAL_GOVERNMENTS["350001"] == "山口県"
    assert LOCAL_GOVERNMENTS["131016"] == "千代田区"
    assert set(YAMAGUCHI_MUNICIPALITIES) < set(LOCAL_GOVERNMENTS)
    assert len(LOCAL_GOVERNMENTS) == 23


@pytest.mark.parametrize(("code", "name"), sorted(LOCAL_GOVERNMENTS.items()))
def test_every_listed_code_passes_check_digit(code: str, name: str) -> None:
    assert is_valid_local_government_code(code), name
    assert local_government_check_digit(code[:5]) == int(code[5])


def test_local_government_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        LOCAL_GOVERNMENTS["999999"] = "x"  # type: ignore[index]


def test_local_government_remainder_edge_cases() -> None:
    # r = 0 gives 1 and r = 1 gives 0 (the note in domain.md). 01001: 6·0+5·1+4·0+3·0+2·1
    # = 7 -> 4. 02001: 5·2+2 = 12, r = 1 -> 0. 01003: 5+6 = 11, r = 0 -> 1.
    assert local_government_check_digit("01001") == 4
    assert local_government_check_digit("02001") == 0
    assert local_government_check_digit("01003") == 1


@pytest.mark.parametrize(
    "code",
    [
        "352013",  # 下関市 with a wrong check digit
        "35201",
        "3520120",
        "000001",  # passes the check digit, but prefecture 00 does not exist
        "480001",  # prefecture 48 does not exist
        "３５２０１２",
        "35201a",
    ],
)
def test_local_government_invalid(code: str) -> None:
    assert not is_valid_local_government_code(code)


def test_prefecture_range_is_checked_on_top_of_the_check_digit() -> None:
    # "000001" and "480001" carry the right check digit but name no prefecture.
    assert local_government_check_digit("00000") == 1
    assert local_government_check_digit("48000") == 2
    assert not is_valid_local_government_code("000001")
    assert not is_valid_local_government_code("480002")


@given(st.integers(1, 47), ascii_digits(3))
def test_local_government_appending_check_digit_validates(pref: int, rest: str) -> None:
    first5 = f"{pref:02d}{rest}"
    code = first5 + str(local_government_check_digit(first5))
    assert is_valid_local_government_code(code)
    assert prefecture_of(code) == f"{pref:02d}"


def test_prefecture_of_examples() -> None:
    assert prefecture_of("352012") == "35"
    assert prefecture_of("010006") == "01"
    assert prefecture_of("131016") == "13"


@pytest.mark.parametrize("code", ["352013", "35201", "", "000001"])
def test_prefecture_of_rejects_invalid(code: str) -> None:
    with pytest.raises(CodeError, match="municipality"):
        prefecture_of(code)


# --- 住民票コード ----------------------------------------------------------------------


def test_juminhyo_format_only_by_default() -> None:
    assert is_valid_juminhyo_code("12345678901")
    assert not is_valid_juminhyo_code("1234567890")
    assert not is_valid_juminhyo_code("123456789012")
    assert not is_valid_juminhyo_code("１２３４５６７８９０１")
    assert not is_valid_juminhyo_code(12345678901)


def test_juminhyo_explicit_check_is_used() -> None:
    seen: list[str] = []

    def even_last(code: str) -> bool:
        seen.append(code)
        return int(code[-1]) % 2 == 0

    assert is_valid_juminhyo_code("12345678902", check=even_last)
    assert not is_valid_juminhyo_code("12345678901", check=even_last)
    assert seen == ["12345678902", "12345678901"]


def test_juminhyo_check_not_called_on_bad_format() -> None:
    def boom(code: str) -> bool:
        raise AssertionError("called")

    assert not is_valid_juminhyo_code("abc", check=boom)


def test_juminhyo_registered_default_check() -> None:
    assert register_juminhyo_check(lambda c: c.endswith("0")) is None
    assert is_valid_juminhyo_code("12345678900")
    assert not is_valid_juminhyo_code("12345678901")
    # An explicit check overrides the registered one.
    assert is_valid_juminhyo_code("12345678901", check=lambda c: True)
    register_juminhyo_check(None)
    assert is_valid_juminhyo_code("12345678901")


# --- validate_update ---------------------------------------------------------------------


def make_update(**changes: object) -> Update:
    base = Update(
        seq=1,
        juminhyo_code="12345678901",
        previous_juminhyo_code=None,
        kojin_bango="123456789018",
        name="山口 花子",
        name_kana="ヤマグチ ハナコ",
        former_surname=None,
        alias=None,
        birth_date=dt.date(1990, 4, 1),
        sex=Sex.FEMALE,
        address="山口県下関市南部町1番1号",
        municipality="352012",
        reason=ChangeReason.MOVE_IN,
        changed_on=dt.date(2026, 4, 1),
        recorded_at=1_775_000_000_000_000,
    )
    return msgspec.structs.replace(base, **changes)


def test_valid_update_passes() -> None:
    validate_update(make_update())
    validate_update(make_update(former_surname="佐藤", alias="Hanako YAMAGUCHI"))
    validate_update(make_update(name_kana="スミス・ジョン", name="スミス ジョン"))
    validate_update(make_update(name_kana="ヤマグチ\u3000ハナコ"))
    validate_update(make_update(name_kana="ヴァーヴェ"))
    validate_update(make_update(address="山" * 256))
    validate_update(make_update(seq=0))  # the publisher numbers updates after validating
    validate_update(make_update(birth_date=dt.date(2026, 4, 1), reason=ChangeReason.BIRTH))
    validate_update(make_update(), origin="352012")
    validate_update(make_update(name="髙橋 𠮷子", name_kana="タカハシ ヨシコ"))  # non-BMP kanji
    validate_update(
        make_update(reason=ChangeReason.JUMINHYO_CODE_CHANGE, previous_juminhyo_code="10987654321")
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kojin_bango": "983205673210"}, "kojin_bango"),
        ({"kojin_bango": "12345678901"}, "kojin_bango"),
        ({"juminhyo_code": "1234567890"}, "juminhyo_code"),
        ({"juminhyo_code": "1234567890Ａ"}, "juminhyo_code"),
        ({"municipality": "352013"}, "municipality"),
        ({"municipality": "35201"}, "municipality"),
        ({"previous_juminhyo_code": "10987654321"}, "previous_juminhyo_code"),
        ({"reason": ChangeReason.JUMINHYO_CODE_CHANGE}, "previous_juminhyo_code"),
        (
            {"reason": ChangeReason.JUMINHYO_CODE_CHANGE, "previous_juminhyo_code": "1098765432"},
            "previous_juminhyo_code",
        ),
        (
            {"reason": ChangeReason.JUMINHYO_CODE_CHANGE, "previous_juminhyo_code": "12345678901"},
            "previous_juminhyo_code",
        ),
        ({"name": ""}, "name"),
        ({"name": " \u3000"}, "name"),
        ({"name_kana": ""}, "name_kana"),
        ({"name_kana": "やまぐち はなこ"}, "name_kana"),  # hiragana
        ({"name_kana": "ﾔﾏｸﾞﾁ ﾊﾅｺ"}, "name_kana"),  # half-width katakana
        ({"name_kana": "ヤマグチ ハナコ1"}, "name_kana"),
        ({"name_kana": "山口 ハナコ"}, "name_kana"),
        ({"name": "山口\x00花子"}, "name"),
        ({"name": "山口\n花子"}, "name"),
        ({"address": "下関市\u2028南部町"}, "address"),
        ({"address": "下関市\ufffd南部町"}, "address"),
        ({"former_surname": "佐\ufffd"}, "former_surname"),
        ({"former_surname": ""}, "former_surname"),
        ({"alias": "Hanako\x1b[31m"}, "alias"),
        ({"name": "ハ\u309aナコ"}, "name"),  # decomposed パ: not NFC
        ({"name_kana": "ハ\u309aナコ"}, "name_kana"),  # NFC is checked before katakana
        ({"name_kana": "ㇰㇱ"}, "name_kana"),  # small kana of Ainu names: refused by the core too
        ({"name_kana": "サヽキ"}, "name_kana"),  # iteration mark: refused by the core too
        ({"address": "山" * 257}, "address"),
        ({"birth_date": dt.date(1799, 12, 31)}, "birth_date"),
        ({"birth_date": dt.date(2026, 4, 2)}, "birth_date"),  # born after the change
        ({"changed_on": dt.date(1700, 1, 1), "birth_date": dt.date(1690, 1, 1)}, "birth_date"),
    ],
)
def test_invalid_update_names_field_and_value(changes: dict[str, object], field: str) -> None:
    update = make_update(**changes)
    with pytest.raises(CodeError) as info:
        validate_update(update)
    assert info.value.field == field
    assert info.value.value == getattr(update, field)
    assert field in str(info.value)
    assert repr(getattr(update, field)) in str(info.value)


def test_validate_update_checks_origin() -> None:
    with pytest.raises(CodeError) as info:
        validate_update(make_update(), origin="352021")
    assert (info.value.field, info.value.value) == ("municipality", "352012")
    assert "352021" in str(info.value)


@given(
    st.text(
        alphabet=st.sampled_from(
            [chr(c) for c in range(0x30A1, 0x30FB)] + ["ー", "・", " ", "\u3000"]
        ),
        min_size=1,
        max_size=40,
    ).filter(lambda s: s.strip())
)
def test_any_katakana_reading_is_accepted(kana: str) -> None:
    validate_update(make_update(name_kana=kana))


@given(st.characters(exclude_categories=SURROGATES))
def test_reading_with_a_non_katakana_char_is_refused(odd: str) -> None:
    allowed = {chr(c) for c in range(0x30A1, 0x30FB)} | set("ー・ \u3000")
    if odd in allowed:
        return
    with pytest.raises(CodeError) as info:
        validate_update(make_update(name_kana="ヤマ" + odd + "グチ"))
    # Either refused as text (control char, not NFC...) or as not katakana: always
    # naming name_kana.
    assert info.value.field == "name_kana"


def test_validate_update_uses_registered_juminhyo_check() -> None:
    validate_update(make_update())
    register_juminhyo_check(lambda code: code != "12345678901")
    with pytest.raises(CodeError) as info:
        validate_update(make_update())
    assert info.value.field == "juminhyo_code"


def test_code_error_is_a_value_error() -> None:
    assert issubclass(CodeError, ValueError)
    assert codes.CodeError is CodeError


def test_forbidden_and_kana_sets_over_every_code_point() -> None:
    """The regexes of the text checks are exactly their definitions: Cc, Cs, Zl, Zp
    and U+FFFD are forbidden; ァ..ヺ, ー, ・ and the two spaces are katakana."""
    import unicodedata

    from jukisync.wire.codes import _FORBIDDEN, _NOT_KANA

    for cp in range(0x110000):
        ch = chr(cp)
        forbidden = unicodedata.category(ch) in {"Cc", "Cs", "Zl", "Zp"} or ch == "\ufffd"
        assert bool(_FORBIDDEN.search(ch)) == forbidden, hex(cp)
        kana = 0x30A1 <= cp <= 0x30FA or ch in "ー・ \u3000"
        assert bool(_NOT_KANA.search(ch)) != kana, hex(cp)
