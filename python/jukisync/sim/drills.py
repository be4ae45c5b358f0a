"""`jukisync demo --scenario NAME`: the seed's emergency drills on a whole network.

Each drill runs the demo's network (in process, or over RabbitMQ with a broker URL)
with the production pieces — `assemble_tier` nodes, publishers with their outboxes,
`jukisync backup` and `jukisync restore` as an operator runs them, the store's
quarantine `drop` and the publisher's re-issue (`publish --supersedes`) — feeds it a
synthetic population and change stream in three parts, and breaks something on the
way. After each step it records what happened and what an operator would have seen
(`drillkit`: status verdicts, metrics, alerts, log lines). `checks` are the drill's
expected outcome; `ok` only when every one held.

- centre-loss: a centre is down while the second part flows: national converges
  through the twin, the lost centre's scrape fails (JukisyncDown) and its store is
  behind its twin's; it returns and catches up from its queue and the announced heads.
- garbled-update: the 2013 case. A municipality's system signs a bundle of garbled
  names; both centres halt that origin (JukisyncOriginHalted) while every other flows;
  the operator drops the bundle at both centres and the municipality re-issues it
  corrected (`supersedes` names the dropped one); everything converges.
- late-centre: a centre starts after two parts were published: it learns the heads
  from the announcements and fetches what it lacks (origins' outboxes, the twin).
- national-restore: national is backed up, runs on, loses its disk, is restored from
  the old backup into a new directory and catches up from the centres.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from jukisync import _core, clock
from jukisync.publisher.bundling import BundlePolicy
from jukisync.sim import synth
from jukisync.sim.demo import (
    amqp_network,
    judge_network,
    remove_namespace,
    transport_line,
    update_stream,
)
from jukisync.sim.drillkit import DOWN, LogTap, Observer, Step
from jukisync.sim.network import NATIONAL, Network, NetworkSpec, TierReport
from jukisync.tier.verdict import judge
from jukisync.trust import keys
from jukisync.wire.messages import Update, decode_body, decode_envelope

__all__ = ["DRILL_SIZE", "SCENARIOS", "DrillOptions", "DrillResult", "run_drill"]

log = logging.getLogger("jukisync.drill")

DRILL_SIZE = 3_000  # residents, and changes: enough to see it, a few seconds to run
LOST = "centre-b"  # the centre a drill takes down or starts late
TWIN = "centre-a"


@dataclass(frozen=True, slots=True)
class DrillOptions:
    scenario: str
    data_dir: Path
    residents: int = DRILL_SIZE
    changes: int = DRILL_SIZE
    seed: int = 1
    timeout_s: float = 120.0  # for each wait of the drill
    broker_url: str | None = None


@dataclass(slots=True)
class DrillResult:
    scenario: str
    title: str
    transport: str
    ok: bool  # every check held
    checks: dict[str, bool]
    steps: list[Step]
    converged: bool
    tiers: list[TierReport]
    updates: int
    elapsed_s: float
    data_dir: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tiers"] = {t.name: asdict(t) for t in self.tiers}
        return data


class Drill:
    """One run: the network, the observer, the steps and checks so far."""

    def __init__(self, network: Network, options: DrillOptions, parts: list[list[Any]]) -> None:
        self.network = network
        self.options = options
        self.parts = parts
        self.observer = Observer(network)
        self.tap = LogTap()
        self.steps: list[Step] = []
        self.checks: dict[str, bool] = {}
        self.submitted = 0

    def step(self, title: str, *happened: str) -> Step:
        step = self.observer.look(title, list(happened))
        step.logs = self.tap.take()
        self.steps.append(step)
        return step

    def check(self, what: str, held: bool) -> bool:
        self.checks[what] = bool(held)
        if not held:
            log.warning("drill %s: expected, but did not happen: %s", self.options.scenario, what)
        return held

    async def feed(self, part: int, updates: Sequence[tuple[str, Update]] | None = None) -> int:
        """Hand part `part` (or `updates`) to the publishers and wait until they have
        published it all."""
        chunk = self.parts[part] if updates is None else updates
        self.submitted += self.network.submit(chunk)
        async with asyncio.timeout(self.options.timeout_s):
            await self.network.drain_publishers()
        return len(chunk)

    async def until(self, predicate: Callable[[], bool]) -> bool:
        return await self.network.until(predicate, self.options.timeout_s)

    async def converged(self) -> bool:
        """Every running tier holds every publisher's chain up to its head."""
        return await self.network.wait_converged(self.options.timeout_s)

    def behind_twin(self, name: str, twin: str) -> str:
        """`jukisync status --store NAME --compare TWIN`: its verdict line."""
        return judge(self.network.tier(name).store, self.network.tier(twin).store, twin).line


