"""Identifiers of the register and their check digits (domain.md), and update validation.

- 個人番号 (My Number): 12 digits, check digit per 総務省令第85号 第5条.
- 全国地方公共団体コード (JIS X 0402): 6 digits, check digit with weights 6..2.
- 住民票コード: 11 digits whose check-digit formula is not public, so only the format
  is checked here and the check itself is pluggable (`register_juminhyo_check`).

`validate_update` is what a publisher runs before signing: content that fails it, if
signed anyway, makes every tier halt the origin (DESIGN.md §3), so it is cheaper to
refuse it at the source. It is the same rule set as the centres' core
(`rust/core/src/validate.rs`, with the origin given): `tests/test_publisher_edges.py`
checks on generated updates that the two accept and refuse exactly the same ones
(with no registered 住民票コード check, which only this side can have).
"""

from __future__ import annotations

import re
import types
import unicodedata
from collections.abc import Callable, Mapping
from typing import Final

from jukisync.wire.messages import ChangeReason, Update

__all__ = [
    "LOCAL_GOVERNMENTS",
    "MAX_TEXT_CHARS",
    "MIN_YEAR",
    "PREFECTURES",
    "YAMAGUCHI_MUNICIPALITIES",
    "CodeError",
    "JuminhyoCheck",
    "is_valid_juminhyo_code",
    "is_valid_kojin_bango",
    "is_valid_local_government_code",
    "kojin_bango_check_digit",
    "local_government_check_digit",
    "prefecture_of",
    "register_juminhyo_check",
    "validate_update",
]

JuminhyoCheck = Callable[[str], bool]


