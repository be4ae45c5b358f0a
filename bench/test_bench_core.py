"""Benchmarks of the Rust core (issue: Rust core and tier store), each beside its
baseline measured in the same run:

- Ed25519 batch verification vs PyNaCl (libsodium) verifying one by one;
- `Store.apply` of 1,000-update bundles into a store holding RECORDS records vs the
  `lmdb` package's putmulti of the same record bytes (no verification, no indexes);
- `Store.get_many` of 100,000 random codes, and `Store.get_many_field` of the same
  codes (one field, no `Record` objects), vs a Python loop of `lmdb` get + msgspec
  decode over the same record bytes.
"""

from __future__ import annotations

import random
from typing import Any

import lmdb
import msgspec
import nacl.signing
import pytest

from benchfixtures import report_rate
from benchkit import Chains, stored_record_bytes, update_record_bytes  # noqa: F401
from jukisync import Store, _core, clock
from jukisync.sim import synth
from jukisync.wire.messages import BundleBody, Envelope, StoredRecord, Update

SIGNATURES = 1000
MESSAGE_BYTES = 256
APPLY_ROUNDS = 10
BUNDLES_PER_ROUND = 10
LOOKUPS = 100_000


@pytest.fixture(scope="module")
def signed() -> list[tuple[bytes, bytes, bytes]]:
    rng = random.Random(3)
    out = []
    for _ in range(SIGNATURES):
        key = nacl.signing.SigningKey.generate()
        message = rng.randbytes(MESSAGE_BYTES)
        out.append((bytes(key.verify_key), message, key.sign(message).signature))
    return out


def test_verify_batch(benchmark: Any, signed: list[tuple[bytes, bytes, bytes]]) -> None:
    ok = benchmark(_core.verify_batch, signed)
    assert all(ok)
    report_rate(benchmark, "verify_batch", SIGNATURES, "signatures/s", per="mean")


def test_pynacl_verify(benchmark: Any, signed: list[tuple[bytes, bytes, bytes]]) -> None:
    keys = [(nacl.signing.VerifyKey(k), m, s) for k, m, s in signed]

    def one_by_one() -> int:
        for key, message, sig in keys:
            key.verify(message, sig)
        return len(keys)

    assert benchmark(one_by_one) == SIGNATURES
    report_rate(benchmark, "pynacl_verify", SIGNATURES, "signatures/s", per="mean")


@pytest.fixture(scope="module")
def change_rounds(population: synth.Population, chains: Chains) -> list[list[bytes]]:
    """Signed bundles of changes to the filled population, BUNDLES_PER_ROUND a round,
    in chain order."""
    wanted = APPLY_ROUNDS * BUNDLES_PER_ROUND * 1000
    # Ends before today (the tiers bound every date by their clock), whatever the
    # population's size makes the national rate of changes last.
    span = synth.span_until(population.as_of, clock.now().date())
    stream = synth.generate_changes(population, wanted, seed=11, max_span_days=span)
    bundles = list(chains.bundles(stream, size=1000))
    full = [b for b in bundles]
    return [full[i : i + BUNDLES_PER_ROUND] for i in range(0, len(full), BUNDLES_PER_ROUND)][
        :APPLY_ROUNDS
    ]


def _updates(envelope: bytes) -> tuple[str, list[Update]]:
    body = msgspec.msgpack.decode(
        msgspec.msgpack.decode(envelope, type=Envelope).body, type=BundleBody
    )
    return body.origin, body.updates


def _count(round_: list[bytes]) -> int:
    return sum(len(_updates(e)[1]) for e in round_)


def test_store_apply(benchmark: Any, filled_store: Store, change_rounds: list[list[bytes]]) -> None:
    rounds = iter(change_rounds)
    results: list[Any] = []

    def setup() -> tuple[tuple[list[bytes]], dict[str, Any]]:
        return (next(rounds),), {}

    def apply(batch: list[bytes]) -> None:
        results.extend(filled_store.apply(batch))

    benchmark.pedantic(apply, setup=setup, rounds=len(change_rounds), iterations=1)
    assert {r.status for r in results} == {"applied"}, {r.reason for r in results}
    updates = sum(_count(r) for r in change_rounds)
    report_rate(benchmark, "store_apply", updates, "updates/s", per="total")


def test_lmdb_putmulti(
    benchmark: Any, baseline_env: lmdb.Environment, change_rounds: list[list[bytes]]
) -> None:
    db = baseline_env.open_db(b"records")
    prepared = []
    for round_ in change_rounds:
        items: list[tuple[bytes, bytes]] = []
        for envelope in round_:
            origin, updates = _updates(envelope)
            items.extend(
                (u.juminhyo_code.encode(), update_record_bytes(origin, u)) for u in updates
            )
        prepared.append(items)
    rounds = iter(prepared)

    def setup() -> tuple[tuple[list[tuple[bytes, bytes]]], dict[str, Any]]:
        return (next(rounds),), {}

    def putmulti(items: list[tuple[bytes, bytes]]) -> None:
        with baseline_env.begin(write=True, db=db) as txn:
            txn.cursor().putmulti(items)

    benchmark.pedantic(putmulti, setup=setup, rounds=len(prepared), iterations=1)
    total = sum(len(p) for p in prepared)
    report_rate(benchmark, "lmdb_putmulti", total, "updates/s", per="total")


@pytest.fixture(scope="module")
def codes(population: synth.Population) -> list[str]:
    all_codes = [r.juminhyo_code for r in population.residents]
    return random.Random(5).sample(all_codes, min(LOOKUPS, len(all_codes)))


# Like with like: every side returns the same list, the `status` of each code in the
# callers' order, from the same record bytes, in one read transaction; `get_many` goes
# through a `Record` per code, `get_many_field` reads the one field in Rust (columnar),
# the baseline decodes each record with msgspec in a Python loop.


def test_get_many(benchmark: Any, filled_store: Store, codes: list[str]) -> None:
    def get_many() -> list[str]:
        return [r.status if r is not None else "unknown" for r in filled_store.get_many(codes)]

    statuses = benchmark(get_many)
    assert "unknown" not in statuses
    report_rate(benchmark, "get_many", len(codes), "records/s", per="mean")


def test_get_many_field(benchmark: Any, filled_store: Store, codes: list[str]) -> None:
    """The same status of every record, projected in Rust (no `Record` per code)."""

    def get_many_field() -> list[str | int | None]:
        return filled_store.get_many_field(codes, "status")

    statuses = benchmark(get_many_field)
    assert None not in statuses
    report_rate(benchmark, "get_many_field", len(codes), "records/s", per="mean")


def test_lmdb_get_loop(benchmark: Any, baseline_env: lmdb.Environment, codes: list[str]) -> None:
    db = baseline_env.open_db(b"records")
    decoder = msgspec.msgpack.Decoder(StoredRecord)

    def loop() -> list[str]:
        with baseline_env.begin(db=db) as txn:
            get, decode = txn.get, decoder.decode
            return [
                decode(v).status if (v := get(c.encode())) is not None else "unknown" for c in codes
            ]

    statuses = benchmark(loop)
    assert "unknown" not in statuses
    report_rate(benchmark, "lmdb_get_loop", len(codes), "records/s", per="mean")
