"""How far behind a tier is, and how often it may ask for help (DESIGN.md §3a).

Pure bookkeeping, no I/O, times passed in (so the rules are tested without clocks):

- `HeadBook`: the highest verified announced head per origin. Announcements only
  raise it (a late or replayed one changes nothing); one naming the same seq with
  another hash is kept aside as a conflict (a fork, or divergence) for health.
- `lag`: per origin, in sequence numbers and in seconds. The seqs are what is known to
  exist (announced, or waiting in pending) beyond the last applied seq. The seconds
  are the age of the newest change the tier is known to lack: `now - created_at` of
  the announced head when the tier is behind it, else 0. It is a lower bound of how
  stale the tier is, and needs no comparison of two tiers' clocks but the origin's
  `created_at`, which every tier already bounds by its clock.
- `RequestLimiter`: at most one request per key per interval, and a token bucket over
  all keys, so no announcement, however far ahead, makes a request storm.
"""

from __future__ import annotations

from dataclasses import dataclass

from jukisync.wire.messages import Head

__all__ = ["HeadBook", "KnownHead", "Lag", "RequestLimiter", "lag"]


@dataclass(frozen=True, slots=True)
class KnownHead:
    seq: int
    hash: bytes
    created_at: int  # µs, origin's clock
    source: str  # who signed it: the origin, or the relaying centre's id


@dataclass(frozen=True, slots=True)
class Lag:
    seqs: int
    seconds: float


class HeadBook:
    """The highest verified announced head of each origin."""

    def __init__(self) -> None:
        self._heads: dict[str, KnownHead] = {}
        self.conflicts: dict[str, tuple[KnownHead, KnownHead]] = {}

    def observe(self, head: Head) -> bool:
        """Record a verified head; True if it raised what is known of its origin."""
        source = head.relayed_by or head.origin
        new = KnownHead(head.seq, head.hash, head.created_at, source)
        old = self._heads.get(head.origin)
        if old is not None and head.seq <= old.seq:
            if head.seq == old.seq and head.hash != old.hash:
                self.conflicts[head.origin] = (old, new)
            return False
        self._heads[head.origin] = new
        return True

    def known(self, origin: str) -> KnownHead | None:
        return self._heads.get(origin)

    def origins(self) -> list[str]:
        return sorted(self._heads)


def lag(applied_seq: int, known: KnownHead | None, pending_top: int, now_us: int) -> Lag:
    """The lag of one origin: `applied_seq` is the tier's chain head (0 if none),
    `pending_top` the last seq waiting in its pending area (0 if none)."""
    announced = known.seq if known is not None else 0
    seqs = max(0, max(announced, pending_top) - applied_seq)
    seconds = 0.0
    if known is not None and known.seq > applied_seq:
        seconds = max(0, now_us - known.created_at) / 1e6
    return Lag(seqs, seconds)


class RequestLimiter:
    """Allows a request for `key` at `now` (seconds, monotonic) at most once per
    `interval_s` per key, and at most `burst` at once then `rate_per_s` a second over
    all keys. (A few lines with the clock passed in, rather than a rate-limiting
    library with its own clock and storage backends.)"""

    def __init__(self, *, interval_s: float, rate_per_s: float, burst: int) -> None:
        if interval_s < 0 or rate_per_s <= 0 or burst < 1:
            raise ValueError("interval_s >= 0, rate_per_s > 0 and burst >= 1 required")
        self.interval_s = interval_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._refilled: float | None = None
        self._last: dict[object, float] = {}

    def allow(self, key: object, now: float) -> bool:
        if self._refilled is not None and now > self._refilled:
            self._tokens = min(
                float(self.burst), self._tokens + (now - self._refilled) * self.rate_per_s
            )
        self._refilled = now if self._refilled is None else max(self._refilled, now)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        if self._tokens < 1:
            return False
        self._tokens -= 1
        self._last[key] = now
        return True

    def forget(self, key: object) -> None:
        """The key's matter is settled: its next request is not held back."""
        self._last.pop(key, None)
