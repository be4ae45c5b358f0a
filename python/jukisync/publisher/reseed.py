"""Reseeding a municipality's outbox from what a centre holds (issue 12).

The outbox is the origin's chain: its head (last sequence number and body hash)
decides the next bundle's `seq` and `prev_hash`. An outbox lost with its disk, or
restored from a backup older than what the centres applied, would start the chain
again from an old head, and every centre would refuse the next bundle as a fork.

`reseed` brings the outbox's head up to the centre's: it takes the origin's envelopes
beyond the outbox's head from a centre's change log, checks each one as the origin's
own (signed by a key the root-verified registry gives the origin, valid at the
bundle's `created_at`, sequence numbers contiguous, each `prev_hash` the previous
body's hash, the last hash the centre's head), and adopts them into the outbox as
published and confirmed bundles (kept to serve resend requests). Nothing unsigned is
taken from the centre. The outbox must not hold accepted updates or unconfirmed
bundles beyond its head: those were numbered on the old head, and only the operator
can say whether they still have to be sent (re-publish them after the reseed).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from jukisync import _core
from jukisync.publisher.bundling import ChainHead
from jukisync.publisher.outbox import Change, Outbox, OutboxEntry
from jukisync.tier import retention
from jukisync.wire.messages import BundleBody, Envelope, encode

__all__ = ["ReseedError", "Reseeded", "reseed"]

_PAGE = 1000


class ReseedError(Exception):
    """The outbox cannot be reseeded from this source; nothing was changed."""


@dataclass(frozen=True)
class Reseeded:
    origin: str
    before: int  # the outbox's head seq before
    after: int  # and after
    adopted: int  # bundles taken from the centre's change log
    state: str  # "reseeded", "current" (nothing to do), "ahead" (outbox ahead)


def _check(
    raw: bytes,
    origin: str,
    registry: _core.KeyRegistry,
    expected_first: int,
    prev_hash: bytes,
) -> OutboxEntry:
    try:
        envelope = msgspec.msgpack.decode(raw, type=Envelope)
        body = msgspec.msgpack.decode(envelope.body, type=BundleBody)
    except msgspec.DecodeError as exc:
        raise ReseedError(f"seq {expected_first}: undecodable envelope: {exc}") from None
    where = f"seqs {body.first_seq}..{body.last_seq}"
    known = registry.key_for(envelope.key_id)
    if known is None or known[0] != origin:
        raise ReseedError(f"{where}: key {envelope.key_id!r} is not {origin}'s")
    if not registry.valid_at(envelope.key_id, origin, body.created_at):
        raise ReseedError(f"{where}: key {envelope.key_id!r} not valid at its created_at")
    if not _core.verify(known[1], envelope.body, envelope.sig):
        raise ReseedError(f"{where}: bad signature")
    if body.origin != origin:
        raise ReseedError(f"{where}: a bundle of {body.origin}, not of {origin}")
    if body.first_seq != expected_first or body.last_seq < body.first_seq:
        raise ReseedError(f"{where}: expected the chain to continue at seq {expected_first}")
    if body.prev_hash != prev_hash:
        raise ReseedError(f"{where}: prev_hash does not continue the chain (a fork)")
    # The origin's envelope as it sent it: the centres' attestations are theirs.
    original = encode(Envelope(body=envelope.body, key_id=envelope.key_id, sig=envelope.sig))
    return OutboxEntry(body.first_seq, body.last_seq, _core.sha256(envelope.body), original)


def reseed(outbox: Outbox, source: _core.Store, registry: _core.KeyRegistry) -> Reseeded:
    """Bring `outbox`'s chain head up to `source`'s head of the outbox's origin."""
    origin = outbox.origin
    mine = outbox.head()
    theirs = source.chain_head(origin)
    if theirs is None or theirs[0] < mine.last_seq:
        state = "ahead" if mine.last_seq else "current"
        return Reseeded(origin, mine.last_seq, mine.last_seq, 0, state)
    seq, head_hash = theirs
    if seq == mine.last_seq:
        if head_hash != mine.hash:
            raise ReseedError(
                f"the outbox and the centre hold different bundles at seq {seq}: a fork"
            )
        return Reseeded(origin, seq, seq, 0, "current")
    if outbox.open_updates() or outbox.unconfirmed_count():
        raise ReseedError(
            "the outbox holds accepted updates or unconfirmed bundles numbered after its "
            f"head (seq {mine.last_seq}); the centre is at seq {seq}. Move the outbox "
            "aside, reseed a fresh one and re-publish what the centres lack"
        )
    adopted: list[OutboxEntry] = []
    next_seq, prev = mine.last_seq + 1, mine.hash
    while next_seq <= seq:
        try:  # a range the centre pruned after a checkpoint comes from its archive
            page = retention.changes(source, origin, next_seq, _PAGE)
        except retention.BeforeRetention as exc:
            raise ReseedError(str(exc)) from None
        if not page:
            raise ReseedError(f"the centre's change log ends before seq {seq}")
        for raw in page:
            entry = _check(raw, origin, registry, next_seq, prev)
            adopted.append(entry)
            next_seq, prev = entry.last_seq + 1, entry.hash
    if next_seq - 1 != seq or prev != head_hash:
        raise ReseedError("the adopted chain does not end at the centre's head")
    # Adopted bundles are put and then marked confirmed: they were delivered long ago.
    outbox.commit(Change(put_bundles=adopted, head=ChainHead(seq, prev), next_seq=seq + 1))
    outbox.confirm([e.last_seq for e in adopted])
    return Reseeded(origin, mine.last_seq, seq, len(adopted), "reseeded")
