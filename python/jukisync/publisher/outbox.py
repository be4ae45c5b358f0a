"""The publisher's durable outbox: one LMDB environment owned by Python (DESIGN.md §4).

It holds, for one origin:
- the updates accepted but not yet bundled (with the sequence numbers they were given),
- every signed bundle the transport has not confirmed yet,
- the last `retain_confirmed` confirmed bundles, for `resend`,
- the chain head (last sealed seq and body hash) and the next sequence number.

Every state change is one `Change` written in one write transaction, so a crash at
any point leaves either the state before or the state after it: an update that `add`
accepted is never lost, a sequence number is never given twice.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import msgspec

from jukisync.publisher.bundling import ChainHead, Numbered
from jukisync.wire.messages import Update, encode

__all__ = ["Change", "Outbox", "OutboxEntry", "OutboxError"]

_U64 = struct.Struct(">Q")  # big-endian so LMDB's byte order is sequence order

_META_ORIGIN = b"origin"
_META_NEXT_SEQ = b"next_seq"
_META_HEAD_SEQ = b"head_seq"
_META_HEAD_HASH = b"head_hash"
_META_PROGRESS = b"progress:"
_META_ARCHIVE = b"archive:"  # + last pruned seq -> the archive holding that range


class OutboxError(Exception):
    """The outbox cannot be used as asked (wrong origin, bundle not retained...)."""


class OutboxEntry(msgspec.Struct, frozen=True):
    """A signed bundle as kept in the outbox. `envelope` is what goes on the wire."""

    first_seq: int
    last_seq: int
    hash: bytes
    envelope: bytes


@dataclass
class Change:
    """One atomic step of the outbox; `Outbox.commit` writes it in one transaction."""

    add_open: list[Numbered] = field(default_factory=list)
    remove_open: list[int] = field(default_factory=list)  # sequence numbers
    remove_bundles: list[int] = field(default_factory=list)  # last_seq keys
    put_bundles: list[OutboxEntry] = field(default_factory=list)  # put unconfirmed
    head: ChainHead | None = None
    next_seq: int | None = None
    progress: tuple[bytes, bytes] | None = None  # (key, position): how far a feed got


def _key(seq: int) -> bytes:
    return _U64.pack(seq)


def _seq(key: bytes) -> int:
    return int(_U64.unpack(key)[0])


def _required(txn: lmdb.Transaction, key: bytes, db: lmdb._Database) -> bytes:
    value = txn.get(key, db=db)
    if value is None:  # only a foreign or damaged environment lacks these
        raise OutboxError(f"outbox is damaged: {key!r} missing")
    return bytes(value)


class Outbox:
    """Durable state of one origin's publisher. Not thread-safe: one owner, one thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        origin: str,
        *,
        map_size: int = 1 << 30,
        sync: bool = True,
        retain_confirmed: int = 10_000,
    ) -> None:
        if retain_confirmed < 0:
            raise ValueError("retain_confirmed must not be negative")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.retain_confirmed = retain_confirmed
        # sync=False still survives a process crash (the OS keeps the pages); only an
        # OS crash or power loss can lose the last commits. Callers choose.
        self._env = lmdb.open(
            str(self.path), map_size=map_size, max_dbs=4, sync=sync, metasync=sync
        )
        self._meta = self._env.open_db(b"meta")
        self._open = self._env.open_db(b"open")
        self._bundles = self._env.open_db(b"bundles")
        self._unconfirmed = self._env.open_db(b"unconfirmed")
        self._entry_decoder = msgspec.msgpack.Decoder(OutboxEntry)
        self._update_decoder = msgspec.msgpack.Decoder(Update)
        self._claim(origin)
        self.origin = origin

    # --- opening -----------------------------------------------------------------
    def _claim(self, origin: str) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            stored = txn.get(_META_ORIGIN)
            if stored is None:
                txn.put(_META_ORIGIN, origin.encode())
                txn.put(_META_NEXT_SEQ, _key(1))
                txn.put(_META_HEAD_SEQ, _key(0))
                txn.put(_META_HEAD_HASH, ChainHead().hash)
            elif stored.decode() != origin:
                raise OutboxError(
                    f"outbox {self.path} belongs to origin {stored.decode()}, not {origin}"
                )

    def close(self) -> None:
        self._env.close()

    # --- state -------------------------------------------------------------------
    def head(self) -> ChainHead:
        with self._env.begin() as txn:
            seq = _seq(_required(txn, _META_HEAD_SEQ, self._meta))
            digest = _required(txn, _META_HEAD_HASH, self._meta)
        return ChainHead(seq, digest)

    def next_seq(self) -> int:
        with self._env.begin() as txn:
            return _seq(_required(txn, _META_NEXT_SEQ, self._meta))

    def progress(self, key: bytes) -> bytes | None:
        """The position last recorded under `key` by a `Change` (None if none)."""
        with self._env.begin(db=self._meta) as txn:
            value = txn.get(_META_PROGRESS + key)
            return None if value is None else bytes(value)

    def open_updates(self) -> list[Numbered]:
        """Accepted updates not yet in a bundle, in sequence order, as the bytes their
        bundle will carry. Each is decoded once here, as every tier will decode it: bytes
        damaged on disk are refused now (naming the entry), not signed into a bundle that
        would halt the origin at its centres."""
        with self._env.begin(db=self._open) as txn:
            out = [Numbered(_seq(bytes(k)), bytes(v)) for k, v in txn.cursor()]
        for update in out:
            try:
                seq = self._update_decoder.decode(update.raw).seq
            except msgspec.DecodeError as exc:  # ValidationError is one
                seq, why = None, str(exc)
            else:
                why = f"it holds seq {seq}"
            if seq != update.seq:
                raise OutboxError(
                    f"outbox {self.path} is damaged: the open update {update.seq} cannot be "
                    f"sealed ({why}); `jukisync outbox verify` names every damaged entry"
                )
        return out

    # --- writing -----------------------------------------------------------------
    def commit(self, change: Change) -> None:
        with self._env.begin(write=True) as txn:
            for update in change.add_open:
                txn.put(_key(update.seq), update.raw, db=self._open)
            for seq in change.remove_open:
                txn.delete(_key(seq), db=self._open)
            for last_seq in change.remove_bundles:
                txn.delete(_key(last_seq), db=self._bundles)
                txn.delete(_key(last_seq), db=self._unconfirmed)
            for entry in change.put_bundles:
                key = _key(entry.last_seq)
                txn.put(key, encode(entry), db=self._bundles)
                txn.put(key, b"", db=self._unconfirmed)
            if change.head is not None:
                txn.put(_META_HEAD_SEQ, _key(change.head.last_seq), db=self._meta)
                txn.put(_META_HEAD_HASH, change.head.hash, db=self._meta)
            if change.next_seq is not None:
                txn.put(_META_NEXT_SEQ, _key(change.next_seq), db=self._meta)
            if change.progress is not None:
                key, position = change.progress
                txn.put(_META_PROGRESS + key, position, db=self._meta)

    def confirm(self, last_seqs: list[int]) -> None:
        """The transport confirmed these bundles; keep only the newest confirmed ones."""
        with self._env.begin(write=True) as txn:
            for last_seq in last_seqs:
                txn.delete(_key(last_seq), db=self._unconfirmed)
            self._prune(txn)

    def _prune(self, txn: lmdb.Transaction) -> None:
        total = txn.stat(self._bundles)["entries"]
        unconfirmed = txn.stat(self._unconfirmed)["entries"]
        excess = total - unconfirmed - self.retain_confirmed
        if excess <= 0:
            return
        # Oldest first; an unconfirmed bundle is never pruned, whatever its age.
        doomed: list[bytes] = []
        for key in txn.cursor(db=self._bundles).iternext(values=False):
            if txn.get(key, db=self._unconfirmed) is None:
                doomed.append(bytes(key))
                if len(doomed) == excess:
                    break
        for key in doomed:
            txn.delete(key, db=self._bundles)

    def prune_confirmed(self, upto: int, archive: str) -> int:
        """Delete the confirmed bundles with last seq <= `upto`, oldest first, in one
        transaction, recording `archive` as where they went (`jukisync retention
        prune --outbox`). Stops at an unconfirmed bundle; never deletes the newest
        bundle (the head's: announcements sign it). Returns the bundles deleted."""
        with self._env.begin(write=True) as txn:
            newest = txn.cursor(db=self._bundles)
            last_key = bytes(newest.key()) if newest.last() else None
            doomed: list[bytes] = []
            for key in txn.cursor(db=self._bundles).iternext(values=False):
                key = bytes(key)
                if _seq(key) > upto or key == last_key:
                    break
                if txn.get(key, db=self._unconfirmed) is not None:
                    break
                doomed.append(key)
            for key in doomed:
                txn.delete(key, db=self._bundles)
            if doomed:
                txn.put(_META_ARCHIVE + doomed[-1], archive.encode(), db=self._meta)
            return len(doomed)

    def archive_for(self, seq: int) -> str | None:
        """The archive holding the pruned bundle with `seq`, if `prune_confirmed` put
        it in one (bundles dropped by `retain_confirmed` went to none)."""
        with self._env.begin(db=self._meta) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_META_ARCHIVE + _key(seq)):
                return None
            key = bytes(cursor.key())
            return bytes(cursor.value()).decode() if key.startswith(_META_ARCHIVE) else None

    # --- reading bundles ---------------------------------------------------------
    def unconfirmed(self, limit: int = 1000) -> list[OutboxEntry]:
        """Bundles waiting for the transport's confirm, oldest first."""
        with self._env.begin() as txn:
            entries: list[OutboxEntry] = []
            for key in txn.cursor(db=self._unconfirmed).iternext(values=False):
                if len(entries) >= limit:
                    break
                entries.append(self._entry_decoder.decode(_required(txn, key, self._bundles)))
            return entries

    def unconfirmed_count(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._unconfirmed)["entries"])

    def bundles_from(self, from_seq: int, limit: int | None = None) -> list[OutboxEntry]:
        """Retained bundles holding sequence numbers >= from_seq, in chain order.

        Keys are the bundles' last seq, so the first key >= from_seq is the bundle
        that contains from_seq.
        """
        entries: list[OutboxEntry] = []
        with self._env.begin(db=self._bundles) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_key(from_seq)):
                return entries
            for value in cursor.iternext(keys=False):
                if limit is not None and len(entries) >= limit:
                    break
                entries.append(self._entry_decoder.decode(value))
        return entries

    def oldest_retained(self) -> int | None:
        """First sequence number still held, or None when no bundle is retained."""
        with self._env.begin(db=self._bundles) as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return None
            return self._entry_decoder.decode(cursor.value()).first_seq

    # --- raw reading (operators' checks of a possibly damaged outbox) ---------------
    def raw_open(self) -> list[tuple[int, bytes]]:
        """(seq, stored bytes) of each open update, undecoded."""
        with self._env.begin(db=self._open) as txn:
            return [(_seq(bytes(k)), bytes(v)) for k, v in txn.cursor()]

    def raw_bundles(self) -> list[tuple[int, bytes, bool]]:
        """(last_seq key, stored bytes, confirmed) of each retained bundle, undecoded."""
        with self._env.begin() as txn:
            return [
                (_seq(bytes(k)), bytes(v), txn.get(k, db=self._unconfirmed) is None)
                for k, v in txn.cursor(db=self._bundles)
            ]

    def find(self, body_hash: bytes) -> OutboxEntry | None:
        """The retained bundle with this body hash (a linear scan: operators' path)."""
        for entry in self.bundles_from(0):
            if entry.hash == body_hash:
                return entry
        return None
