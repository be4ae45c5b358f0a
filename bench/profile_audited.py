"""Profile audited lookups (issue 14): where the CPU of one `QueryService.handle` goes.

Fills an aggregator store with N synthetic records, then
1. times each stage of a lookup on one thread, with the thread's CPU clock, over
   REPS lookups (the durable commit's wait is not CPU, so a stage's figure is its
   cost whatever the disk does);
2. runs 32 requesters × PER lookups through `handle` at once (the bench's load) and
   prints the wall rate, the process's user and system CPU per query (`os.times`),
   and the entries per durable commit. `perf` attaches to the printed pid during the
   pause before this phase:

    N=200000 .venv/bin/python bench/profile_audited.py
    perf record -F 999 -g -o audited.perf -p PID      # within PAUSE seconds
    perf report -i audited.perf --no-children --sort dso,sym | head -60
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchkit import filled_aggregator
from jukisync import Store
from jukisync.query import service as service_mod
from jukisync.query.policy import Kind, load_policy
from jukisync.query.service import ByCode, QueryService, decode_request, encode
from jukisync.wire.codes import is_valid_juminhyo_code

POLICY = Path(__file__).resolve().parents[1] / "config" / "policy.example.toml"
REQUESTER, TASK = "yamaguchi-ryoken", "B5-11"


def _fill(records: int) -> tuple[Store, list[str]]:
    store, population, _ = filled_aggregator(records)
    return store, [r.juminhyo_code for r in population.residents]


def _cpu_us(label: str, reps: int, step: Callable[[int], object]) -> None:
    t = time.thread_time_ns()
    for i in range(reps):
        step(i)
    print(f"  {label:<44} {(time.thread_time_ns() - t) / reps / 1000:8.2f} µs CPU")


def stages(service: QueryService, codes: list[str], reps: int) -> None:
    """Each stage of `handle` on its own (one thread; CPU time per call)."""
    rng = random.Random(5)
    asked = [rng.choice(codes) for _ in range(reps)]
    requests = [encode(ByCode(task=TASK, code=c)) for c in asked]
    store, policy = service.store, service.policy
    decoded = [decode_request(r) for r in requests]
    now = service.clock()
    print(f"stages, one thread, {reps:,} lookups each:")
    _cpu_us("decode request (msgspec)", reps, lambda i: decode_request(requests[i]))
    _cpu_us("clock + day", reps, lambda i: service_mod._day(service.clock()))
    day = service_mod._day(now)
    _cpu_us(
        "policy.decide",
        reps,
        lambda i: policy.decide(REQUESTER, TASK, Kind.CODE, None, on=day),
    )
    _cpu_us("code check", reps, lambda i: is_valid_juminhyo_code(asked[i]))
    _cpu_us("Store.get (read only, for comparison)", reps, lambda i: store.get(asked[i]))
    results = []
    _cpu_us(
        "Store.lookup (read + audit entry + commit)",
        reps,
        lambda i: results.append(
            store.lookup(asked[i], requester=REQUESTER, task=TASK, time=now, detail="")
        ),
    )
    decision = policy.decide(REQUESTER, TASK, Kind.CODE, None, on=day)
    found = []
    _cpu_us(
        "answer (to_dict, filter, Found)",
        reps,
        lambda i: found.append(service._found(Kind.CODE, results[i], decision)),
    )
    _cpu_us("encode answer (msgspec)", reps, lambda i: encode(found[i]))
    _cpu_us("handle, whole", reps, lambda i: service.handle(REQUESTER, requests[i]))
    if hasattr(store, "lookup_answer"):  # absent before issue 14's one-call lookup
        _cpu_us(
            "Store.lookup_answer (lookup + encoded answer)",
            reps,
            lambda i: store.lookup_answer(
                asked[i], requester=REQUESTER, task=TASK, fields=0x1FFF, time=now
            ),
        )
    del decoded


def concurrent(service: QueryService, codes: list[str], requesters: int, per: int) -> None:
    rng = random.Random(31)
    requests = [
        [encode(ByCode(task=TASK, code=rng.choice(codes))) for _ in range(per)]
        for _ in range(requesters)
    ]
    start = threading.Barrier(requesters + 1)

    def requester(k: int) -> None:
        start.wait()
        for r in requests[k]:
            service.handle(REQUESTER, r)

    threads = [threading.Thread(target=requester, args=(k,)) for k in range(requesters)]
    for t in threads:
        t.start()
    commits0, entries0 = service.store.audit_commit_counts()
    busy0 = _busy_us(service.store)
    t0, w0 = os.times(), time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    t1, w1 = os.times(), time.perf_counter()
    commits1, entries1 = service.store.audit_commit_counts()
    busy = _busy_us(service.store) - busy0
    commits = max(commits1 - commits0, 1)
    n = requesters * per
    print(
        f"concurrent, {requesters} requesters × {per}: {n / (w1 - w0):,.0f} lookups/s; "
        f"CPU per query user {(t1.user - t0.user) / n * 1e6:.1f} µs, "
        f"system {(t1.system - t0.system) / n * 1e6:.1f} µs; "
        f"{(entries1 - entries0) / commits:.1f} entries per commit, "
        f"{busy / commits:.0f} µs per commit (leader's write + durable commit), "
        f"committing {100 * busy / 1e6 / (w1 - w0):.0f} % of the time"
    )


def _busy_us(store: Store) -> int:
    # Absent before issue 14's measure of the leaders' time.
    return store.audit_commit_busy_us() if hasattr(store, "audit_commit_busy_us") else 0


def main() -> None:
    records = int(os.environ.get("N", "200000"))
    reps = int(os.environ.get("REPS", "2000"))
    pause = float(os.environ.get("PAUSE", "0"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    store, codes = _fill(records)
    service = QueryService(store, load_policy(POLICY))
    stages(service, codes, reps)
    print(f"pid {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(pause)
    for _ in range(rounds):
        concurrent(service, codes, 32, int(os.environ.get("PER", "400")))


if __name__ == "__main__":
    main()