# --- the drills --------------------------------------------------------------------------


async def _centre_loss(d: Drill) -> None:
    net = d.network
    await d.feed(0)
    d.check("all tiers converge before the loss", await d.converged())
    d.step("everything runs", f"part 1: {len(d.parts[0]):,} updates reach every tier")
    await net.stop_tier(LOST)
    await d.feed(1)
    through_twin = await d.converged()
    d.check(f"national converges through {TWIN} while {LOST} is down", through_twin)
    seen = d.step(
        f"{LOST} is down",
        f"{LOST} stopped (its queue keeps what the municipalities publish meanwhile)",
        f"part 2: {len(d.parts[1]):,} updates reach national through {TWIN} alone",
    )
    d.check(f"the {DOWN} alert fires for {LOST}", DOWN in seen.seen[LOST].alerts)
    d.check(
        f"`status --compare {TWIN}` shows {LOST} behind",
        seen.seen[LOST].verdict.startswith(f"down; store: behind {TWIN}"),
    )
    d.check("national stays caught up", seen.seen[NATIONAL].verdict.startswith("caught up"))
    await net.restart_tier(LOST)
    d.step(f"{LOST} returns", f"{LOST} restarted on its store and queue")
    await d.feed(2)
    d.check(f"{LOST} catches up", await d.converged())
    d.step(
        "after the return",
        f"part 3: {len(d.parts[2]):,} updates; {d.behind_twin(LOST, TWIN)} ({LOST})",
    )


def _garble(update: Update) -> Update:
    """The 2013 case: names turned to mojibake by a broken character conversion."""
    return msgspec.structs.replace(update, name=update.name[:1] + "\ufffd\ufffd")


def _garbled_names(store: _core.Store, codes: set[str]) -> list[str]:
    """The codes among `codes` whose record in `store` has a garbled name."""
    records = store.get_many(sorted(codes))
    return [r.juminhyo_code for r in records if r is not None and "\ufffd" in r.name]