class CodeError(ValueError):
    """A code or a field of an update is invalid; names the field and the value."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(f"{field}: {problem}: {value!r}")
        self.field = field
        self.value = value
        self.problem = problem


def _is_ascii_digits(s: object, length: int) -> bool:
    # str.isdigit() alone accepts full-width and other Unicode digits ("１２３"),
    # which are not codes: require exactly `length` ASCII digits.
    return isinstance(s, str) and len(s) == length and s.isascii() and s.isdigit()


# --- 個人番号 ----------------------------------------------------------------------------


def kojin_bango_check_digit(first11: str) -> int:
    """Check digit of a 個人番号 from its first 11 digits (総務省令第85号 第5条).

    P_n is the n-th digit from the right, weighted Q_n = n+1 (n <= 6) or n-5 (n >= 7);
    r = sum mod 11; the check digit is 0 when r <= 1, else 11 - r.
    """
    if not _is_ascii_digits(first11, 11):
        raise CodeError("kojin_bango", first11, "expected the first 11 ASCII digits")
    total = 0
    for n, digit in enumerate(reversed(first11), start=1):
        q = n + 1 if n <= 6 else n - 5
        total += int(digit) * q
    r = total % 11
    return 0 if r <= 1 else 11 - r


def is_valid_kojin_bango(s: object) -> bool:
    """12 ASCII digits whose last one is the check digit of the first 11."""
    if not isinstance(s, str) or not _is_ascii_digits(s, 12):
        return False
    return kojin_bango_check_digit(s[:11]) == int(s[11])


# --- 全国地方公共団体コード ----------------------------------------------------------------

_LG_WEIGHTS: Final = (6, 5, 4, 3, 2)
_PREFECTURES: Final = range(1, 48)  # 01 北海道 .. 47 沖縄県
# The same, as the 2-digit strings routing keys and centre configs use.
PREFECTURES: Final = frozenset(f"{p:02d}" for p in _PREFECTURES)


def local_government_check_digit(first5: str) -> int:
    """Check digit of a local government code (JIS X 0402) from its first 5 digits.

    Weights 6,5,4,3,2; r = sum mod 11; check = (11 - r) mod 10. Unlike My Number,
    r = 0 gives 1 and r = 1 gives 0.
    """
    if not _is_ascii_digits(first5, 5):
        raise CodeError("municipality", first5, "expected the first 5 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first5, _LG_WEIGHTS, strict=True))
    return (11 - total % 11) % 10


def is_valid_local_government_code(s: object) -> bool:
    """6 ASCII digits, a prefecture 01-47, and a correct check digit.

    The prefecture range is checked on top of the check digit because codes route
    messages by prefecture (DESIGN.md §5), and e.g. 000001 passes the check digit.
    """
    if not isinstance(s, str) or not _is_ascii_digits(s, 6):
        return False
    if int(s[:2]) not in _PREFECTURES:
        return False
    return local_government_check_digit(s[:5]) == int(s[5])


def prefecture_of(code: str) -> str:
    """The 2-digit prefecture of a 6-digit local government code ("352012" -> "35")."""
    if not is_valid_local_government_code(code):
        raise CodeError("municipality", code, "not a valid 6-digit local government code")
    return code[:2]


# --- 住民票コード ----------------------------------------------------------------------

_default_juminhyo_check: JuminhyoCheck | None = None


def register_juminhyo_check(check: JuminhyoCheck | None) -> JuminhyoCheck | None:
    """Set the check used by `is_valid_juminhyo_code` when none is passed.

    The official formula (平成14年総務省告示第436号) is not public; a deployment that
    has it registers it here at start-up. `None` goes back to format-only checking.
    Returns the previous check, so tests and callers can restore it.
    """
    global _default_juminhyo_check
    previous = _default_juminhyo_check
    _default_juminhyo_check = check
    return previous


def is_valid_juminhyo_code(s: object, check: JuminhyoCheck | None = None) -> bool:
    """11 ASCII digits, and `check(s)` (or the registered default check) passes."""
    if not isinstance(s, str) or not _is_ascii_digits(s, 11):
        return False
    effective = check if check is not None else _default_juminhyo_check
    return effective is None or bool(effective(s))


# --- the local governments named in domain.md ----------------------------------------

YAMAGUCHI_MUNICIPALITIES: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "352012": "下関市",
        "352021": "宇部市",
        "352039": "山口市",
        "352047": "萩市",
        "352063": "防府市",
        "352071": "下松市",
        "352080": "岩国市",
        "352101": "光市",
        "352110": "長門市",
        "352128": "柳井市",
        "352136": "美祢市",
        "352152": "周南市",
        "352161": "山陽小野田市",
        "353051": "周防大島町",
        "353213": "和木町",
        "353418": "上関町",
        "353434": "田布施町",
        "353442": "平生町",
        "355020": "阿武町",
    }
)

LOCAL_GOVERNMENTS: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "010006": "北海道",
        "130001": "東京都",
        "131016": "千代田区",
        "350001": "山口県",
        **YAMAGUCHI_MUNICIPALITIES,
    }
)


# --- update validation ------------------------------------------------------------------

# 振り仮名 is written in katakana: the letters ァ..ヺ, plus the long-vowel mark ー, the
# middle dot ・ between the names of foreign residents, and spaces (half- or
# full-width) between surname and given name. Exactly the set the Rust core accepts
# (rust/core/src/text.rs): anything this module lets through but the core refuses
# would halt the origin at the first tier. This matches any other character.
_NOT_KANA: Final = re.compile("[^\u30a1-\u30fa\u30fc\u30fb \u3000]")
# The core's limit on any text field, in code points.
MAX_TEXT_CHARS: Final = 256
# The core refuses dates before this year as implausible.
MIN_YEAR: Final = 1800

# Cc: C0/C1 controls (NUL, newline, ESC...); Cs: lone surrogates (cannot be UTF-8
# encoded at all); Zl/Zp: line and paragraph separators, i.e. line breaks. None can
# be part of a name or an address; their presence means garbled input. U+FFFD is what
# a decoder leaves where it met bytes it could not read: the 2013 garbled-update
# incident in one character. (Cc is exactly U+0000-001F and U+007F-009F, Cs
# U+D800-DFFF, Zl U+2028, Zp U+2029: one character class finds any of them.)
_FORBIDDEN: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\ufffd]")


def _check_text(field: str, value: str) -> None:
    if len(value) > MAX_TEXT_CHARS:
        raise CodeError(field, value, f"longer than {MAX_TEXT_CHARS} characters")
    if (found := _FORBIDDEN.search(value)) is not None:
        ch = found.group()
        if ch == "\ufffd":
            raise CodeError(field, value, "contains U+FFFD (replacement character)")
        raise CodeError(field, value, f"contains control character U+{ord(ch):04X}")
    if (cf := next((ch for ch in value if unicodedata.category(ch) == "Cf"), None)) is not None:
        # Invisible format characters (U+202E, U+200B...): a name holding one looks like
        # another name; the tiers halt such an update (the core's text rules).
        raise CodeError(field, value, f"contains invisible format character U+{ord(cf):04X}")
    if not unicodedata.is_normalized("NFC", value):
        raise CodeError(field, value, "is not in Unicode NFC")


def _check_juminhyo(field: str, value: str) -> None:
    if not _is_ascii_digits(value, 11):
        raise CodeError(field, value, "住民票コード must be 11 ASCII digits")
    if not is_valid_juminhyo_code(value):
        raise CodeError(field, value, "住民票コード check failed")


def validate_update(update: Update, *, origin: str | None = None) -> None:
    """Raise `CodeError` naming the first field at fault; return None if all is well.

    Checks the content rules that a signature cannot: check digits, code formats,
    the code-change invariant, dates and the text of the record. `seq` is not
    checked: the publisher assigns it after validation. With `origin`, the update's
    municipality must be that origin, as the core requires of every update of a
    bundle (a record is always sent by the municipality holding it).
    """
    _check_juminhyo("juminhyo_code", update.juminhyo_code)
    previous = update.previous_juminhyo_code
    if update.reason is ChangeReason.JUMINHYO_CODE_CHANGE:
        if previous is None:
            raise CodeError(
                "previous_juminhyo_code", previous, "required when reason is juminhyo_code_change"
            )
        _check_juminhyo("previous_juminhyo_code", previous)
        if previous == update.juminhyo_code:
            raise CodeError("previous_juminhyo_code", previous, "same as the new juminhyo_code")
    elif previous is not None:
        raise CodeError(
            "previous_juminhyo_code",
            previous,
            f"only allowed when reason is juminhyo_code_change, not {update.reason.value}",
        )

    if not _is_ascii_digits(update.kojin_bango, 12):
        raise CodeError("kojin_bango", update.kojin_bango, "個人番号 must be 12 ASCII digits")
    if not is_valid_kojin_bango(update.kojin_bango):
        raise CodeError("kojin_bango", update.kojin_bango, "個人番号 check digit is wrong")

    if not is_valid_local_government_code(update.municipality):
        raise CodeError(
            "municipality",
            update.municipality,
            "not a valid local government code (6 digits, prefecture 01-47, check digit)",
        )
    if origin is not None and update.municipality != origin:
        raise CodeError("municipality", update.municipality, f"not the origin {origin}")

    for field, day in (("birth_date", update.birth_date), ("changed_on", update.changed_on)):
        if day.year < MIN_YEAR:
            raise CodeError(field, day, f"before {MIN_YEAR}")
    if update.birth_date > update.changed_on:
        raise CodeError(
            "birth_date", update.birth_date, f"after the change date {update.changed_on}"
        )

    texts: dict[str, str | None] = {
        "name": update.name,
        "name_kana": update.name_kana,
        "former_surname": update.former_surname,
        "alias": update.alias,
        "address": update.address,
    }
    for field, value in texts.items():
        if value is None:
            continue
        if not value.strip():
            # An absent 旧氏 or 通称 is null; an empty string would be shown as a
            # recorded-but-blank item at every tier.
            raise CodeError(field, value, "must not be empty or blank")
        _check_text(field, value)

    bad_kana = _NOT_KANA.findall(update.name_kana)
    if bad_kana:
        raise CodeError(
            "name_kana",
            update.name_kana,
            f"振り仮名 must be katakana; found {''.join(dict.fromkeys(bad_kana))!r}",
        )
