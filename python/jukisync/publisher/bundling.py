"""Pure bundling and chaining logic of a publisher: no I/O, no keys, no clocks.

The publisher (`jukisync.publisher`) owns the durable state and the signing key; this
module only decides *what* a bundle is: which updates, which sequence numbers, which
`prev_hash`. Keeping it pure lets the outbox replay it after a crash and lets tests
check the chain rules without an LMDB environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from jukisync.wire.messages import ZERO_HASH, BundleBody, BundleBodyOfRaw, Update, encode, with_seq

__all__ = [
    "ENVELOPE_OVERHEAD",
    "BundlePolicy",
    "ChainHead",
    "Linger",
    "Numbered",
    "Sealed",
    "body_hash",
    "chunk",
    "number",
    "rechain",
    "renumber",
    "seal",
]


def body_hash(body: bytes) -> bytes:
    """SHA-256 of an encoded bundle body: what the next bundle's `prev_hash` names."""
    return hashlib.sha256(body).digest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The end of an origin's chain: last sealed sequence number and body hash."""

    last_seq: int = 0
    hash: bytes = ZERO_HASH

    @property
    def next_seq(self) -> int:
        return self.last_seq + 1


# Bytes of a signed envelope besides its updates: the body's other fields (origin,
# seqs, prev_hash, created_at, supersedes, map keys) and the envelope's (key id of at
# most 64 characters, signature, empty attestations), about 350 bytes at most.
ENVELOPE_OVERHEAD = 512
_MIN_BUNDLE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class BundlePolicy:
    """When a bundle is cut: at `max_updates`, or `linger_s` after its first update,
    and before its signed envelope would exceed `max_bytes` (None: no byte limit).

    `max_bytes` keeps bundles under the transport's message limit and the centres'
    `max_bundle_bytes`; leave room there for the attestations centres add."""

    max_updates: int = 500
    linger_s: float = 0.05
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_updates < 1:
            raise ValueError("max_updates must be at least 1")
        if self.linger_s < 0:
            raise ValueError("linger_s must not be negative")
        if self.max_bytes is not None and self.max_bytes < _MIN_BUNDLE_BYTES:
            raise ValueError(
                f"max_bytes must be at least {_MIN_BUNDLE_BYTES}, not {self.max_bytes}"
            )

    @property
    def update_budget(self) -> int | None:
        """Bytes the encoded updates of one bundle may take, or None (no limit)."""
        return None if self.max_bytes is None else self.max_bytes - ENVELOPE_OVERHEAD


def chunk(sizes: Sequence[int], policy: BundlePolicy, *, final: bool) -> list[int]:
    """Where to cut updates of the given encoded sizes into bundles: the end index of
    each bundle, in order. A bundle ends at `max_updates` or before the update that
    would take it over the byte budget. Without `final` only full bundles are cut
    (the rest stays open); with it the remainder makes a last bundle too.

    An update larger than the whole budget still gets a bundle of its own; callers
    refuse such updates before (`Publisher.validate`)."""
    budget = policy.update_budget
    ends: list[int] = []
    start = 0
    size = 0
    for i, s in enumerate(sizes):
        if i > start and (
            i - start >= policy.max_updates or (budget is not None and size + s > budget)
        ):
            ends.append(i)
            start, size = i, 0
        size += s
    if len(sizes) > start and (final or len(sizes) - start >= policy.max_updates):
        ends.append(len(sizes))
    return ends


@dataclass(frozen=True, slots=True)
class Numbered:
    """An update with its sequence number, as the exact bytes its bundle carries: it is
    encoded once (when the publisher checks it), then only renumbered (`renumber`)."""

    seq: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Sealed:
    """A bundle body ready to be signed: its chain fields, its exact bytes and their
    hash."""

    first_seq: int
    last_seq: int
    prev_hash: bytes
    encoded: bytes
    hash: bytes

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.last_seq, self.hash)


def number(updates: Iterable[Update], first_seq: int) -> list[Numbered]:
    """The updates, encoded, with contiguous sequence numbers from `first_seq`."""
    return [
        Numbered(first_seq + i, encode(msgspec.structs.replace(u, seq=first_seq + i)))
        for i, u in enumerate(updates)
    ]


def renumber(encoded: Iterable[bytes], first_seq: int) -> list[Numbered]:
    """Encoded updates (any seq) with contiguous sequence numbers from `first_seq`,
    without encoding them again."""
    return [Numbered(first_seq + i, with_seq(raw, first_seq + i)) for i, raw in enumerate(encoded)]


def seal(
    origin: str,
    head: ChainHead,
    updates: Sequence[Numbered],
    created_at: int,
    supersedes: bytes | None = None,
) -> Sealed:
    """The bundle that follows `head`: its updates must continue the sequence exactly.

    A violation is a bug in the caller, never bad input (input is numbered here or by
    `number`), so it raises instead of being quarantined downstream as a fork. The
    body carries the updates' bytes as they are (`BundleBodyOfRaw`).
    """
    if not updates:
        raise ValueError("a bundle holds at least one update")
    for offset, update in enumerate(updates):
        if update.seq != head.next_seq + offset:
            raise ValueError(
                f"update seq {update.seq} breaks the chain: expected {head.next_seq + offset}"
            )
    first, last = updates[0].seq, updates[-1].seq
    body = BundleBodyOfRaw(
        origin=origin,
        first_seq=first,
        last_seq=last,
        prev_hash=head.hash,
        created_at=created_at,
        updates=[msgspec.Raw(u.raw) for u in updates],
        supersedes=supersedes,
    )
    encoded = encode(body)
    return Sealed(first, last, head.hash, encoded, body_hash(encoded))


def rechain(head: ChainHead, bodies: Sequence[BundleBody], created_at: int) -> list[Sealed]:
    """Re-seal `bodies` (in chain order) after `head`, renumbering their updates.

    Used after an operator drop: the bundles after the dropped one were never applied
    anywhere (the origin was halted), so they are rebuilt on the re-issued bundle with
    the same updates, keeping their `supersedes` markers.
    """
    sealed: list[Sealed] = []
    for body in bodies:
        updates = number(body.updates, head.next_seq)
        bundle = seal(body.origin, head, updates, created_at, body.supersedes)
        sealed.append(bundle)
        head = bundle.head
    return sealed


class Linger:
    """Tracks the open bundle's age so the caller knows when to cut it."""

    __slots__ = ("_opened_at", "policy")

    def __init__(self, policy: BundlePolicy) -> None:
        self.policy = policy
        self._opened_at: float | None = None

    def opened(self, now: float) -> None:
        """An update joined the open bundle at monotonic time `now`."""
        if self._opened_at is None:
            self._opened_at = now

    def closed(self) -> None:
        self._opened_at = None

    def due(self, count: int, now: float) -> bool:
        """Whether an open bundle of `count` updates should be cut at time `now`."""
        if count >= self.policy.max_updates:
            return True
        if count == 0 or self._opened_at is None:
            return False
        return now - self._opened_at >= self.policy.linger_s

    def wait_s(self, now: float) -> float | None:
        """Seconds until the open bundle is due by age, or None when nothing is open."""
        if self._opened_at is None:
            return None
        return max(0.0, self._opened_at + self.policy.linger_s - now)
