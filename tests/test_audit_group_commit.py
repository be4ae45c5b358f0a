"""The group commit of audit entries (issue 14): concurrent queries share one durable
commit, and no answer leaves before its entry is durable.

- a process answering queries from 16 threads is killed (SIGKILL) while its commits are
  in flight: every answer it had given (printed after the call returned) has its entry
  in the store afterwards, with the query's own reference, and the chain verifies;
- concurrent requesters (generated: how many, what each asks) each get their own entry,
  all present, in one chain that verifies, in fewer commits than entries when they
  overlap.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import Store
from netkit import YAMAGUCHI_CITY
from querykit import Registry, code, person

TESTS = Path(__file__).resolve().parent
RESIDENTS = 20

# Runs in a child process: 16 threads each ask (lookups, found and not found, as records
# and as encoded answers, and logged refusals) without end and print "audit_id ref" once
# each answer is back.
CHILD = """
import sys, threading
import msgspec
sys.path.insert(0, sys.argv[1])
from jukisync import Store
from netkit import KeyRing
store = Store(sys.argv[2], registry=KeyRing().registry())
codes = sys.argv[3].split(",")
out = threading.Lock()

def ask(k):
    n = 0
    while True:
        ref = f"t{k}/{n}"
        if n % 3 == 2:
            got = store.audit_log("code", requester="crash", task="T-FULL", allowed=False,
                                  reason="refused", detail=ref)
        elif n % 3 == 1:  # the RPC path's call: answered as encoded bytes
            answer = store.lookup_answer(codes[(k + n) % len(codes)], requester="crash",
                                         task="T-FULL", fields=0x1FFF, detail=ref)
            got = msgspec.msgpack.decode(answer)["audit_id"]
        else:
            got = store.lookup(codes[(k + n) % len(codes)], requester="crash",
                               task="T-FULL", detail=ref).audit_id
        with out:
            sys.stdout.write(f"{got} {ref}\\n")
            sys.stdout.flush()
        n += 1

for k in range(16):
    threading.Thread(target=ask, args=(k,), daemon=True).start()
threading.Event().wait()
"""


def _filled(directory: Path) -> tuple[Registry, Store, list[str]]:
    kit = Registry(directory)
    store = kit.open()
    kit.apply(store, [person(YAMAGUCHI_CITY, n) for n in range(RESIDENTS)])
    codes = [code(YAMAGUCHI_CITY, n) for n in range(RESIDENTS)] + ["99999999999"]
    return kit, store, codes


def _answers_until_killed(path: Path, codes: list[str], wanted: int) -> list[tuple[int, str]]:
    """Start the child, read its answers until `wanted`, SIGKILL it, and return every
    answer it printed (those still in the pipe too)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(TESTS), str(path), ",".join(codes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put("")  # the pipe closed

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    answers: list[tuple[int, str]] = []
    try:
        while len(answers) < wanted:
            line = lines.get(timeout=120)  # bound: a child that stopped answering fails
            assert line, "the child exited before it was killed"
            audit_id, ref = line.split()
            answers.append((int(audit_id), ref))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    reader.join(timeout=60)
    while not lines.empty():
        line = lines.get()
        if line:
            audit_id, ref = line.split()
            answers.append((int(audit_id), ref))
    return answers


def test_sigkill_mid_group_commit_loses_no_answered_entry(
    tmp_path: Path, rng: random.Random
) -> None:
    kit, store, codes = _filled(tmp_path)
    before = store.audit_head()[1]
    del store  # the child opens the environment; this process reopens it after the kill
    for round_ in range(3):
        answers = _answers_until_killed(tmp_path / "store", codes, rng.randrange(50, 400))
        store = kit.open()
        for audit_id, ref in answers:
            entry = store.audit_entry(audit_id)
            assert entry is not None, f"answer {ref} (round {round_}) has no entry {audit_id}"
            assert entry.detail.split(";")[0] == ref
            assert entry.requester == "crash"
        assert len({a for a, _ in answers}) == len(answers)
        verification = store.audit_verify()
        assert verification.ok, verification.problems[:3]
        # Entries committed but never answered (killed before the print) may exist;
        # answered ones are all there.
        assert verification.last_id - before >= len(answers)
        before = verification.last_id
        del store


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[str]]:
    _, store, codes = _filled(tmp_path_factory.mktemp("group"))
    return store, codes


ASKS = st.lists(st.sampled_from(["lookup", "number", "refusal", "search"]), min_size=1, max_size=6)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requesters=st.lists(ASKS, min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_concurrent_requesters_each_get_their_entry(
    shared: tuple[Store, list[str]], requesters: list[list[str]], seed: int
) -> None:
    store, codes = shared
    first = store.audit_head()[1] + 1
    commits_before, entries_before = store.audit_commit_counts()
    start = threading.Barrier(len(requesters))
    got: list[list[tuple[int, str]]] = [[] for _ in requesters]
    errors: list[BaseException] = []

    def ask(k: int, asks: list[str]) -> None:
        pick = random.Random(seed + k)
        try:
            start.wait(timeout=60)
            for n, kind in enumerate(asks):
                ref = f"r{k}/{n}"
                c = pick.choice(codes)
                if kind == "lookup":
                    audit_id = store.lookup(
                        c, requester="agency-a", task="T-FULL", detail=ref
                    ).audit_id
                elif kind == "number":
                    audit_id = store.lookup_number(
                        "123456789018", requester="agency-n", task="T-NUM", detail=ref
                    ).audit_id
                elif kind == "search":
                    audit_id = store.search(
                        "ヤマグチ タロウ",
                        "1980-04-01",
                        1,
                        None,
                        requester="agency-a",
                        task="T-FULL",
                        detail=ref,
                    ).audit_id
                else:
                    audit_id = store.audit_log(
                        "code", requester="agency-a", task="T-FULL", allowed=False, detail=ref
                    )
                got[k].append((audit_id, ref))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(k, a)) for k, a in enumerate(requesters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    answers = [a for per in got for a in per]
    assert len(answers) == sum(map(len, requesters))
    ids = sorted(a for a, _ in answers)
    assert ids == list(range(first, first + len(answers))), "one entry each, no gaps"
    for audit_id, ref in answers:
        entry = store.audit_entry(audit_id)
        assert entry is not None and entry.detail.split(";")[0] == ref
    # Each requester's entries are in the order it asked.
    for per in got:
        assert [a for a, _ in per] == sorted(a for a, _ in per)
    commits, entries = (
        a - b
        for a, b in zip(store.audit_commit_counts(), (commits_before, entries_before), strict=True)
    )
    assert entries == len(answers) and 1 <= commits <= entries
    verification = store.audit_verify()
    assert verification.ok, verification.problems[:3]