async def _garbled_update(d: Drill) -> None:
    net = d.network
    await d.feed(0)
    d.check("all tiers converge before the incident", await d.converged())
    d.step("everything runs", f"part 1: {len(d.parts[0]):,} updates reach every tier")
    origin = max(net.spec.origins, key=lambda o: sum(1 for o2, _ in d.parts[1] if o2 == o))
    name = next(m.prefix for m in synth.MUNICIPALITIES if m.code == origin)
    # The municipality's system with its checks broken: it signs what it is given.
    faulty = await net.replace_publisher(origin, validate=lambda u: None)
    mine = [(o, u) for o, u in d.parts[1] if o == origin]
    # Its first updates after a drained part: they go into one bundle together.
    targets = [u for _, u in mine[:3]]  # exactly these updates, not later ones of a code
    garbled = {u.juminhyo_code for u in targets}
    part = [(o, _garble(u) if any(u is t for t in targets) else u) for o, u in d.parts[1]]
    await d.feed(1, part)
    centres = [net.tier(c) for c in net.spec.centres]
    others = {o: h for o, h in net.expected_heads().items() if o != origin}

    def halted_elsewhere_flowing() -> bool:
        return all(origin in c.store.halted() for c in centres) and all(
            {o: h for o, h in t.store.chain_heads().items() if o != origin} == others
            for t in net.tiers()
        )

    halted = await d.until(halted_elsewhere_flowing)
    seen = d.step(
        f"{origin} ({name}) signs garbled names",
        f"{len(garbled)} updates of {origin} with mojibake names, validly signed",
        "both centres halt that origin; its later bundles wait in pending",
    )
    d.check(f"both centres halt {origin}; every other origin flows", halted)
    d.check(
        "the JukisyncOriginHalted alert fires at both centres",
        all("JukisyncOriginHalted" in seen.seen[c].alerts for c in net.spec.centres),
    )
    national = net.tier(NATIONAL).store
    d.check("nothing garbled reaches national", not _garbled_names(national, garbled))
    halts = [
        [e for e in c.store.quarantine() if e.kind == "halt" and e.origin == origin]
        for c in centres
    ]
    if not d.check(
        "the halting bundle is in both centres' quarantine", all(len(h) == 1 for h in halts)
    ):
        return
    for centre, [entry] in zip(centres, halts, strict=True):
        # `jukisync quarantine drop ID --store CENTRE`
        centre.store.drop(
            entry.id, operator="drill", reason="garbled names (2013)", at=clock.now_us()
        )
    entry = halts[0][0]
    dropped_hash, first_seq = entry.hash, entry.first_seq
    assert dropped_hash is not None and first_seq is not None
    # `jukisync publish --supersedes HASH fixed.jsonl`: the municipality re-issues it.
    dropped = decode_body(decode_envelope(faulty.resend(first_seq, 1)[0].envelope).body)
    # The corrected file: the same updates, the names as they should have been.
    originals = iter([u.name for u in targets])
    fixed = [
        msgspec.structs.replace(u, name=next(originals)) if "\ufffd" in u.name else u
        for u in dropped.updates
    ]
    faulty.reissue(dropped_hash, fixed)
    net.pub_nodes[origin].notify()
    await d.feed(2)
    d.check("every tier converges after the re-issue", await d.converged())
    d.check("national holds the corrected names", not _garbled_names(national, garbled))
    d.check("no origin is halted any more", not any(t.store.halted() for t in net.tiers()))
    d.step(
        "dropped and re-issued",
        f"operator: `jukisync quarantine drop` at both centres (bundle {dropped_hash.hex()[:12]})",
        f"{origin}: `jukisync publish --supersedes {dropped_hash.hex()[:12]}... fixed.jsonl`",
        f"part 3: {len(d.parts[2]):,} updates",
    )


async def _late_centre(d: Drill) -> None:
    net = d.network
    await d.feed(0)
    await d.feed(1)
    d.check(f"national converges through {TWIN} alone", await d.converged())
    d.step(
        f"{LOST} not started yet",
        f"parts 1-2: {len(d.parts[0]) + len(d.parts[1]):,} updates through {TWIN}",
    )
    await net.start_tier(LOST)
    start = d.behind_twin(LOST, TWIN)
    d.check(f"{LOST} starts behind its twin", start.startswith(f"behind {TWIN}"))
    d.step(f"{LOST} starts", f"`status --compare {TWIN}`: {start}")
    await d.feed(2)
    d.check(f"{LOST} catches up", await d.converged())
    d.step("caught up", f"part 3: {len(d.parts[2]):,} updates; {d.behind_twin(LOST, TWIN)}")


