"""The publisher a municipal system embeds: validate, number, bundle, sign, keep.

`Publisher` is synchronous and transport-free: it turns accepted updates into signed,
chained bundles held in its durable `Outbox` until someone (the async
`jukisync.publishing.PublisherNode`, or a test) hands them to a transport and calls
`confirm`. What a bundle is comes from `jukisync.bundling`; this module adds the
validation, the signing key, the clock and the persistence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence

import msgspec

from jukisync import _core, clock, lockfile
from jukisync.publisher.bundling import (
    BundlePolicy,
    ChainHead,
    Linger,
    Numbered,
    Sealed,
    chunk,
    rechain,
    renumber,
    seal,
)
from jukisync.publisher.outbox import Change, Outbox, OutboxEntry, OutboxError
from jukisync.trust.heads import sign_head
from jukisync.wire import codes
from jukisync.wire.messages import Envelope, Head, Update, decode_body, decode_envelope, encode

__all__ = ["LOCK_FILE", "Checked", "OutboxEntry", "OutboxError", "Publisher", "PublisherError"]

Validator = Callable[[Update], None]

# The file in the outbox directory whose flock makes a publisher the only writer of
# its chain (two writers would give out the same sequence numbers: a fork).
LOCK_FILE = "publisher.lock"

# What every tier decodes an update with: anything `add` accepts must decode with it,
# or the publisher would sign a bundle no centre can read (and `outbox check` refuse).
_strict_update = msgspec.msgpack.Decoder(Update)


class Checked(msgspec.Struct, frozen=True):
    """An update `Publisher.check` accepted, and its bytes (with seq 0): what
    `add_many` takes without checking or encoding it again (it only numbers the
    bytes). Only a publisher of the same origin makes one."""

    update: Update
    origin: str
    encoded: bytes


class PublisherError(Exception):
    """An operation the publisher cannot carry out (range not retained, bad reissue...)."""


class Publisher:
    """One origin's publisher: the only writer of that origin's chain.

    `add` returns once the update is durable in the outbox with its sequence number;
    bundles are cut at `policy.max_updates` or, by `cut_due`, `policy.linger_s`
    after their first update. It holds the outbox's lock (`LOCK_FILE`) from
    construction to `close`: a second publisher on the outbox, in this process or
    another, raises `lockfile.LockHeld`.
    """

    def __init__(
        self,
        origin: str,
        signing_key: bytes,
        key_id: str,
        outbox_path: str | os.PathLike[str],
        *,
        policy: BundlePolicy | None = None,
        sync: bool = True,
        retain_confirmed: int = 10_000,
        map_size: int = 1 << 30,
        validate: Validator | None = None,
        clock_us: Callable[[], int] = clock.now_us,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not codes.is_valid_local_government_code(origin):
            raise codes.CodeError("origin", origin, "not a valid local government code")
        self.origin = origin
        self.key_id = key_id
        self.policy = policy or BundlePolicy()
        self._secret = signing_key
        # The centres' content rules, with the origin: a municipality sends only the
        # records it holds. A custom validator replaces them (tests of faulty origins).
        self._validate = validate or self._centres_rules
        self._clock_us = clock_us
        self._monotonic = monotonic
        # Before the outbox is opened: a second publisher on it must not even read a
        # state the first is about to change. Raises `lockfile.LockHeld`.
        self._lock = lockfile.hold(outbox_path, LOCK_FILE, "outbox")
        try:
            self._outbox = Outbox(
                outbox_path,
                origin,
                map_size=map_size,
                sync=sync,
                retain_confirmed=retain_confirmed,
            )
        except BaseException:
            self._lock.release()
            raise
        try:
            self._head = self._outbox.head()
            self._next_seq = self._outbox.next_seq()
            self._open = self._outbox.open_updates()  # refuses damaged bytes
        except BaseException:
            self.close()
            raise
        self._linger = Linger(self.policy)
        if self._open:
            # Updates accepted before a restart: their linger restarts now, which only
            # delays them by one linger period.
            self._linger.opened(self._monotonic())

    # --- state ---------------------------------------------------------------------
    @property
    def head(self) -> ChainHead:
        """The last sealed bundle's (last_seq, hash)."""
        return self._head

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def open_count(self) -> int:
        """Accepted updates not yet in a bundle."""
        return len(self._open)

    def unconfirmed(self, limit: int = 1000) -> list[OutboxEntry]:
        return self._outbox.unconfirmed(limit)

    def unconfirmed_count(self) -> int:
        return self._outbox.unconfirmed_count()

    # --- accepting updates -----------------------------------------------------------
    def add(self, update: Update) -> int:
        """Validate, number and durably accept one update; returns its sequence number."""
        return self.add_many([update])[0]

    def validate(self, update: Update) -> None:
        """Raise `codes.CodeError` naming the field if `add` would refuse `update`
        (see `check`)."""
        self.check(update)

    def check(self, update: Update | Checked) -> Checked:
        """`update` accepted for `add_many`, which then neither checks nor encodes it
        again (a feed checks each line as it reads it, to report bad lines, and hands
        the result on). Raises `codes.CodeError` naming the field: the wire types (an
        `Update` built in Python is not type-checked: `sex=3` or `reason="marriage"`
        must not reach the outbox, which could then not be read back), the centres'
        content rules (`codes.validate_update` with this origin, then the core's own
        verdict), and a size that fits in a bundle."""
        if isinstance(update, Checked) and update.origin == self.origin:
            return update
        return self._checked(update)

    def _centres_rules(self, update: Update, encoded: bytes | None = None) -> None:
        """What every tier checks before it applies: the content rules, then the core's
        own verdict (time bounds against this clock included), so the publisher never
        signs what a centre would halt the origin for. `encoded`: the update's bytes
        when the caller has them (any `seq`: the rules do not read it)."""
        codes.validate_update(update, origin=self.origin)
        raw = encode(update) if encoded is None else encoded
        problem = _core.validate_update(raw, self.origin, self._clock_us())
        if problem is not None:
            raise codes.CodeError(problem.split(" ", 1)[0].rstrip(":"), update, problem)

    def _checked(self, update: Update | Checked) -> Checked:
        """`update` as every tier will decode it, and its bytes, once `validate`
        passes."""
        if isinstance(update, Checked):  # another origin's check: not this one's
            update = update.update
        if not isinstance(update, Update):
            raise codes.CodeError("update", update, "not a jukisync Update")
        try:
            # `seq` is the publisher's to give (`renumber`): whatever the caller put there.
            encoded = encode(msgspec.structs.replace(update, seq=0))
            update = _strict_update.decode(encoded)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise codes.CodeError(_field_of(exc), update, str(exc)) from None
        except (TypeError, ValueError, OverflowError) as exc:  # not encodable at all
            raise codes.CodeError("update", update, f"cannot be encoded: {exc}") from None
        if self._validate == self._centres_rules:
            self._centres_rules(update, encoded)  # the bytes just made: not encoded again
        else:
            self._validate(update)
        budget = self.policy.update_budget
        if budget is not None and (size := len(encoded)) > budget:
            raise codes.CodeError(
                "update",
                update.juminhyo_code,
                f"encoded in {size:,} bytes, more than a bundle may hold ({budget:,})",
            )
        return Checked(update, self.origin, encoded)

    def add_many(
        self,
        updates: Sequence[Update | Checked],
        *,
        progress: tuple[bytes, bytes] | None = None,
    ) -> list[int]:
        """Accept several updates in one transaction, all or none.

        Every update is validated first (except those `check` returned: validated
        once, there), so an invalid one raises `codes.CodeError` (naming the field)
        before any is numbered, signed or written. `progress` (key, position bytes) is
        recorded in the same transaction, so a reader of a file knows after a crash
        which lines were accepted (`progress`).
        """
        accepted = [self.check(u).encoded for u in updates]
        if not accepted:
            if progress is not None:
                self._outbox.commit(Change(progress=progress))
            return []
        numbered = renumber(accepted, self._next_seq)
        persisted = len(self._open)  # how many of the open updates are already on disk
        pending = self._open + numbered
        next_seq = self._next_seq + len(numbered)
        change = Change(next_seq=next_seq, progress=progress)
        head = self._head
        consumed = 0
        for end in self._cuts(pending, final=False):
            entry, head = self._signed(
                seal(self.origin, head, pending[consumed:end], self._clock_us())
            )
            change.put_bundles.append(entry)
            consumed = end
        # Updates sealed in this very change never touch the `open` database.
        change.remove_open = [u.seq for u in pending[: min(consumed, persisted)]]
        change.add_open = pending[max(consumed, persisted) :]
        if change.put_bundles:
            change.head = head
        self._outbox.commit(change)
        self._head = head
        self._next_seq = next_seq
        self._open = pending[consumed:]
        if self._open:
            self._linger.opened(self._monotonic())
        else:
            self._linger.closed()
        return [u.seq for u in numbered]

    def progress(self, key: bytes) -> bytes | None:
        """The last position recorded under `key` by `add_many` (None if none)."""
        return self._outbox.progress(key)

    def _cuts(self, updates: Sequence[Numbered], *, final: bool) -> list[int]:
        return chunk([len(u.raw) for u in updates], self.policy, final=final)

    # --- cutting bundles -------------------------------------------------------------
    def due(self) -> bool:
        return self._linger.due(len(self._open), self._monotonic())

    def wait_s(self) -> float | None:
        """Seconds until the open bundle is due, or None if nothing is open."""
        return self._linger.wait_s(self._monotonic())

    def cut_due(self) -> OutboxEntry | None:
        """Seal the open bundle if its linger time is up."""
        return self.flush() if self.due() else None

    def flush(self) -> OutboxEntry | None:
        """Seal whatever is open now, regardless of linger (shutdown, tests); returns
        the last bundle sealed (more than one if the open updates exceed a bundle's
        byte limit)."""
        if not self._open:
            return None
        entries: list[OutboxEntry] = []
        head = self._head
        start = 0
        for end in self._cuts(self._open, final=True):
            entry, head = self._signed(
                seal(self.origin, head, self._open[start:end], self._clock_us())
            )
            entries.append(entry)
            start = end
        self._outbox.commit(
            Change(remove_open=[u.seq for u in self._open], put_bundles=entries, head=head)
        )
        self._head = head
        self._open = []
        self._linger.closed()
        return entries[-1]

    def _signed(self, sealed: Sealed) -> tuple[OutboxEntry, ChainHead]:
        envelope = Envelope(
            body=sealed.encoded, key_id=self.key_id, sig=_core.sign(self._secret, sealed.encoded)
        )
        entry = OutboxEntry(sealed.first_seq, sealed.last_seq, sealed.hash, encode(envelope))
        return entry, sealed.head

    # --- after the transport ---------------------------------------------------------
    def announcement(self) -> bytes | None:
        """The signed head announcement of this origin: the last bundle before the first
        unconfirmed one (what the centres can have been given), or None before any."""
        waiting = self._outbox.unconfirmed(1)
        seq = waiting[0].first_seq - 1 if waiting else self._head.last_seq
        if seq <= 0:
            return None
        entries = self._outbox.bundles_from(seq, 1)
        if not entries or entries[0].last_seq != seq:
            return None  # not retained (cannot happen with retain_confirmed >= 1)
        entry = entries[0]
        created_at = decode_body(decode_envelope(entry.envelope).body).created_at
        head = Head(
            origin=self.origin,
            seq=seq,
            hash=entry.hash,
            created_at=created_at,
            announced_at=self._clock_us(),
        )
        return sign_head(head, self.key_id, self._secret)

    def confirm(self, entries: Iterable[OutboxEntry]) -> None:
        """The transport confirmed these bundles: keep them only for `resend`."""
        self._outbox.confirm([e.last_seq for e in entries])

    def resend(self, from_seq: int, limit: int | None = None) -> list[OutboxEntry]:
        """The retained bundles from the one holding `from_seq` on, in chain order.

        Raises `PublisherError` when the start of the range is no longer retained:
        resending only the newer part would leave the requester's gap open forever,
        so the operator must know (a full resync from a peer is needed).
        """
        if from_seq > self._head.last_seq:
            return []
        oldest = self._outbox.oldest_retained()
        if oldest is None or from_seq < oldest:
            archive = self._outbox.archive_for(from_seq)
            raise PublisherError(
                f"origin {self.origin}: seq {from_seq} is no longer retained "
                f"(oldest retained: {oldest})"
                + (f"; it is in the archive {archive}" if archive else "")
            )
        return self._outbox.bundles_from(from_seq, limit)

    def reissue(self, dropped_hash: bytes, updates: Sequence[Update]) -> list[OutboxEntry]:
        """Replace a bundle an operator dropped at the centres (DESIGN.md §3).

        The new bundle takes the dropped one's place in the chain (same `prev_hash`,
        sequence numbers from its `first_seq`) and names it in `supersedes`. The
        bundles after it, which the halted centres never applied, are renumbered and
        re-chained onto it; open updates are renumbered too. Returns the new bundles,
        all unconfirmed, in chain order.
        """
        checked = [self._checked(u).encoded for u in updates]
        if not checked:
            raise PublisherError("a re-issued bundle needs at least one update")
        dropped = self._outbox.find(dropped_hash)
        if dropped is None:
            raise PublisherError(
                f"origin {self.origin}: bundle {dropped_hash.hex()} is not in the outbox"
            )
        dropped_body = decode_body(decode_envelope(dropped.envelope).body)
        before = ChainHead(dropped.first_seq - 1, dropped_body.prev_hash)
        later = self._outbox.bundles_from(dropped.last_seq + 1)
        now = self._clock_us()
        replacement = seal(
            self.origin, before, renumber(checked, dropped.first_seq), now, dropped_hash
        )
        rebuilt = [
            replacement,
            *rechain(
                replacement.head,
                [decode_body(decode_envelope(e.envelope).body) for e in later],
                now,
            ),
        ]
        entries: list[OutboxEntry] = []
        head = before
        for sealed in rebuilt:
            entry, head = self._signed(sealed)
            entries.append(entry)
        reopened = renumber([u.raw for u in self._open], head.next_seq)
        change = Change(
            remove_bundles=[dropped.last_seq, *(e.last_seq for e in later)],
            put_bundles=entries,
            remove_open=[u.seq for u in self._open],
            add_open=reopened,
            head=head,
            next_seq=head.next_seq + len(reopened),
        )
        self._outbox.commit(change)
        self._head = head
        self._open = reopened
        self._next_seq = head.next_seq + len(reopened)
        return entries

    # --- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        try:
            self._outbox.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _field_of(exc: Exception) -> str:
    """The field msgspec names in a validation error (`... - at `$.sex``), or "update"."""
    text = str(exc)
    marker = "at `$."
    if marker in text:
        return text.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0] or "update"
    return "update"
