"""Signed bundles for store tests: real keys, real chains, built with the publisher's
own pure bundling code (`jukisync.bundling`), without its validation so tests can
send what a faulty municipality would."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lmdb
import msgspec

from jukisync import _core
from jukisync.publisher.bundling import ChainHead, number, seal
from jukisync.wire.messages import BundleBody, Envelope, Update, encode
from netkit import KeyRing


class Origin:
    """One municipality's side of a chain."""

    def __init__(self, ring: KeyRing, code: str) -> None:
        self.ring = ring
        self.code = code
        self.head = ChainHead()
        ring.add(code)

    def bundle(
        self,
        updates: Sequence[Update],
        *,
        supersedes: bytes | None = None,
        created_at: int | None = None,
    ) -> bytes:
        numbered = number(updates, self.head.next_seq)
        sealed = seal(
            self.code,
            self.head,
            numbered,
            created_at if created_at is not None else time.time_ns() // 1000,
            supersedes,
        )
        self.head = sealed.head
        return sign_body(self.ring, self.code, sealed.encoded)

    def raw_bundle(self, body: dict[str, object]) -> bytes:
        """A signed body that need not be a valid BundleBody at all."""
        return sign_body(self.ring, self.code, msgspec.msgpack.encode(body))


def sign_body(ring: KeyRing, signer: str, body: bytes) -> bytes:
    key_id, secret = ring.keys[signer]
    return encode(Envelope(body=body, key_id=key_id, sig=_core.sign(secret, body)))


def body_of(envelope: bytes) -> BundleBody:
    return msgspec.msgpack.decode(
        msgspec.msgpack.decode(envelope, type=Envelope).body, type=BundleBody
    )


def edit_entry(store: Path, db: bytes, key: bytes, change: Callable[[bytes], bytes]) -> None:
    """Rewrite one entry of a closed tier store behind its back (what an attacker with
    the disk, or a bit rot, would do)."""
    env = lmdb.open(str(store), max_dbs=16)
    try:
        with env.begin(write=True, db=env.open_db(db)) as txn:
            stored = txn.get(key)
            assert stored is not None, (db, key)
            txn.put(key, change(bytes(stored)))
    finally:
        env.close()


def forge_signature(store: Path, origin: str, seq: int) -> None:
    """Flip one bit of the signature of `origin`'s bundle `seq` in the change log."""

    def flip(entry: bytes) -> bytes:
        envelope = msgspec.msgpack.decode(entry[40:], type=Envelope)
        at = entry.index(envelope.sig)
        return entry[:at] + bytes([entry[at] ^ 1]) + entry[at + 1 :]

    edit_entry(store, b"changelog", origin.encode() + seq.to_bytes(8, "big"), flip)
