"""The nation's shape (issue 14): 1,741 municipalities (synthetic codes, valid check
digits) in the 47 prefectures as origins of one national store, against the same
updates from a single origin, in the same run.

    .venv/bin/python -m pytest bench/test_bench_origins.py

Figures: `origins_apply` and `one_origin_apply` updates/s (bundles of 100 updates, 100
bundles per `apply` call: 10,000 updates per durable commit, as the core benchmark),
and the per-origin state the store keeps: `origin_state` bytes per origin of the
data file beyond the single-origin store's (chain head, change-log keys, Merkle
nodes of the origin's tree), with the heads and Merkle nodes counted.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest

from benchfixtures import report, report_rate
from benchkit import Chains, KeyRing
from jukisync import Store
from jukisync.wire.codes import kojin_bango_check_digit, local_government_check_digit
from jukisync.wire.messages import ChangeReason, Sex, Update

MUNICIPALITIES = 1_741
PREFECTURES = 47
BUNDLE = 100
PER_CALL = 100
ROUNDS_PER_ORIGIN = 2  # bundles each origin sends: 348,200 updates in all


def municipality_codes() -> list[str]:
    """1,741 distinct 6-digit codes, spread over prefectures 01-47 (37 each, the first
    two 38), with the JIS X 0402 check digit."""
    codes = []
    for i in range(MUNICIPALITIES):
        prefecture, number = i % PREFECTURES + 1, 201 + i // PREFECTURES
        first5 = f"{prefecture:02d}{number:03d}"
        codes.append(first5 + str(local_government_check_digit(first5)))
    assert len(set(codes)) == MUNICIPALITIES
    return codes


def _update(origin: str, n: int) -> Update:
    person = int(origin) * 100_000 + n
    first11 = f"{person:011d}"
    return Update(
        seq=1,
        juminhyo_code=f"{person:011d}",
        previous_juminhyo_code=None,
        kojin_bango=first11 + str(kojin_bango_check_digit(first11)),
        name="山口 太郎",
        name_kana="ヤマグチ タロウ",
        former_surname=None,
        alias=None,
        birth_date=dt.date(1990, 1, 1) + dt.timedelta(days=n % 10_000),
        sex=Sex.MALE if n % 2 else Sex.FEMALE,
        address=f"山口県山口市亀山町{n}番地",
        municipality=origin,
        reason=ChangeReason.BIRTH,
        changed_on=dt.date(2024, 4, 1),
        recorded_at=1_711_929_600_000_000 + n,  # 2024-04-01: any clock is later
    )


def _workload(origins: list[str], senders: list[str]) -> tuple[KeyRing, list[list[bytes]]]:
    """The same updates (residents of `origins`), sent by `senders` (the origins
    themselves, or one sender for all), in apply calls of PER_CALL bundles."""
    ring = KeyRing()
    for sender in set(senders):
        ring.add(sender)
    chains = Chains(ring)
    bundles = []
    for round_ in range(ROUNDS_PER_ORIGIN):
        for origin, sender in zip(origins, senders, strict=True):
            start = round_ * BUNDLE
            updates = [_update(origin, n) for n in range(start, start + BUNDLE)]
            if sender != origin:
                updates = [msgspec.structs.replace(u, municipality=sender) for u in updates]
            bundles.append(chains.sign(sender, updates))
    return ring, [bundles[i : i + PER_CALL] for i in range(0, len(bundles), PER_CALL)]


_COUNTER = itertools.count()
_SIZES: dict[bool, int] = {}  # many origins? -> data.mdb bytes after the run


@pytest.mark.parametrize("many", [True, False], ids=["1741-origins", "one-origin"])
def test_origins_apply(benchmark: Any, workdir: Path, many: bool) -> None:
    origins = municipality_codes()
    senders = origins if many else [origins[0]] * len(origins)
    ring, calls = _workload(origins, senders)
    path = workdir / f"origins-{next(_COUNTER)}"
    store = Store(str(path), role="national", registry=ring.registry(), require_attestation=False)
    results: list[Any] = []
    batches = iter(calls)

    def setup() -> tuple[tuple[list[bytes]], dict[str, Any]]:
        return (next(batches),), {}

    def apply(batch: list[bytes]) -> None:
        results.extend(store.apply(batch))

    benchmark.pedantic(apply, setup=setup, rounds=len(calls), iterations=1)
    assert {r.status for r in results} == {"applied"}, {r.reason for r in results}
    updates = sum(r.updates for r in results)
    name = "origins_apply" if many else "one_origin_apply"
    report_rate(benchmark, name, updates, "updates/s", per="total")
    assert len(store.chain_heads()) == (MUNICIPALITIES if many else 1)
    _SIZES[many] = (path / "data.mdb").stat().st_size
    if len(_SIZES) == 2:
        extra = (_SIZES[True] - _SIZES[False]) / (MUNICIPALITIES - 1)
        report("origin_state", extra, "bytes/origin (data.mdb beyond one origin's)")
