"""Signed, chained bundles for benchmarks, built with the publisher's pure bundling
code, and the record bytes the store writes (for the `lmdb` baseline)."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import msgspec

from jukisync import Record, Store, _core
from jukisync.publisher.bundling import ChainHead, number, seal
from jukisync.sim import synth
from jukisync.trust.keys import build_registry
from jukisync.wire.codes import PREFECTURES
from jukisync.wire.messages import (
    ChangeFamily,
    Envelope,
    KeyEntry,
    StoredRecord,
    Update,
    encode,
)

# Test centres attest for every prefecture: the tests choose their origins freely.
CENTRE_PREFECTURES = tuple(sorted(PREFECTURES))


class KeyRing:
    """Keys of every origin and centre in the benchmark, and the registry."""

    def __init__(self) -> None:
        self.root = _core.generate_signing_key()
        self.keys: dict[str, tuple[str, bytes]] = {}

    def add(self, owner: str) -> None:
        self.keys[owner] = (f"{owner}-k1", _core.generate_signing_key())

    def registry(self) -> _core.KeyRegistry:
        entries = [
            KeyEntry(
                owner=o,
                key_id=k,
                public_key=_core.public_key(s),
                not_before=0,
                prefectures=list(CENTRE_PREFECTURES) if _core.key_role(o) == "centre" else [],
            )
            for o, (k, s) in self.keys.items()
        ]
        signed = build_registry(entries, self.root, version=1, issued_at=0)
        return _core.KeyRegistry(signed, _core.public_key(self.root))


class Chains:
    """The chain head of every origin, so successive calls continue each chain."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.heads: dict[str, ChainHead] = defaultdict(ChainHead)

    def bundles(self, stream: Iterable[tuple[str, Update]], size: int) -> Iterator[bytes]:
        """Envelopes of `size` updates per origin (the last of each may be smaller),
        keeping each origin's order."""
        by_origin: dict[str, list[Update]] = defaultdict(list)
        for origin, update in stream:
            by_origin[origin].append(update)
        for origin, updates in by_origin.items():
            for start in range(0, len(updates), size):
                yield self.sign(origin, updates[start : start + size])

    def sign(self, origin: str, updates: list[Update]) -> bytes:
        head = self.heads[origin]
        sealed = seal(origin, head, number(updates, head.next_seq), time.time_ns() // 1000)
        self.heads[origin] = sealed.head
        key_id, secret = self.ring.keys[origin]
        sig = _core.sign(secret, sealed.encoded)
        return encode(Envelope(body=sealed.encoded, key_id=key_id, sig=sig))


_FIELDS = StoredRecord.__struct_fields__


def stored_record_bytes(record: Record) -> bytes:
    """The MessagePack bytes of a record as the store keeps it."""
    return msgspec.msgpack.encode(StoredRecord(**{f: getattr(record, f) for f in _FIELDS}))


def update_record_bytes(origin: str, u: Update) -> bytes:
    """The MessagePack bytes the store would keep for `u` applied from `origin` (what the
    `lmdb` putmulti baselines write)."""
    status = "removed" if u.reason.family is ChangeFamily.REMOVAL else "active"
    record = StoredRecord(
        juminhyo_code=u.juminhyo_code,
        status=status,
        redirect_to=None,
        kojin_bango=u.kojin_bango,
        name=u.name,
        name_kana=u.name_kana,
        former_surname=u.former_surname,
        alias=u.alias,
        birth_date=u.birth_date.isoformat(),
        sex=int(u.sex),
        address=u.address,
        municipality=u.municipality,
        reason=u.reason.value,
        changed_on=u.changed_on.isoformat(),
        recorded_at=u.recorded_at,
        origin=origin,
        seq=u.seq,
    )
    return msgspec.msgpack.encode(record)


def take(iterator: Iterator[bytes], n: int) -> list[bytes]:
    return list(itertools.islice(iterator, n))


# A receive time later than any generated one: the profiling harnesses apply with it,
# so their streams pass the time checks at any wall clock.
PROFILE_RECEIVED_AT = 2_082_758_400_000_000  # 2036-01-01


def filled_aggregator(records: int) -> tuple[Store, synth.Population, Chains]:
    """An aggregator store (in a new temporary directory) holding `records` synthetic
    residents, applied in 1,000-update bundles 50 a call, its forwards marked done: the
    starting point of the profiling harnesses (`profile_apply`, `profile_audited`)."""
    population = synth.generate_population(records, seed=7)
    ring = KeyRing()
    for municipality in population.municipalities:
        ring.add(municipality.code)
    ring.add("centre-bench")
    chains = Chains(ring)
    key_id, secret = ring.keys["centre-bench"]
    store = Store(
        f"{tempfile.mkdtemp(prefix='jukisync-profile-')}/store",
        role="aggregator",
        registry=ring.registry(),
        centre_id="centre-bench",
        centre_key=secret,
        centre_key_id=key_id,
    )
    envelopes = list(chains.bundles(synth.initial_load(population), size=1000))
    for first in range(0, len(envelopes), 50):
        store.apply(envelopes[first : first + 50], received_at=PROFILE_RECEIVED_AT)
    store.forward_done([i for i, _, _ in store.forward_batch(limit=1 << 30)])
    return store, population, chains