def _jukisync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A jukisync command as an operator runs it (another process: the store it opens
    is open in this one too, which LMDB allows across processes only)."""
    script = Path(sys.executable).with_name("jukisync")
    argv = [str(script)] if script.exists() else [sys.executable, "-c", _MAIN]
    return subprocess.run(
        [*argv, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


_MAIN = "import sys; from jukisync.cli import main; sys.argv[0] = 'jukisync'; main()"


async def _national_restore(d: Drill) -> None:
    net = d.network
    root = net.data_dir
    pair = keys.generate("national", "national-backup")  # signs national's backups
    secret_file, public_file = keys.save(pair, root / "keys")
    await d.feed(0)
    d.check("all tiers converge before the backup", await d.converged())
    backup = await asyncio.to_thread(
        _jukisync,
        "backup",
        "--store",
        NATIONAL,
        "--dir",
        "backups",
        "--key",
        str(secret_file),
        "--json",
        cwd=root,
    )
    if not d.check("`jukisync backup` writes and verifies a backup", backup.returncode == 0):
        d.step("backup failed", backup.stderr.strip())
        return
    archive = json.loads(backup.stdout)["backup"]
    d.step("national backed up", f"$ jukisync backup --store national --dir backups → {archive}")
    await d.feed(1)
    d.check("every tier holds part 2", await d.converged())
    await net.stop_tier(NATIONAL)
    restored = root / "national-restored"
    restore = await asyncio.to_thread(
        _jukisync,
        "restore",
        "--backup",
        archive,
        "--store",
        str(restored),
        "--signer",
        str(public_file),
        cwd=root,
    )
    ok = d.check("`jukisync restore` restores and verifies the old backup", restore.returncode == 0)
    d.step(
        "national lost its disk",
        f"part 2: {len(d.parts[1]):,} updates applied after the backup, then national stopped",
        f"$ jukisync restore --backup {Path(archive).name} --store national-restored",
        (restore.stdout or restore.stderr).strip(),
    )
    if not ok:
        return
    await net.replace_tier(NATIONAL, restored)
    start = d.behind_twin(NATIONAL, TWIN)
    d.check("the restored national starts behind the centres", start.startswith("behind"))
    d.step("national restarted on the restored store", f"`status --compare {TWIN}`: {start}")
    await d.feed(2)
    d.check("the restored national catches up", await d.converged())
    d.step("caught up", f"part 3: {len(d.parts[2]):,} updates; {d.behind_twin(NATIONAL, TWIN)}")


Scenario = Callable[[Drill], Awaitable[None]]

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "centre-loss": ("one aggregation centre down for the run (相互補完)", _centre_loss),
    "garbled-update": ("a municipality signs garbled data (the 2013 case)", _garbled_update),
    "late-centre": ("an aggregation centre starts after the traffic", _late_centre),
    "national-restore": ("national restored from an old backup", _national_restore),
}


def _three_parts(options: DrillOptions, population: synth.Population) -> list[list[Any]]:
    updates = list(update_stream(population, options.changes, options.seed))
    third = max(1, len(updates) // 3)
    return [updates[:third], updates[third : 2 * third], updates[2 * third :]]


async def run_drill(options: DrillOptions) -> DrillResult:
    title, scenario = SCENARIOS[options.scenario]
    population = synth.generate_population(options.residents, options.seed)
    spec = NetworkSpec(
        origins=[m.code for m in population.municipalities],
        policy=BundlePolicy(100, 0.02),
        resend_interval_s=0.3,
        announce_interval_s=0.5,  # heads go round quickly: catch-up within the drill
        answer_wait_s=1.0,
    )
    amqp = amqp_network(options.broker_url)
    network = Network(options.data_dir, spec, transports=amqp)
    drill = Drill(network, options, _three_parts(options, population))
    started = time.monotonic()
    with drill.tap.attached():
        try:
            await network.start(later=(LOST,) if options.scenario == "late-centre" else ())
            await scenario(drill)
            heads_ok = await drill.converged()
            final = judge_network(network, heads_ok, drill.submitted, 0.0, None)
            drill.check("in the end every tier holds the same records", final.converged)
        finally:
            await network.stop()
            await remove_namespace(amqp)
    return DrillResult(
        scenario=options.scenario,
        title=title,
        transport=transport_line(options.broker_url, amqp),
        ok=all(drill.checks.values()),
        checks=drill.checks,
        steps=drill.steps,
        converged=final.converged,
        tiers=final.tiers,
        updates=drill.submitted,
        elapsed_s=round(time.monotonic() - started, 3),
        data_dir=str(options.data_dir),
    )
