"""The input format of `jukisync publish`: one JSON object per line, an `UpdateLine`.

It is the wire `Update` (the `jukisync gen` output is valid input) with what a
municipal system cannot or need not know made optional: `seq` (the publisher numbers
updates; a given one is ignored), `recorded_at` (default: when the publisher accepts
the line), and the absent items (`previous_juminhyo_code`, `former_surname`,
`alias`: null or left out). `docs/update.schema.json` is its JSON Schema
(`input_schema`, also `jukisync publish --print-schema`); `docs/input-format.md` lists
the fields, the `reason` values and an example line per reason.

A bad line must not stop the good ones behind it, and the operator must be able to
find it: each problem is reported with its 1-based line number and the field at fault,
and the line is skipped.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from jukisync import clock
from jukisync.wire import codes
from jukisync.wire.messages import ChangeReason, Sex, Update

__all__ = [
    "BadLine",
    "LineError",
    "UpdateLine",
    "input_schema",
    "parse_line",
    "read_updates",
]

Validator = Callable[[Update], None]


def _doc(description: str, **extra: Any) -> msgspec.Meta:
    return msgspec.Meta(description=description, **extra)


_Micros = Annotated[int, msgspec.Meta(ge=0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Code11 = Annotated[str, _doc("住民票コード: 11 ASCII digits", examples=["35203900017"])]


class UpdateLine(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One change to one resident's record (本人確認情報), as a municipal system hands
    it to `jukisync publish`: one JSON object per line, UTF-8, in the order the
    changes happened."""

    juminhyo_code: _Code11
    kojin_bango: Annotated[
        str, _doc("個人番号 (My Number): 12 ASCII digits, the last a check digit")
    ]
    name: Annotated[str, _doc("氏名, Unicode NFC, at most 256 characters")]
    name_kana: Annotated[
        str, _doc("振り仮名 in katakana (ァ-ヺ, ー, ・, spaces between surname and given name)")
    ]
    birth_date: Annotated[dt.date, _doc("生年月日, YYYY-MM-DD, not after changed_on")]
    sex: Annotated[Sex, _doc("性別: 1 male, 2 female")]
    address: Annotated[str, _doc("住所, the full address, Unicode NFC")]
    municipality: Annotated[
        str,
        _doc(
            "全国地方公共団体コード of the municipality holding the record: the publisher's "
            "own origin (6 digits with check digit)",
            examples=["352039"],
        ),
    ]
    reason: Annotated[ChangeReason, _doc("異動事由: what happened (see docs/input-format.md)")]
    changed_on: Annotated[dt.date, _doc("異動年月日, YYYY-MM-DD")]
    previous_juminhyo_code: Annotated[
        str | None,
        _doc("the former 住民票コード; required with reason juminhyo_code_change, else absent"),
    ] = None
    former_surname: Annotated[str | None, _doc("旧氏, if recorded; absent or null if not")] = None
    alias: Annotated[str | None, _doc("通称, if recorded; absent or null if not")] = None
    recorded_at: Annotated[
        _Micros | None,
        _doc(
            "when the municipal system recorded the change, µs since the Unix epoch; "
            "default: when the publisher accepts the line"
        ),
    ] = None
    seq: Annotated[_Count | None, _doc("ignored: the publisher numbers updates itself")] = None

    def to_update(self, now_us: int) -> Update:
        return Update(
            seq=1,
            juminhyo_code=self.juminhyo_code,
            previous_juminhyo_code=self.previous_juminhyo_code,
            kojin_bango=self.kojin_bango,
            name=self.name,
            name_kana=self.name_kana,
            former_surname=self.former_surname,
            alias=self.alias,
            birth_date=self.birth_date,
            sex=self.sex,
            address=self.address,
            municipality=self.municipality,
            reason=self.reason,
            changed_on=self.changed_on,
            recorded_at=now_us if self.recorded_at is None else self.recorded_at,
        )


_line_decoder = msgspec.json.Decoder(UpdateLine)


def input_schema() -> dict[str, Any]:
    """The JSON Schema of one input line (shipped as `docs/update.schema.json`)."""
    schema: dict[str, Any] = msgspec.json.schema(UpdateLine)
    for definition in schema["$defs"].values():  # docstrings, without their indentation
        definition["description"] = inspect.cleandoc(definition["description"])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "jukisync publish input line"
    return schema


@dataclass(frozen=True, slots=True)
class BadLine:
    line_no: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.error}"


class LineError(ValueError):
    """A line that is not an update; the message says why (for `FILE:LINE: reason`)."""


def parse_line(raw: bytes | str, now_us: Callable[[], int] = clock.now_us) -> Update:
    """The update of one JSON line (an `UpdateLine`), with `seq` 1 (the file's is not
    trusted); raises `LineError` saying what is wrong: bytes that are not UTF-8, not
    JSON, a field of the wrong type or value (named by its path, e.g. `$.sex`)."""
    try:
        line = _line_decoder.decode(raw)
    except UnicodeDecodeError as exc:
        raise LineError(_not_utf8(raw, exc)) from None
    except msgspec.ValidationError as exc:  # msgspec names the path, e.g. `$.sex`
        raise LineError(str(exc)) from None
    except msgspec.DecodeError as exc:
        if isinstance(raw, bytes):  # bad bytes outside a string: say so, not "JSON"
            try:
                raw.decode()
            except UnicodeDecodeError as bad:
                raise LineError(_not_utf8(raw, bad)) from None
        raise LineError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise LineError("not valid JSON: nested too deeply") from None
    return line.to_update(now_us() if line.recorded_at is None else 0)


def _not_utf8(raw: bytes | str, exc: UnicodeDecodeError) -> str:
    # msgspec's error counts from the start of the string value: find the byte in the
    # whole line instead, so the operator can locate it.
    if isinstance(raw, bytes):
        try:
            raw.decode()
        except UnicodeDecodeError as whole:
            exc = whole
    return f"not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at byte {exc.start + 1}"


def read_updates(
    lines: Iterable[bytes | str], validate: Validator = codes.validate_update
) -> Iterator[tuple[int, Update] | BadLine]:
    """Each non-blank line as (line number, update), or a `BadLine` saying what is wrong.

    The file's `seq` is replaced by 1 before validating: it is not the file's to set.
    """
    for line_no, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            update = parse_line(text)
            validate(update)
        except LineError as exc:
            yield BadLine(line_no, str(exc))
        except codes.CodeError as exc:
            yield BadLine(line_no, str(exc))
        else:
            yield line_no, update
