"""The Rust tier store through its Python API: apply, reads, bad input, convergence."""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jukisync import (
    JukisyncError,
    KeyRegistry,
    MalformedError,
    QuarantineError,
    RegistryError,
    Store,
    _core,
)
from jukisync.trust.keys import build_registry
from jukisync.wire.messages import (
    ChangeReason,
    KeyEntry,
    encode,
)
from netkit import CENTRE_PREFECTURES, CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin, body_of, sign_body

CENTRE = "centre-east"


class Net:
    """Two origins and a centre with keys, and stores opened on the registry."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ring = KeyRing()
        self.a = Origin(self.ring, YAMAGUCHI_CITY)
        self.b = Origin(self.ring, CHIYODA)
        self.ring.add(CENTRE)
        self.registry = self.ring.registry()
        self.count = 0

    def store(self, role: str = "aggregator", **options: Any) -> Store:
        self.count += 1
        centre: dict[str, Any] = {}
        if role == "aggregator":
            key_id, secret = self.ring.keys[CENTRE]
            centre = {"centre_id": CENTRE, "centre_key": secret, "centre_key_id": key_id}
        return Store(
            str(self.tmp / f"store{self.count}"),
            role=role,  # type: ignore[arg-type]
            registry=self.registry,
            map_size=1 << 28,
            **centre,
            **options,
        )


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return Net(tmp_path)


def state(store: Store) -> tuple[str, dict[str, tuple[int, bytes]]]:
    return store.digest(), store.chain_heads()


def test_apply_and_read_back(net: Net) -> None:
    store = net.store()
    b1 = net.a.bundle([update(YAMAGUCHI_CITY, n) for n in range(3)])
    moved = msgspec.structs.replace(
        update(YAMAGUCHI_CITY, 1),
        reason=ChangeReason.ADDRESS_CHANGE,
        address="山口県山口市中央1-1-1",
        changed_on=dt.date(2024, 5, 1),
    )
    b2 = net.a.bundle([moved])
    results = store.apply([b1, b2])
    assert [r.status for r in results] == ["applied", "applied"]
    assert results[0].updates == 3 and results[0].first_seq == 1 and results[0].last_seq == 3
    assert store.chain_head(YAMAGUCHI_CITY) == (4, net.a.head.hash)
    code = moved.juminhyo_code
    record = store.get(code)
    assert record is not None
    assert record.address == "山口県山口市中央1-1-1" and record.status == "active"
    assert record.to_dict()["reason"] == "address_change"
    by_number = store.by_number(moved.kojin_bango)
    assert by_number is not None and by_number.juminhyo_code == code
    many = store.get_many([code, "99999999999", update(YAMAGUCHI_CITY, 0).juminhyo_code])
    assert [r.juminhyo_code if r else None for r in many] == [
        code,
        None,
        update(YAMAGUCHI_CITY, 0).juminhyo_code,
    ]
    with pytest.raises(ValueError, match="field must be one of"):
        store.get_many_field([code], "no_such_field")
    with pytest.raises(TypeError, match="not one str"):
        store.get_many(code)  # one code, not a list of them
    with pytest.raises(TypeError, match="every code must be a str"):
        store.get_many_field([code, 12345678901], "status")  # type: ignore[list-item]
    assert store.get_many_field(iter([code, code]), "status") == ["active", "active"]
    assert store.changes(YAMAGUCHI_CITY, 4) == [
        env for _, _, env in store.forward_batch() if body_of(env).first_seq == 4
    ]
    stats = store.stats()
    assert stats["records"] == 3 and stats["applied_updates"] == 4
    assert store.digest("35") == store.digest() != store.digest("13")


def test_duplicates_and_gaps(net: Net) -> None:
    store = net.store()
    bundles = [net.a.bundle([update(YAMAGUCHI_CITY, n)]) for n in range(4)]
    assert store.apply([bundles[0]])[0].status == "applied"
    gap = store.apply([bundles[2]])[0]
    assert (gap.status, gap.resend_from) == ("gap", 2)
    assert store.pending(YAMAGUCHI_CITY) == [(3, 3)]
    before = state(store)
    assert store.apply([bundles[0]])[0].status == "duplicate"
    assert state(store) == before
    filled = store.apply([bundles[1]])[0]
    assert (filled.status, filled.released) == ("applied", 1)
    assert store.chain_head(YAMAGUCHI_CITY) is not None
    assert store.chain_head(YAMAGUCHI_CITY)[0] == 3  # type: ignore[index]
    assert store.pending(YAMAGUCHI_CITY) == []


def registry_with(ring: KeyRing, owner: str, **changes: int) -> KeyRegistry:
    entries = []
    for o, (key_id, secret) in ring.keys.items():
        entry = KeyEntry(
            owner=o,
            key_id=key_id,
            public_key=_core.public_key(secret),
            not_before=0,
            prefectures=list(CENTRE_PREFECTURES) if _core.key_role(o) == "centre" else [],
        )
        if o == owner:
            entry = msgspec.structs.replace(entry, **changes)
        entries.append(entry)
    signed = build_registry(entries, ring.root, version=2, issued_at=0)
    return KeyRegistry(signed, _core.public_key(ring.root))


def forged(net: Net) -> bytes:
    body = body_of(net.a.bundle([update(YAMAGUCHI_CITY, 7)]))
    return encode(
        msgspec.structs.replace(
            msgspec.msgpack.decode(net.a.bundle([update(YAMAGUCHI_CITY, 8)]), type=_Env),
            body=encode(body),
        )
    )


class _Env(msgspec.Struct):
    body: bytes
    key_id: str
    sig: bytes
    attestations: list[object] = []


def tampered(net: Net) -> bytes:
    env = msgspec.msgpack.decode(net.a.bundle([update(YAMAGUCHI_CITY, 7)]), type=_Env)
    body = env.body.replace("山口 太郎".encode(), "山口 次郎".encode())
    return encode(msgspec.structs.replace(env, body=body))


def foreign_key(net: Net) -> bytes:
    body = encode(body_of(net.a.bundle([update(YAMAGUCHI_CITY, 7)])))
    return sign_body(net.ring, CHIYODA, body)


def unknown_key(net: Net) -> bytes:
    env = msgspec.msgpack.decode(net.a.bundle([update(YAMAGUCHI_CITY, 7)]), type=_Env)
    return encode(msgspec.structs.replace(env, key_id="stolen-k9"))


def signed_dict(net: Net, **overrides: object) -> bytes:
    body = msgspec.to_builtins(body_of(net.a.bundle([update(YAMAGUCHI_CITY, 7)])))
    body["prev_hash"] = bytes.fromhex("00" * 32)  # to_builtins made it base64
    body.update(overrides)
    return net.a.raw_bundle(body)


def bad_check_digit(net: Net) -> bytes:
    bad = msgspec.structs.replace(update(YAMAGUCHI_CITY, 7), kojin_bango="983205673210")
    return net.a.bundle([bad])


def garbled(net: Net) -> bytes:
    return net.a.bundle([update(YAMAGUCHI_CITY, 7, name="山口\ufffd太郎")])


def fork(net: Net) -> bytes:
    net.a.head = type(net.a.head)()  # start the chain again at seq 1
    return net.a.bundle([update(YAMAGUCHI_CITY, 99)])


BadInput = Callable[[Net], bytes]
# (what, builder, kind, reason fragment)
BAD_INPUTS: list[tuple[str, BadInput, str, str]] = [
    ("forged signature", forged, "security", "bad signature"),
    ("tampered body", tampered, "security", "bad signature"),
    ("key of another origin", foreign_key, "security", "belongs to"),
    ("unknown key", unknown_key, "security", "unknown key"),
    ("malformed msgpack", lambda net: b"\xc1\xffnot msgpack", "security", "envelope"),
    ("envelope of wrong types", lambda net: encode(_Bad(body=1)), "security", "envelope"),
    ("wrong types in a signed body", lambda n: signed_dict(n, first_seq="2"), "halt", "first_seq"),
    ("続柄 in a signed body", lambda n: signed_dict(n, zokugara="長男"), "halt", "zokugara"),
    ("本籍 in a signed body", lambda n: signed_dict(n, honseki="山口県"), "halt", "honseki"),
    ("invalid check digit", bad_check_digit, "halt", "kojin_bango"),
    ("garbled text", garbled, "halt", "U+FFFD"),
    ("signed fork", fork, "halt", "fork"),
]


class _Bad(msgspec.Struct):
    body: int


@pytest.mark.parametrize(
    ("builder", "kind", "fragment"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_quarantined_and_changes_nothing(
    net: Net, builder: BadInput, kind: str, fragment: str
) -> None:
    store = net.store()
    assert store.apply([net.a.bundle([update(YAMAGUCHI_CITY, 1)])])[0].status == "applied"
    head_after_first = net.a.head
    before = state(store)
    result = store.apply([builder(net)])[0]
    assert (result.status, result.kind) == ("rejected", kind), result.reason
    assert fragment in (result.reason or ""), result.reason
    assert state(store) == before
    entry = store.quarantine_entry(result.quarantine_id or 0)
    assert (entry.kind, entry.state, entry.reason) == (kind, "open", result.reason)
    # the genuine stream of the claimed origin: flows after a forgery, waits after a halt
    net.a.head = head_after_first
    nxt = store.apply([net.a.bundle([update(YAMAGUCHI_CITY, 2)])])[0]
    other = store.apply([net.b.bundle([update(CHIYODA, 1)])])[0]
    assert other.status == "applied"
    if kind == "security":
        assert nxt.status == "applied"
        assert store.halted() == {}
    else:
        assert (nxt.status, nxt.resend_from) == ("gap", None)
        assert YAMAGUCHI_CITY in store.halted()


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"not_after": 10}, "expired"),
        ({"revoked_at": 10}, "revoked"),
        ({"not_before": 1 << 62}, "not yet"),
    ],
)
def test_keys_outside_their_validity_are_refused(
    net: Net, changes: dict[str, int], word: str
) -> None:
    store = net.store()
    store.set_registry(registry_with(net.ring, YAMAGUCHI_CITY, **changes))
    result = store.apply([net.a.bundle([update(YAMAGUCHI_CITY, 1)], created_at=1_000)])[0]
    assert (result.status, result.kind) == ("rejected", "security")
    assert word in (result.reason or "")
    assert store.stats()["records"] == 0 and store.halted() == {}


def test_oversized_bundle_is_refused_without_keeping_it_whole(net: Net) -> None:
    store = net.store(max_bundle_bytes=4096)
    big = net.a.bundle([update(YAMAGUCHI_CITY, n) for n in range(40)])
    assert len(big) > 4096
    result = store.apply([big])[0]
    assert (result.status, result.kind) == ("rejected", "security")
    assert "oversized" in (result.reason or "")
    entry = store.quarantine_entry(result.quarantine_id or 0)
    assert entry.size == len(big)
    assert store.stats()["records"] == 0


def test_halt_release_and_drop_with_a_superseding_bundle(net: Net) -> None:
    store = net.store()
    store.apply([net.a.bundle([update(YAMAGUCHI_CITY, 1)])])
    good_head = net.a.head
    bad = store.apply([bad_check_digit(net)])[0]
    waiting = store.apply([net.a.bundle([update(YAMAGUCHI_CITY, 3)])])[0]
    assert waiting.status == "gap" and "halted" in (waiting.reason or "")
    with pytest.raises(QuarantineError):
        store.release(12345)
    store.drop(bad.quarantine_id or 0)
    with pytest.raises(QuarantineError, match="already dropped"):
        store.release(bad.quarantine_id or 0)
    assert "dropped" in store.halted()[YAMAGUCHI_CITY]
    # the municipality re-issues the range, naming the dropped bundle, then carries on
    net.a.head = good_head
    replacement = net.a.bundle([update(YAMAGUCHI_CITY, 2)], supersedes=bad.hash)
    after = net.a.bundle([update(YAMAGUCHI_CITY, 3)])
    results = store.apply([replacement, after])
    assert [r.status for r in results] == ["applied", "applied"]
    assert store.halted() == {}
    assert store.chain_head(YAMAGUCHI_CITY) == (3, net.a.head.hash)
    assert store.quarantine() == []
    assert [e.state for e in store.quarantine(include_closed=True)] == ["dropped"]


def test_release_accepts_the_bundle_as_it_is(net: Net) -> None:
    store = net.store()
    bad = store.apply([garbled(net)])[0]
    store.apply([net.a.bundle([update(YAMAGUCHI_CITY, 2)])])
    released = store.release(bad.quarantine_id or 0)
    assert (released.status, released.released) == ("applied", 1)
    record = store.get(update(YAMAGUCHI_CITY, 7).juminhyo_code)
    assert record is not None and "\ufffd" in record.name
    assert store.halted() == {}


def test_national_needs_a_valid_attestation(net: Net) -> None:
    aggregator, national = net.store(), net.store("national")
    bundle = net.a.bundle([update(YAMAGUCHI_CITY, 1)])
    direct = national.apply([bundle])[0]
    assert (direct.status, direct.kind) == ("rejected", "security")
    aggregator.apply([bundle])
    ((fid, origin, forwarded),) = aggregator.forward_batch()
    assert origin == YAMAGUCHI_CITY  # from the outbox, for the routing key
    assert _core.bundle_span(forwarded) == (YAMAGUCHI_CITY, 1, 1)
    assert national.apply([forwarded])[0].status == "applied"
    assert national.apply([forwarded])[0].status == "duplicate"
    aggregator.forward_done([fid])
    assert aggregator.forward_batch() == []
    assert national.digest("35") == aggregator.digest("35")


def test_errors_share_one_root() -> None:
    ring = KeyRing()
    with pytest.raises(RegistryError):
        KeyRegistry(b"\x80", _core.public_key(ring.root))
    assert issubclass(RegistryError, JukisyncError) and issubclass(MalformedError, JukisyncError)
    with pytest.raises(ValueError, match="role"):
        Store("/tmp/x", role="prefecture", registry=ring.registry())  # type: ignore[arg-type]
    with pytest.raises(JukisyncError):
        _core.sign(b"short", b"message")


def test_store_is_plain_lmdb_readable_from_another_process(net: Net) -> None:
    store = net.store()
    store.apply([net.a.bundle([update(YAMAGUCHI_CITY, n) for n in range(5)])])
    script = textwrap.dedent(
        """
        import sys, lmdb, msgspec
        from jukisync.wire.messages import StoredRecord
        env = lmdb.open(sys.argv[1], readonly=True, max_dbs=16, lock=sys.argv[2] == "lock")
        records = env.open_db(b"records", create=False)
        with env.begin(db=records) as txn:
            decoded = [msgspec.msgpack.decode(v, type=StoredRecord) for _, v in txn.cursor()]
        print(len(decoded), decoded[0].juminhyo_code, decoded[0].municipality)
        """
    )

    def read(lock: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", script, store_path, lock],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    store_path = store.path
    expected = ["5", update(YAMAGUCHI_CITY, 0).juminhyo_code, YAMAGUCHI_CITY]
    # While the store is open: heed's LMDB (mdb.master) keeps a lock file of another
    # format than the LMDB 0.9 inside the `lmdb` package, so such readers skip locking.
    assert read("nolock") == expected
    del store  # closing the environment frees the lock file for any LMDB reader
    assert read("lock") == expected


# ---- convergence: any delivery order, duplicates and replays give the same store ------


def _story(net: Net) -> list[bytes]:
    """Bundles of three origins, including a move from 山口市 to 千代田区 (転出 then 転入),
    a move within Yamaguchi to 萩市, a death, and a 住民票コード change after a move-in."""
    hagi = Origin(net.ring, HAGI)
    net.registry = net.ring.registry()
    mover = update(YAMAGUCHI_CITY, 1)
    d = dt.date(2024, 4, 1)
    out_a = msgspec.structs.replace(mover, reason=ChangeReason.MOVE_OUT, changed_on=d)
    in_b = msgspec.structs.replace(
        mover,
        reason=ChangeReason.MOVE_IN,
        municipality=CHIYODA,
        address="東京都千代田区永田町1-7-1",
        changed_on=d + dt.timedelta(days=1),
    )
    recode = msgspec.structs.replace(
        in_b,
        reason=ChangeReason.JUMINHYO_CODE_CHANGE,
        previous_juminhyo_code=mover.juminhyo_code,
        juminhyo_code="13101699999",
        changed_on=d + dt.timedelta(days=30),
    )
    to_hagi = update(YAMAGUCHI_CITY, 2)
    bundles = [
        net.a.bundle([update(YAMAGUCHI_CITY, n) for n in range(1, 4)]),
        net.b.bundle([update(CHIYODA, n) for n in range(1, 3)]),
        net.a.bundle([out_a]),
        net.b.bundle([in_b]),
        net.a.bundle(
            [msgspec.structs.replace(to_hagi, reason=ChangeReason.MOVE_OUT, changed_on=d)]
        ),
        hagi.bundle(
            [
                msgspec.structs.replace(
                    to_hagi,
                    reason=ChangeReason.MOVE_IN,
                    municipality=HAGI,
                    changed_on=d + dt.timedelta(days=2),
                )
            ]
        ),
        net.b.bundle([recode]),
        net.a.bundle([update(YAMAGUCHI_CITY, 3, reason=ChangeReason.DEATH, changed_on=d)]),
    ]
    return bundles


@functools.cache
def story() -> tuple[Net, list[bytes], tuple[str, dict[str, tuple[int, bytes]]], dict[str, str]]:
    """One set of bundles (fixed keys and bytes, as hypothesis replays need) and the
    state of a store that applied them in order."""
    net = Net(Path(tempfile.mkdtemp(prefix="jukisync-story-")))
    bundles = _story(net)
    reference = net.store()
    assert [r.status for r in reference.apply(bundles)] == ["applied"] * len(bundles)
    digests = {p: reference.digest(p) for p in ("35", "13", "352039")}
    return net, bundles, state(reference), digests


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_delivery_order_converges(data: st.DataObject) -> None:
    net, bundles, expected, digests = story()
    # deliveries: every bundle at least once, some twice, in any order, in any batches
    extra = data.draw(st.lists(st.sampled_from(bundles), max_size=6))
    order = data.draw(st.permutations(bundles + extra))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=4)))
    store = net.store()
    for start, end in zip([0, *cuts], [*cuts, len(order)], strict=True):
        for result in store.apply(order[start:end]):
            assert result.status in ("applied", "duplicate", "gap"), result.reason
    assert state(store) == expected
    assert {p: store.digest(p) for p in digests} == digests
    assert store.stats()["pending"] == 0
    moved = store.get(update(YAMAGUCHI_CITY, 1).juminhyo_code)
    assert moved is not None and (moved.status, moved.redirect_to) == ("redirect", "13101699999")
