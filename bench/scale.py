"""Scale benchmark (issue 14): fill a store with N synthetic records without holding
them, then measure at that size what grows with it, each beside a baseline of the same
run where one does the same work:

- the fill itself: updates/s of the whole pipeline and of `Store.apply` alone;
- `Store.apply` of changes to existing residents, 10 × 1,000-update bundles a call (as
  `test_bench_core.py`), vs `lmdb` putmulti of the same record bytes into the same
  store's `records` database (after the store is closed);
- `Store.get` single lookups (p50/p99), vs an `lmdb` read transaction + get + msgspec;
- `get_many` and `get_many_field` of 100,000 random codes, vs an `lmdb` get + msgspec
  loop over the same store file;
- bytes per record of data.mdb (after the fill, and after the changes);
- peak RSS of the applying process and of the generating one.

    .venv/bin/python bench/scale.py --records 1000000,10000000 [--json] [--workdir DIR]

How it streams: a child process generates the residents one at a time
(`synth.stream_population`), turns each chunk into creation updates
(`synth.initial_load`), seals and signs them into 1,000-update bundles per origin and
sends them, 50 a batch, to this process, which applies each batch in one
`Store.apply` call while the next is generated (2 cores: generation is the slower
side). The child keeps only every k-th resident (200,000 of them: the generator's draws
are independent, so that is a uniform sample) for the changes, every j-th code (1 M) for
the reads, and the codes issued as 8-byte integers, so that the change stream's new
codes (births, move-ins) cannot land on a resident it did not sample.

Sizes are run one after the other, each into its own store under `--workdir` (default:
a directory made in the current one), deleted after it is measured.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from array import array
from collections import defaultdict
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import lmdb
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchkit, run as a script

from benchkit import Chains, KeyRing, update_record_bytes
from jukisync import Store, clock
from jukisync.sim import synth
from jukisync.sim.benchenv import Environment
from jukisync.wire.codes import kojin_bango_check_digit
from jukisync.wire.messages import BundleBody, Envelope, StoredRecord, Update

SEED = 7  # the population's, as the pytest benchmarks
CHANGE_SEED = 11
CHUNK = 10_000  # residents turned into creation updates at a time
BUNDLE = 1000  # updates a bundle
FILL_CALL = 50  # bundles a Store.apply call while filling (as the filled_store fixture)
CHANGE_SAMPLE = 200_000  # residents kept for the change stream
READ_SAMPLE = 1_000_000  # codes kept for the reads
APPLY_ROUNDS = 10
BUNDLES_PER_ROUND = 10
READ_ROUNDS = 5  # get_many / get_many_field / baseline loop calls, each timed
SINGLE_LOOKUPS = 20_000  # Store.get calls, each timed
PROGRESS_EVERY = 1_000_000  # records between progress lines on stderr
EST_BYTES_PER_RECORD = 2_000  # for the disk check: 1,745 measured at 1 M


def _log(message: str) -> None:
    load = os.getloadavg()[0]
    print(f"[scale {time.strftime('%H:%M:%S')} load {load:.1f}] {message}", file=sys.stderr)


def _peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


# --- the generating side (a child process) --------------------------------------------------


def _produce(records: int, changes: int, ring: KeyRing, out: Queue[Any]) -> None:
    try:
        _produce_into(records, changes, ring, out)
    except BaseException as e:  # the parent waits on the queue: tell it
        out.put(("error", f"{type(e).__name__}: {e}"))
        raise


def _produce_into(records: int, changes: int, ring: KeyRing, out: Queue[Any]) -> None:
    chains = Chains(ring)
    change_step = max(1, records // CHANGE_SAMPLE)
    read_step = max(1, records // READ_SAMPLE)
    sample: list[synth.Resident] = []
    read_codes: list[str] = []
    issued_codes = array("q")  # every 住民票コード and 個人番号 issued, as integers
    issued_numbers = array("q")
    waiting: dict[str, list[Update]] = defaultdict(list)  # per origin, < BUNDLE
    batch: list[bytes] = []
    batch_updates = 0

    def send(origin: str, updates: list[Update]) -> None:
        nonlocal batch, batch_updates
        batch.append(chains.sign(origin, updates))
        batch_updates += len(updates)
        if len(batch) == FILL_CALL:
            out.put(("fill", batch, batch_updates))
            batch, batch_updates = [], 0

    stream = synth.stream_population(records, SEED)
    index = 0
    while chunk := list(itertools.islice(stream, CHUNK)):
        for r in chunk:
            if index % change_step == 0:
                sample.append(r)
            if index % read_step == 0:
                read_codes.append(r.juminhyo_code)
            issued_codes.append(int(r.juminhyo_code))
            issued_numbers.append(int(r.kojin_bango))
            index += 1
        population = _population(tuple(chunk))
        for origin, update in synth.initial_load(population):
            updates = waiting[origin]
            updates.append(update)
            if len(updates) == BUNDLE:
                send(origin, updates)
                waiting[origin] = []
    for origin, updates in waiting.items():
        if updates:
            send(origin, updates)
    if batch:
        out.put(("fill", batch, batch_updates))

    started = time.perf_counter()
    sampled = _population(tuple(sample))
    span = synth.span_until(sampled.as_of, clock.now().date())
    stream_changes = list(synth.generate_changes(sampled, changes, CHANGE_SEED, max_span_days=span))
    del sampled
    codes = array("q", sorted(issued_codes))
    del issued_codes
    numbers = array("q", sorted(issued_numbers))
    del issued_numbers
    stream_changes, moved = _unclash(stream_changes, sample, codes, numbers, records)
    bundles = list(chains.bundles(stream_changes, size=BUNDLE))
    rounds = [bundles[i : i + BUNDLES_PER_ROUND] for i in range(0, len(bundles), BUNDLES_PER_ROUND)]
    info = {
        "sample_residents": min(records, len(range(0, records, change_step))),
        "change_codes_moved": moved,
        "change_generation_s": round(time.perf_counter() - started, 1),
        "generator_peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    out.put(("changes", rounds[:APPLY_ROUNDS], read_codes, info))


def _population(residents: tuple[synth.Resident, ...]) -> synth.Population:
    return synth.Population(
        residents,
        synth.DEFAULT_AS_OF,
        synth.MUNICIPALITIES,
        synth.placeholder_juminhyo_check_digit,
        SEED,
    )


def _issued(sorted_codes: array[int], code: str) -> bool:
    value = int(code)
    i = bisect.bisect_left(sorted_codes, value)
    return i < len(sorted_codes) and sorted_codes[i] == value


def _unclash(
    stream: list[tuple[str, Update]],
    sample: list[synth.Resident],
    codes: array[int],
    numbers: array[int],
    records: int,
) -> tuple[list[tuple[str, Update]], int]:
    """The change stream with every code it issued that the fill had already issued to
    a resident it did not sample (it knows only the sample's) replaced by a fresh one,
    the same replacement wherever the code occurs; and how many were replaced."""
    rng = random.Random(f"jukisync.scale.unclash:{records}")
    own_codes = {r.juminhyo_code for r in sample}
    own_numbers = {r.kojin_bango for r in sample}
    taken_codes = own_codes | {u.juminhyo_code for _, u in stream}
    taken_numbers = own_numbers | {u.kojin_bango for _, u in stream}
    moved_codes: dict[str, str] = {}
    moved_numbers: dict[str, str] = {}

    def fresh(width: int, check: Any, issued: array[int], taken: set[str]) -> str:
        while True:
            first = f"{rng.randrange(10**width):0{width}d}"
            code = first + str(check(first))
            if code not in taken and not _issued(issued, code):
                taken.add(code)
                return code

    def code(value: str) -> str:
        # The stream's subjects are sampled residents, whose codes it knows and never
        # re-issues, or residents it created: one of those the fill also issued clashes.
        if value in own_codes:
            return value
        if value not in moved_codes:
            clash = _issued(codes, value)
            moved_codes[value] = (
                fresh(10, synth.placeholder_juminhyo_check_digit, codes, taken_codes)
                if clash
                else value
            )
        return moved_codes[value]

    def number(value: str) -> str:
        if value in own_numbers:
            return value
        if value not in moved_numbers:
            clash = _issued(numbers, value)
            moved_numbers[value] = (
                fresh(11, kojin_bango_check_digit, numbers, taken_numbers) if clash else value
            )
        return moved_numbers[value]

    out = []
    for origin, u in stream:
        previous = u.previous_juminhyo_code
        replaced = msgspec.structs.replace(
            u,
            juminhyo_code=code(u.juminhyo_code),
            previous_juminhyo_code=code(previous) if previous is not None else None,
            kojin_bango=number(u.kojin_bango),
        )
        out.append((origin, replaced if replaced != u else u))
    moved = sum(k != v for k, v in moved_codes.items())
    moved += sum(k != v for k, v in moved_numbers.items())
    return out, moved


# --- the applying and measuring side (this process) -----------------------------------------


def _map_size(records: int) -> int:
    return 1 << max(34, (records * 4096).bit_length())


def measure(records: int, workdir: Path, changes: int, lookups: int) -> dict[str, Any]:
    environment = Environment.capture()
    path = workdir / f"store-{records}"
    need = records * EST_BYTES_PER_RECORD
    free = shutil.disk_usage(workdir).free
    if free < need * 1.2:
        raise SystemExit(f"{workdir}: {free / 1e9:.0f} GB free, ~{need / 1e9:.0f} GB needed")
    ring = KeyRing()
    for municipality in synth.MUNICIPALITIES:
        ring.add(municipality.code)
    ring.add("centre-bench")
    context = mp.get_context("fork")  # the child inherits the ring; no store open yet
    batches: Queue[Any] = context.Queue(maxsize=4)
    producer = context.Process(target=_produce, args=(records, changes, ring, batches), daemon=True)
    producer.start()
    key_id, secret = ring.keys["centre-bench"]
    store = Store(
        str(path),
        role="aggregator",
        registry=ring.registry(),
        centre_id="centre-bench",
        centre_key=secret,
        centre_key_id=key_id,
        map_size=_map_size(records),
    )
    result: dict[str, Any] = {"records": records, "store": str(path)}
    try:
        rounds, read_codes, info = _fill(store, batches, producer, records, result)
        result.update(info)
        result["data_mdb_bytes_after_fill"] = (path / "data.mdb").stat().st_size
        _apply_changes(store, rounds, result)
        result["data_mdb_bytes"] = (path / "data.mdb").stat().st_size
        result["bytes_per_record_after_fill"] = round(result["data_mdb_bytes_after_fill"] / records)
        result["bytes_per_record"] = round(result["data_mdb_bytes"] / records)
        codes = random.Random(5).sample(read_codes, min(lookups, len(read_codes)))
        result["lookups"] = len(codes)
        _reads(store, codes, result)
        del store
        gc.collect()  # closes the environment before the lmdb package opens it
        _baselines(path, codes, rounds, result)
    finally:
        producer.join(timeout=60)
        if producer.is_alive():
            producer.kill()
        shutil.rmtree(path, ignore_errors=True)
    environment.finish()
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    result["environment"] = environment.to_json()
    result["warnings"] = environment.warnings()
    return result


def _fill(
    store: Store, batches: Queue[Any], producer: Any, records: int, result: dict[str, Any]
) -> tuple[list[list[bytes]], list[str], dict[str, Any]]:
    started = time.perf_counter()
    applying = 0.0
    applied = 0
    last_applied = started
    next_report = PROGRESS_EVERY
    while True:
        try:
            message = batches.get(timeout=30)
        except queue.Empty:
            if not producer.is_alive():
                raise RuntimeError(f"the generating process died ({producer.exitcode})") from None
            continue
        if message[0] == "error":
            raise RuntimeError(f"the generating process failed: {message[1]}")
        if message[0] == "changes":
            _, rounds, read_codes, info = message
            break
        _, envelopes, updates = message
        t = time.perf_counter()
        results = store.apply(envelopes)
        applying += time.perf_counter() - t
        bad = [r for r in results if r.status != "applied"]
        if bad:
            raise RuntimeError(f"fill: {len(bad)} bundles not applied: {bad[0].reason}")
        # Forwarding is not measured: empty the outbox so that it does not grow.
        store.forward_done([i for i, _, _ in store.forward_batch(limit=1 << 30)])
        applied += updates
        last_applied = time.perf_counter()
        if applied >= next_report:
            elapsed = time.perf_counter() - started
            _log(f"{records:,}: {applied:,} applied, {applied / elapsed:,.0f} updates/s")
            next_report += PROGRESS_EVERY
    # Until the last fill batch was applied (not the change stream's generation after).
    wall = last_applied - started
    stored = store.stats()["records"]
    if stored != records:
        raise RuntimeError(f"fill: {stored:,} records in the store, {records:,} generated")
    result["fill"] = {
        "updates": applied,
        "wall_s": round(wall, 1),
        "updates_per_s": round(applied / wall),
        "apply_s": round(applying, 1),
        "apply_updates_per_s": round(applied / applying),
        "load": round(os.getloadavg()[0], 2),
    }
    _log(f"{records:,}: filled in {wall:,.0f} s ({applied / wall:,.0f} updates/s)")
    return rounds, read_codes, info


def _count(envelopes: list[bytes]) -> int:
    n = 0
    for envelope in envelopes:
        body = msgspec.msgpack.decode(envelope, type=Envelope).body
        n += len(msgspec.msgpack.decode(body, type=BundleBody).updates)
    return n


def _apply_changes(store: Store, rounds: list[list[bytes]], result: dict[str, Any]) -> None:
    took = 0.0
    statuses: list[str] = []
    for round_ in rounds:
        t = time.perf_counter()
        statuses.extend(r.status for r in store.apply(round_))
        took += time.perf_counter() - t
    if set(statuses) != {"applied"}:
        raise RuntimeError(f"changes: not all applied: {sorted(set(statuses))}")
    updates = sum(_count(r) for r in rounds)
    result["apply_changes"] = {
        "updates": updates,
        "calls": len(rounds),
        "s": round(took, 3),
        "updates_per_s": round(updates / took),
        "load": round(os.getloadavg()[0], 2),
    }


def _timed_rounds(call: Any) -> tuple[float, Any]:
    """Mean seconds of `READ_ROUNDS` calls, and the last call's answer."""
    times = []
    answer = None
    for _ in range(READ_ROUNDS):
        t = time.perf_counter()
        answer = call()
        times.append(time.perf_counter() - t)
    return statistics.fmean(times), answer


def _rate(n: int, seconds: float) -> dict[str, Any]:
    return {
        "per_s": round(n / seconds),
        "us_per_code": round(seconds / n * 1e6, 2),
        "load": round(os.getloadavg()[0], 2),
    }


def _percentiles(ns: list[int]) -> dict[str, Any]:
    ns = sorted(ns)
    total = sum(ns) / 1e9
    return {
        "lookups": len(ns),
        "per_s": round(len(ns) / total),
        "p50_us": round(ns[len(ns) // 2] / 1000, 2),
        "p99_us": round(ns[len(ns) * 99 // 100] / 1000, 2),
        "load": round(os.getloadavg()[0], 2),
    }


def _reads(store: Store, codes: list[str], result: dict[str, Any]) -> None:
    def get_many() -> list[str]:
        return [r.status if r is not None else "unknown" for r in store.get_many(codes)]

    seconds, statuses = _timed_rounds(get_many)
    if "unknown" in statuses:
        raise RuntimeError("get_many: a sampled code is missing")
    result["get_many"] = _rate(len(codes), seconds)
    seconds, fields = _timed_rounds(lambda: store.get_many_field(codes, "status"))
    if fields != statuses:
        raise RuntimeError("get_many_field: not the statuses get_many read")
    result["get_many_field"] = _rate(len(codes), seconds)
    get, clock_ns = store.get, time.perf_counter_ns
    took = []
    for code in codes[:SINGLE_LOOKUPS]:
        t = clock_ns()
        record = get(code)
        took.append(clock_ns() - t)
        if record is None:
            raise RuntimeError(f"get: {code} missing")
    result["get"] = _percentiles(took)


def _baselines(
    path: Path, codes: list[str], rounds: list[list[bytes]], result: dict[str, Any]
) -> None:
    """The `lmdb` package on the same store file, closed by jukisync: reads of the
    same codes, then putmulti of the change rounds' record bytes (it overwrites the
    records; the store is deleted after)."""
    env = lmdb.open(str(path), map_size=_map_size(result["records"]), max_dbs=32)
    try:
        db = env.open_db(b"records", create=False)
        decode = msgspec.msgpack.Decoder(StoredRecord).decode
        keys = [c.encode() for c in codes]

        def loop() -> list[str]:
            with env.begin(db=db) as txn:
                get = txn.get
                return [decode(v).status if (v := get(k)) is not None else "unknown" for k in keys]

        seconds, statuses = _timed_rounds(loop)
        if "unknown" in statuses:
            raise RuntimeError("lmdb loop: a sampled code is missing")
        result["lmdb_get_loop"] = _rate(len(keys), seconds)
        took = []
        begin, clock_ns = env.begin, time.perf_counter_ns
        for key in keys[:SINGLE_LOOKUPS]:
            t = clock_ns()
            with begin(db=db) as txn:  # one read transaction per lookup, as Store.get
                raw = txn.get(key)
            if raw is None:
                raise RuntimeError(f"lmdb get: {key!r} missing")
            decode(raw)
            took.append(clock_ns() - t)
        result["lmdb_get_single"] = _percentiles(took)
        prepared: list[list[tuple[bytes, bytes]]] = []
        for round_ in rounds:
            items: list[tuple[bytes, bytes]] = []
            for envelope in round_:
                body = msgspec.msgpack.decode(
                    msgspec.msgpack.decode(envelope, type=Envelope).body, type=BundleBody
                )
                items.extend(
                    (u.juminhyo_code.encode(), update_record_bytes(body.origin, u))
                    for u in body.updates
                )
            prepared.append(items)
        took_s = 0.0
        for items in prepared:
            began = time.perf_counter()
            with env.begin(write=True, db=db) as txn:
                txn.cursor().putmulti(items)
            took_s += time.perf_counter() - began
        total = sum(len(p) for p in prepared)
        result["lmdb_putmulti"] = {
            "updates": total,
            "s": round(took_s, 3),
            "updates_per_s": round(total / took_s),
            "load": round(os.getloadavg()[0], 2),
        }
    finally:
        env.close()


# --- the report ------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def describe(result: dict[str, Any]) -> str:
    r = result
    fill, changes = r["fill"], r["apply_changes"]
    env = r["environment"]
    lines = [
        f"== {r['records']:,} records ==",
        f"date {env['date']}; commit {env['commit']}; {env['cpu_model']}, {env['cores']} cores",
        f"load average before {env['load_before']}, after {env['load_after']}",
        *(f"WARNING {w}" for w in r["warnings"]),
        f"fill: {fill['updates']:,} updates in {fill['wall_s']:,} s = {fill['updates_per_s']:,}"
        f" updates/s (generation in a second process); Store.apply alone "
        f"{fill['apply_updates_per_s']:,}/s ({fill['apply_s']:,} s)  [load {fill['load']}]",
        f"apply changes, {BUNDLES_PER_ROUND} x 1,000-update bundles a call: "
        f"{changes['updates_per_s']:,} updates/s ({changes['updates']:,} in "
        f"{changes['calls']} calls)  vs lmdb putmulti {r['lmdb_putmulti']['updates_per_s']:,}/s"
        f" ({_ratio(changes['updates_per_s'], r['lmdb_putmulti']['updates_per_s'])})"
        f"  [load {changes['load']}]",
    ]
    base = r["lmdb_get_loop"]
    for name in ("get_many", "get_many_field"):
        x = r[name]
        lines.append(
            f"{name} of {r['lookups']:,} random codes: {x['per_s']:,} records/s "
            f"({x['us_per_code']} us/code) vs lmdb get + msgspec loop {base['per_s']:,}/s "
            f"({_ratio(x['per_s'], base['per_s'])})  [load {x['load']}]"
        )
    g, b = r["get"], r["lmdb_get_single"]
    lines += [
        f"Store.get, {g['lookups']:,} single lookups: {g['per_s']:,}/s, p50 {g['p50_us']} us,"
        f" p99 {g['p99_us']} us vs lmdb txn + get + msgspec {b['per_s']:,}/s, p50 "
        f"{b['p50_us']} us, p99 {b['p99_us']} us ({_ratio(g['per_s'], b['per_s'])})"
        f"  [load {g['load']}]",
        f"data.mdb: {r['bytes_per_record']:,} bytes/record with the changes "
        f"({r['data_mdb_bytes'] / 1e9:.2f} GB); {r['bytes_per_record_after_fill']:,} after the"
        f" fill",
        f"peak RSS: applying process {r['peak_rss_mb']:,.0f} MB, generating process "
        f"{r['generator_peak_rss_mb']:,.0f} MB; change stream over "
        f"{r['sample_residents']:,} sampled residents ({r['change_codes_moved']} codes moved "
        "off the fill's)",
    ]
    return "\n".join(lines)


def growth(small: dict[str, Any], large: dict[str, Any]) -> str:
    factor = large["records"] / small["records"]

    def pct(a: float, b: float) -> str:
        return f"{(b / a - 1) * 100:+.0f}%"

    s, g = small, large
    return "\n".join(
        [
            f"== growth {s['records']:,} -> {g['records']:,} records ({factor:g}x) ==",
            f"fill updates/s {pct(s['fill']['updates_per_s'], g['fill']['updates_per_s'])}; "
            "apply of changes "
            f"{pct(s['apply_changes']['updates_per_s'], g['apply_changes']['updates_per_s'])}; "
            f"get_many {pct(s['get_many']['per_s'], g['get_many']['per_s'])}; "
            f"get_many_field {pct(s['get_many_field']['per_s'], g['get_many_field']['per_s'])}; "
            f"Store.get p99 {pct(s['get']['p99_us'], g['get']['p99_us'])}; "
            f"bytes/record {pct(s['bytes_per_record'], g['bytes_per_record'])}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records",
        default="10000000",
        help="records in the store; several comma-separated sizes run one after the other",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--workdir", type=Path, help="where the stores go (not a tmpfs)")
    parser.add_argument("--changes", type=int, default=APPLY_ROUNDS * BUNDLES_PER_ROUND * BUNDLE)
    parser.add_argument("--lookups", type=int, default=100_000)
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.records.split(",")]
    base = args.workdir if args.workdir is not None else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="jukisync-scale-", dir=base))
    results = []
    try:
        for records in sizes:
            _log(f"{records:,} records into {workdir}")
            result = measure(records, workdir, args.changes, args.lookups)
            results.append(result)
            # With --json the text goes to stderr, so a long run can be followed.
            print(describe(result), file=sys.stderr if args.json else sys.stdout, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    for small, large in itertools.pairwise(results):
        print(growth(small, large), file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
