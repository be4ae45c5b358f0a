"""Comparing two tier stores and repairing the one that is behind, trusting only
signed envelopes (DESIGN.md §3a).

`compare` reports each origin whose chain head or records differ, with the exact
codes and which side holds the newer version (the core descends each origin's Merkle
tree only where sums differ). `repair`:

1. for an origin one side is behind on, applies the other side's change-log envelopes
   after the behind side's head through the normal `apply` path: every signature,
   attestation, chain link and the conflict rule are checked again, and at a centre
   the bundles are attested and queued for national like any other;
   A range the ahead side pruned after a checkpoint is read from its archive; when
   the archive is not readable here, the origin is reported in `not_applied` with
   the archive's name;
2. records that still differ (state altered outside `apply`) are recomputed by each
   side from its own change log, and an index or Merkle sum found wrong by `check`
   is rebuilt from the records. No unsigned state is copied from one store to the
   other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jukisync import _core
from jukisync.tier import retention

__all__ = ["RepairReport", "compare", "describe", "repair"]

_DERIVED_KINDS = ("number_index", "reading_index", "name_index", "merkle")
_CHUNK = 500  # change-log envelopes fetched and applied per call


@dataclass
class RepairReport:
    applied: dict[str, int] = field(default_factory=dict)  # "a"/"b" -> bundles applied
    not_applied: list[str] = field(default_factory=list)  # statuses other than applied
    forks: list[str] = field(default_factory=list)  # origins with the same seq, other hash
    rebuilt_codes: dict[str, int] = field(default_factory=dict)
    rebuilt_indexes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "not_applied": self.not_applied,
            "forks": self.forks,
            "rebuilt_codes": self.rebuilt_codes,
            "rebuilt_indexes": self.rebuilt_indexes,
        }


def compare(a: _core.Store, b: _core.Store) -> _core.Reconciliation:
    return a.reconcile(b)


def _record(r: _core.Record | None) -> dict[str, object] | None:
    if r is None:
        return None
    return {
        "status": r.status,
        "municipality": r.municipality,
        "changed_on": r.changed_on,
        "origin": r.origin,
        "seq": r.seq,
    }


def _head(h: tuple[int, bytes] | None) -> dict[str, object] | None:
    return None if h is None else {"seq": h[0], "hash": h[1].hex()}


def behind_side(diff: _core.OriginDiff) -> str | None:
    """ "a" or "b" when one chain is a prefix of the other's (by seq), "fork" when the
    same seq has other hashes, None when the heads are equal."""
    a_seq = diff.a_head[0] if diff.a_head else 0
    b_seq = diff.b_head[0] if diff.b_head else 0
    if a_seq < b_seq:
        return "a"
    if b_seq < a_seq:
        return "b"
    return None if diff.a_head == diff.b_head else "fork"


def describe(found: _core.Reconciliation) -> dict[str, object]:
    """The comparison as JSON-ready data."""
    return {
        "equal": found.equal,
        "origins": [
            {
                "origin": o.origin,
                "a_head": _head(o.a_head),
                "b_head": _head(o.b_head),
                "behind": behind_side(o),
                "codes": [
                    {"code": c.code, "newer": c.newer, "a": _record(c.a), "b": _record(c.b)}
                    for c in o.codes
                ],
            }
            for o in found.origins
        ],
        "nodes_compared": found.nodes_compared,
        "records_read": found.records_read,
    }


def _catch_up(
    behind: _core.Store, ahead: _core.Store, origin: str, side: str, report: RepairReport
) -> None:
    head = behind.chain_head(origin)
    next_seq = (head[0] if head else 0) + 1
    while True:
        try:
            envelopes = retention.changes(ahead, origin, next_seq, _CHUNK)
        except retention.BeforeRetention as exc:
            report.not_applied.append(f"{side} {origin}: {exc}")
            return
        if not envelopes:
            return
        results = behind.apply(envelopes)
        for r in results:
            if r.status == "applied":
                report.applied[side] = report.applied.get(side, 0) + 1 + r.released
            elif r.status != "duplicate":
                report.not_applied.append(
                    f"{side} {origin} seqs {r.first_seq}..{r.last_seq}: {r.status} ({r.reason})"
                )
        after = behind.chain_head(origin)
        after_seq = after[0] if after else 0
        if after_seq < next_seq:  # nothing advanced (halted, or refused): stop here
            return
        next_seq = after_seq + 1


def repair(a: _core.Store, b: _core.Store) -> RepairReport:
    report = RepairReport()
    for diff in compare(a, b).origins:
        side = behind_side(diff)
        if side == "fork":
            report.forks.append(diff.origin)
        elif side == "a":
            _catch_up(a, b, diff.origin, "a", report)
        elif side == "b":
            _catch_up(b, a, diff.origin, "b", report)
    codes = sorted({c.code for o in compare(a, b).origins for c in o.codes})
    if codes:
        for side, store in (("a", a), ("b", b)):
            report.rebuilt_codes[side] = store.rebuild_codes(codes)
    for side, store in (("a", a), ("b", b)):
        if any(kind.startswith(_DERIVED_KINDS) for kind, _ in store.check()):
            store.rebuild_indexes()
            report.rebuilt_indexes.append(side)
    return report
