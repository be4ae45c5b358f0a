"""Reading a JSON-lines file of updates (the `jukisync gen` output, `publish` input).

A bad line must not stop the good ones behind it, and the operator must be able to
find it: each problem is reported with its 1-based line number and the field at fault,
and the line is skipped. Sequence numbers in the file are ignored (the publisher
assigns them), so a file can be re-published by another origin's publisher in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import msgspec

from jukisync.wire import codes
from jukisync.wire.messages import Update, decode_update

__all__ = ["BadLine", "FeedReport", "LineError", "feed", "parse_line", "read_updates"]

Validator = Callable[[Update], None]


@dataclass(frozen=True, slots=True)
class BadLine:
    line_no: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.error}"


@dataclass(slots=True)
class FeedReport:
    accepted: int = 0
    bad: list[BadLine] = field(default_factory=list)


class LineError(ValueError):
    """A line that is not an update; the message says why (for `FILE:LINE: reason`)."""


def parse_line(raw: bytes | str) -> Update:
    """The update of one JSON line, with `seq` 1 (the file's is not trusted); raises
    `LineError` saying what is wrong: bytes that are not UTF-8, not JSON, a field of
    the wrong type or value (named by its path, e.g. `$.sex`)."""
    try:
        return msgspec.structs.replace(decode_update(raw), seq=1)
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


def feed(
    lines: Iterable[bytes | str],
    add_many: Callable[[list[Update]], object],
    *,
    chunk: int = 1000,
    on_bad: Callable[[BadLine], None] | None = None,
    validate: Validator = codes.validate_update,
) -> FeedReport:
    """Hand the valid updates of `lines` to `add_many` in chunks; collect the bad lines."""
    report = FeedReport()
    batch: list[Update] = []
    for item in read_updates(lines, validate):
        if isinstance(item, BadLine):
            report.bad.append(item)
            if on_bad is not None:
                on_bad(item)
            continue
        batch.append(item[1])
        if len(batch) >= chunk:
            add_many(batch)
            report.accepted += len(batch)
            batch = []
    if batch:
        add_many(batch)
        report.accepted += len(batch)
    return report
