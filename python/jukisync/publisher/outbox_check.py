"""What an operator sees of an outbox, and whether it is sound (`jukisync outbox`).

Reads the stored bytes without trusting them: each entry that does not decode, is
not signed by the origin's key, does not hash to its key or does not chain onto the
previous one is named, instead of the first one stopping the check (a damaged
outbox is exactly when the operator needs the whole list).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from jukisync import _core
from jukisync.publisher.bundling import body_hash
from jukisync.publisher.outbox import Outbox, OutboxEntry
from jukisync.wire import codes
from jukisync.wire.messages import BundleBody, Envelope, Update

__all__ = ["Damage", "OutboxSummary", "inspect", "verify"]

_entry = msgspec.msgpack.Decoder(OutboxEntry)
_envelope = msgspec.msgpack.Decoder(Envelope)
_body = msgspec.msgpack.Decoder(BundleBody)
_update = msgspec.msgpack.Decoder(Update)


@dataclass(frozen=True, slots=True)
class Damage:
    where: str  # "bundle 41-60", "open update 61", "head"
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass(slots=True)
class OutboxSummary:
    origin: str
    head_seq: int
    head_hash: str
    next_seq: int
    open_updates: int
    retained_bundles: int
    retained_from_seq: int | None
    retained_to_seq: int | None
    unconfirmed_bundles: int
    last_bundle: dict[str, object] | None = None
    feeds: dict[str, int] = field(default_factory=dict)


def inspect(outbox: Outbox) -> OutboxSummary:
    head = outbox.head()
    bundles = outbox.raw_bundles()
    summary = OutboxSummary(
        origin=outbox.origin,
        head_seq=head.last_seq,
        head_hash=head.hash.hex(),
        next_seq=outbox.next_seq(),
        open_updates=len(outbox.raw_open()),
        retained_bundles=len(bundles),
        retained_from_seq=None,
        retained_to_seq=None,
        unconfirmed_bundles=outbox.unconfirmed_count(),
    )
    if bundles:
        summary.retained_to_seq = bundles[-1][0]
        try:
            summary.retained_from_seq = _entry.decode(bundles[0][1]).first_seq
        except (msgspec.DecodeError, UnicodeDecodeError):
            summary.retained_from_seq = None  # `verify` names it
        last_key, raw, confirmed = bundles[-1]
        last: dict[str, object] = {"last_seq": last_key, "confirmed": confirmed}
        try:
            entry = _entry.decode(raw)
            body = _body.decode(_envelope.decode(entry.envelope).body)
            last.update(
                first_seq=entry.first_seq,
                hash=entry.hash.hex(),
                bytes=len(entry.envelope),
                updates=len(body.updates),
                created_at=body.created_at,
            )
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            last["error"] = str(exc)
        summary.last_bundle = last
    return summary


def verify(outbox: Outbox, public_key: bytes) -> list[Damage]:
    """Every problem of the outbox: retained bundles (decoding, signature by
    `public_key`, hash, sequence, chain, content rules) and open updates."""
    damage: list[Damage] = []
    prev: OutboxEntry | None = None
    for key, raw, _ in outbox.raw_bundles():
        where = f"bundle ending at seq {key}"
        try:
            entry = _entry.decode(raw)
            where = f"bundle {entry.first_seq}-{entry.last_seq}"
            envelope = _envelope.decode(entry.envelope)
            body = _body.decode(envelope.body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            damage.append(Damage(where, f"does not decode: {exc}"))
            prev = None
            continue
        problems = []
        if entry.last_seq != key:
            problems.append(f"stored under seq {key}")
        if not _core.verify(public_key, envelope.body, envelope.sig):
            problems.append(f"signature does not verify with the origin's key ({envelope.key_id})")
        if body_hash(envelope.body) != entry.hash:
            problems.append("hash does not match the body")
        if (body.origin, body.first_seq, body.last_seq) != (
            outbox.origin,
            entry.first_seq,
            entry.last_seq,
        ):
            problems.append(f"body says {body.origin} {body.first_seq}-{body.last_seq}")
        if [u.seq for u in body.updates] != list(range(body.first_seq, body.last_seq + 1)):
            problems.append("update sequence numbers are not contiguous")
        if (
            prev is not None
            and prev.last_seq + 1 == entry.first_seq
            and body.prev_hash != prev.hash
        ):
            problems.append(f"prev_hash does not name bundle {prev.first_seq}-{prev.last_seq}")
        for update in body.updates:
            try:
                codes.validate_update(update, origin=outbox.origin)
            except codes.CodeError as exc:
                problems.append(f"update seq {update.seq}: {exc}")
        damage.extend(Damage(where, p) for p in problems)
        prev = entry
    head = outbox.head()
    if prev is not None and head.last_seq == prev.last_seq and head.hash != prev.hash:
        damage.append(Damage("head", f"hash {head.hash.hex()} is not the last bundle's"))
    for seq, raw in outbox.raw_open():
        try:
            update = _update.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            damage.append(Damage(f"open update {seq}", f"does not decode: {exc}"))
            continue
        try:
            codes.validate_update(update, origin=outbox.origin)
        except codes.CodeError as exc:
            damage.append(Damage(f"open update {seq}", str(exc)))
    return damage
