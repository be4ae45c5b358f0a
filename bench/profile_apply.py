"""Profile `Store.apply` (issue 14): fill an aggregator store with N synthetic records,
then apply ROUNDS calls of 10 × 1,000-update change bundles, timing only that phase:
wall time and the process's CPU time (user + system), so a loaded machine still
gives the CPU cost per update. Not a pytest benchmark: a harness for `perf` and
`strace`, which attach to the printed pid during the pause before the timed phase.

    N=200000 ROUNDS=10 .venv/bin/python bench/profile_apply.py
    # in another shell, within PAUSE seconds of "pid ...":
    perf record -F 499 --call-graph dwarf,16384 -o apply.perf -p PID
    perf script -i apply.perf -F comm,tid,ip,sym | .venv/bin/python bench/perf_stages.py
    strace -w -c -e trace=fdatasync,pwrite64 -p PID     # time inside the commit's I/O

The change stream is squeezed into 300 days after the population's date and applied
with a fixed receive time, so it passes the time checks at any wall clock.
"""

from __future__ import annotations

import os
import resource
import sys
import time

from benchkit import PROFILE_RECEIVED_AT, filled_aggregator
from jukisync.sim import synth

RECEIVED_AT = PROFILE_RECEIVED_AT


def main() -> None:
    records = int(os.environ.get("N", "200000"))
    rounds = int(os.environ.get("ROUNDS", "10"))
    pause = float(os.environ.get("PAUSE", "5"))
    store, population, chains = filled_aggregator(records)
    stream = synth.generate_changes(population, rounds * 10_000, seed=11, max_span_days=300)
    bundles = list(chains.bundles(stream, size=1000))
    calls = [bundles[i : i + 10] for i in range(0, len(bundles), 10)][:rounds]
    print(f"pid {os.getpid()}: store of {records:,} records in {store.path}", file=sys.stderr)
    time.sleep(pause)
    before = resource.getrusage(resource.RUSAGE_SELF)
    updates = 0
    start = time.perf_counter()
    for call in calls:
        for result in store.apply(call, received_at=RECEIVED_AT):
            assert result.status == "applied", result.reason
            updates += result.updates
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"apply: {updates:,} updates in {wall:.2f} s wall = {updates / wall:,.0f}/s; "
        f"CPU user {user:.2f} s + system {system:.2f} s = {(user + system) / updates * 1e6:.2f} "
        f"µs/update ({updates / (user + system):,.0f} updates per CPU-second); "
        f"load average {load}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
