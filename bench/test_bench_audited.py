"""Audited queries under concurrency (issue 14): 32 requesters at once, each asking one
lookup after the other, the way the RPC server serves them (`QueryServer` calls
`QueryService.handle(requester, request_bytes)` in a worker thread per prefetched
request; the broker is left out so the figure is the node's, not RabbitMQ's).

- group commit (what ships): the entries of queries in flight share one durable commit;
- baseline, same run, same requests: one durable commit per query, as before the group
  commit (the same service over a store that lets one query in at a time, as LMDB's
  writer lock did when each query read, appended and committed in its own transaction).

Each answer is decoded and checked (found, its own audit id) after the timing, and the
audit chain verifies after both phases.

    JUKISYNC_BENCH_RECORDS=100000 .venv/bin/python -m pytest bench/test_bench_audited.py
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchfixtures import report
from jukisync import Store
from jukisync.query.policy import load_policy
from jukisync.query.service import ByCode, Found, QueryService, decode_response, encode
from jukisync.sim import synth

REQUESTERS = 32
PER_REQUESTER = 400
ROUNDS = 3
# The baseline commits one query at a time (~1-6 ms each, with the disk shared): fewer
# queries, so that it does not take minutes. Its rate is what it is whatever the count.
SERIAL_PER_REQUESTER = 50
SERIAL_ROUNDS = 1
REQUESTER = "yamaguchi-ryoken"  # config/policy.example.toml: may use B5-11
TASK = "B5-11"
POLICY = Path(__file__).resolve().parents[1] / "config" / "policy.example.toml"

Handle = Callable[[str, bytes], bytes]


@pytest.fixture(scope="module")
def service(filled_store: Store) -> QueryService:
    return QueryService(filled_store, load_policy(POLICY))


@pytest.fixture(scope="module")
def requests(population: synth.Population) -> list[list[bytes]]:
    """Per requester, its lookups (random residents, encoded as the RPC carries them)."""
    rng = random.Random(31)
    codes = [r.juminhyo_code for r in population.residents]
    return [
        [encode(ByCode(task=TASK, code=rng.choice(codes))) for _ in range(PER_REQUESTER)]
        for _ in range(REQUESTERS)
    ]


def _run(handle: Handle, requests: list[list[bytes]]) -> tuple[float, list[int], list[bytes]]:
    """All requesters started together; (seconds until the last answered, each
    query's latency in ns, every answer)."""
    start = threading.Barrier(len(requests) + 1)
    latencies: list[list[int]] = [[] for _ in requests]
    answers: list[list[bytes]] = [[] for _ in requests]

    def requester(k: int) -> None:
        start.wait()
        clock, mine, got = time.perf_counter_ns, latencies[k], answers[k]
        for request in requests[k]:
            t = clock()
            got.append(handle(REQUESTER, request))
            mine.append(clock() - t)

    threads = [threading.Thread(target=requester, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return elapsed, [x for xs in latencies for x in xs], [a for xs in answers for a in xs]


def _measure(
    benchmark: Any, name: str, handle: Handle, requests: list[list[bytes]], rounds: int
) -> float:
    """Runs the rounds, checks the answers, reports; returns the seconds measured."""
    seconds = 0.0
    latencies: list[int] = []
    answers: list[bytes] = []

    def run() -> None:
        nonlocal seconds
        elapsed, lat, got = _run(handle, requests)
        seconds += elapsed
        latencies.extend(lat)
        answers.extend(got)

    benchmark.pedantic(run, rounds=rounds, iterations=1)
    decoded = [decode_response(a) for a in answers]
    assert all(isinstance(d, Found) and d.records for d in decoded), decoded[:3]
    ids = {d.audit_id for d in decoded}
    assert len(ids) == len(decoded), "every answer has its own audit entry"
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    report(name, len(latencies) / seconds, f"audited lookups/s ({REQUESTERS} requesters)")
    report(f"{name}_p50_us", q[49] / 1000, "µs (p50)")
    report(f"{name}_p99_us", q[98] / 1000, "µs (p99)")
    return seconds


class _OneCommitEach:
    """The store as before the group commit: one audited query in the store at a time
    (then its read, append and durable commit held LMDB's one writer lock), so every
    entry has a durable commit of its own; the service's Python work stays concurrent."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._alone = threading.Lock()

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        with self._alone:
            return self._store.lookup(*args, **kwargs)

    def lookup_answer(self, *args: Any, **kwargs: Any) -> Any:
        with self._alone:
            return self._store.lookup_answer(*args, **kwargs)

    def audit_log(self, *args: Any, **kwargs: Any) -> Any:
        with self._alone:
            return self._store.audit_log(*args, **kwargs)


def test_audited_one_commit_each(
    benchmark: Any, service: QueryService, filled_store: Store, requests: list[list[bytes]]
) -> None:
    """Baseline: the same service and requests, each entry committed alone."""
    alone = QueryService(_OneCommitEach(filled_store), service.policy)  # type: ignore[arg-type]
    fewer = [r[:SERIAL_PER_REQUESTER] for r in requests]
    commits, entries = filled_store.audit_commit_counts()
    _measure(benchmark, "audited_serial", alone.handle, fewer, SERIAL_ROUNDS)
    done = filled_store.audit_commit_counts()
    assert done[0] - commits == done[1] - entries, "one commit per entry"


def test_audited_group_commit(
    benchmark: Any, service: QueryService, filled_store: Store, requests: list[list[bytes]]
) -> None:
    commits, entries = filled_store.audit_commit_counts()
    busy = filled_store.audit_commit_busy_us()
    seconds = _measure(benchmark, "audited_group", service.handle, requests, ROUNDS)
    busy = filled_store.audit_commit_busy_us() - busy
    commits, entries = (
        a - b for a, b in zip(filled_store.audit_commit_counts(), (commits, entries), strict=True)
    )
    report("audited_group_per_commit", entries / max(commits, 1), "entries per durable commit")
    # Per commit, the leader's write + durable commit; and the share of the wall time a
    # commit was in flight (near 100 %: the chain of commits is what bounds the rate).
    report("audited_group_commit_us", busy / max(commits, 1), "µs per group commit (mean)")
    report("audited_group_commit_busy", 100 * busy / 1e6 / seconds, "% of the time committing")
    verification = filled_store.audit_verify()
    assert verification.ok, verification.problems[:3]
