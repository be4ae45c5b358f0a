"""One line an operator can act on: is this store caught up, behind, or halted — on
its own (what it received: pending bundles wait for missing seqs) or against another
store (`jukisync status --compare OTHER`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jukisync import _core

__all__ = ["Verdict", "judge"]


@dataclass
class Verdict:
    state: str  # "caught up", "behind", "halted"
    behind_seqs: int = 0  # summed over origins
    behind: dict[str, int] = field(default_factory=dict)  # origin -> seqs missing
    ahead: dict[str, int] = field(default_factory=dict)  # against OTHER: origin -> seqs
    halted: list[str] = field(default_factory=list)
    compared_with: str | None = None
    records_equal: bool | None = None  # against OTHER: the Merkle trees agree
    differing_codes: int = 0

    @property
    def line(self) -> str:
        against = f" {self.compared_with}" if self.compared_with else ""
        if self.state == "halted":
            text = f"halted: {', '.join(self.halted)} (an operator must release or drop)"
        elif self.state == "behind":
            worst = sorted(self.behind.items(), key=lambda kv: -kv[1])[:5]
            listed = ", ".join(f"{o} by {n}" for o, n in worst)
            text = f"behind{against} by {self.behind_seqs} seqs ({listed})"
        else:
            text = f"caught up{' with' + against if against else ''}"
        if self.state != "halted" and self.halted:
            text += f"; halted: {', '.join(self.halted)}"
        if self.ahead:
            text += f"; ahead of{against} in {len(self.ahead)} origin(s)"
        if self.records_equal is False:
            text += f"; {self.differing_codes} record(s) differ (jukisync reconcile)"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "line": self.line,
            "behind_seqs": self.behind_seqs,
            "behind": self.behind,
            "ahead": self.ahead,
            "halted": self.halted,
            "compared_with": self.compared_with,
            "records_equal": self.records_equal,
            "differing_codes": self.differing_codes,
        }


def _own_gaps(store: _core.Store) -> dict[str, int]:
    """Seqs an origin's pending bundles show missing or waiting beyond its head."""
    heads = store.chain_heads()
    behind = {}
    for origin in {*heads, *store.halted()}:
        waiting = store.pending(origin)
        if waiting:
            head = heads.get(origin, (0, b""))[0]
            behind[origin] = max(last for _, last in waiting) - head
    return behind


def judge(store: _core.Store, other: _core.Store | None = None, other_name: str = "") -> Verdict:
    halted = sorted(store.halted())
    behind = _own_gaps(store)
    verdict = Verdict(state="caught up", halted=halted)
    if other is not None:
        verdict.compared_with = other_name
        mine, theirs = store.chain_heads(), other.chain_heads()
        for origin in {*mine, *theirs}:
            gap = theirs.get(origin, (0, b""))[0] - mine.get(origin, (0, b""))[0]
            if gap > 0:
                behind[origin] = max(behind.get(origin, 0), gap)
            elif gap < 0:
                verdict.ahead[origin] = -gap
        found = store.reconcile(other)
        codes = {c.code for o in found.origins for c in o.codes}
        verdict.records_equal = found.equal
        verdict.differing_codes = len(codes)
    verdict.behind = dict(sorted(behind.items()))
    verdict.behind_seqs = sum(behind.values())
    if halted:
        verdict.state = "halted"
    elif verdict.behind_seqs:
        verdict.state = "behind"
    return verdict
