"""The wall clock, in one place, so tests and operators can set it.

Every wall-clock read of jukisync (audit entry times, fiscal years, purge cut-offs, key
validity stamps, bundle and update times) goes through `now_us`. `JUKISYNC_NOW` fixes
it at one instant, for tests and for replaying a past day's reports: an ISO 8601 time,
taken as Japan time when it has no offset (e.g. `2026-06-10T10:00` or
`2026-06-10T01:00:00+00:00`). Elapsed-time measurements use the monotonic clock and
are not affected.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["JST", "NOW_ENV", "ClockError", "now", "now_us", "parse_instant"]

NOW_ENV: Final = "JUKISYNC_NOW"
JST: Final = ZoneInfo("Asia/Tokyo")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ClockError(ValueError):
    """`JUKISYNC_NOW` does not hold an ISO 8601 time."""


def parse_instant(text: str) -> int:
    """µs since the epoch of an ISO 8601 time (Japan time when it has no offset)."""
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ClockError(
            f"{NOW_ENV}={text!r}: expected an ISO 8601 time such as 2026-06-10T10:00+09:00"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=JST)
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def now_us() -> int:
    """Now, in µs since the epoch: `JUKISYNC_NOW` when set, else the system clock."""
    fixed = os.environ.get(NOW_ENV)
    if fixed:
        return parse_instant(fixed)
    return time.time_ns() // 1000


def now() -> dt.datetime:
    """Now, as an aware datetime in Japan time."""
    return (_EPOCH + dt.timedelta(microseconds=now_us())).astimezone(JST)
