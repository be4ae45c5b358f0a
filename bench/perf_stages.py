"""Fold `perf script -F comm,tid,ip,sym` output (call graphs of `bench/profile_apply.py`)
into the stages of `Store.apply`: the share of samples and CPU µs per update of each.

    perf script -i apply.perf -F comm,tid,ip,sym | \\
        .venv/bin/python bench/perf_stages.py --hz 499 --updates 90385

A sample belongs to the first stage (in TOP's order) with a frame on its stack, and
within it to the first sub-stage whose frame is on the stack. Needs symbols of the
inlined functions: build the extension with `CARGO_PROFILE_RELEASE_DEBUG=true`.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterable, Iterator

TOP = [
    ("prepare", "Store>::prepare"),
    ("write_records", "Store>::write_records"),
    ("commit", "_mdb_txn_commit"),
    ("commit_bundle", "Store>::commit_bundle"),
    ("apply_verified", "Store>::apply_verified"),
    ("apply_batch", "Store>::apply_batch"),
]
SUB = {
    "prepare": [
        ("verify (Ed25519 batch)", "verify_batch"),
        ("hash body (SHA-256)", "crypto::sha256"),
        ("validate (text, fields)", "validate::"),
        ("decode envelope + body", ""),
    ],
    "write_records": [
        ("Merkle sums", "merkle::"),
        ("indexes (keys, puts, deletes)", "query::"),
        ("indexes (keys, puts, deletes)", "delete_one_duplicate"),
        ("conflict lookup (get + decode stored)", "mdb_get"),
        ("conflict lookup (get + decode stored)", "wire::decode"),
        ("record write (encode + put)", "wire::encode"),
        ("record write (encode + put)", "mdb_cursor_put"),
        ("sort, fold, free", ""),
    ],
    "commit": [
        ("commit: fdatasync", "fdatasync"),
        ("commit: page writes", "mdb_page_flush"),
        ("commit: other", ""),
    ],
    "commit_bundle": [("change log + head + outbox (attest)", "")],
    "apply_verified": [("chain checks (head, superseded, halts)", "")],
    "apply_batch": [("records from updates, other", "")],
}


def stacks(lines: Iterable[str]) -> Iterator[list[str]]:
    stack: list[str] = []
    for line in lines:
        if line.startswith("\t"):
            stack.append(line.strip())
            continue
        if stack:
            yield stack
        stack = []
    if stack:
        yield stack


def stage(stack: list[str]) -> str:
    for top, frame in TOP:
        if any(frame in f for f in stack):
            for name, sub in SUB[top]:
                if any(sub in f for f in stack):
                    return name
    return "outside apply (Python, GC)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hz", type=float, required=True, help="perf record -F")
    parser.add_argument("--updates", type=int, required=True, help="updates applied")
    args = parser.parse_args()
    counts = collections.Counter(stage(s) for s in stacks(sys.stdin))
    total = sum(counts.values())
    print(f"{total} samples = {total / args.hz:.2f} s CPU for {args.updates:,} updates")
    for name, n in counts.most_common():
        per_update = n / args.hz / args.updates * 1e6
        print(f"{name:42} {n / total * 100:5.1f}%  {per_update:6.2f} µs/update")


if __name__ == "__main__":
    main()
