"""`jukisync bootstrap --peer`: a new node's store built over RabbitMQ from its peers
(the twin centre for a centre, the centres for national).

No new protocol: the node starts as its daemon would, with an empty store, and
catches up through the same head announcements and repair requests every tier uses
(`tier/catchup.py`): it hears each origin's signed head, finds itself behind, and
asks for the range from seq 1, `repair_max_bundles` at a time: a centre asks the
origin's outbox, then its twin, which re-sends the signed, attested envelopes from its
change log (or, pruned, from its retention archive); national asks the centres, which
re-forward from theirs. Every envelope goes through the store's verifying apply (origin
signatures and attestations batch-verified, keys, chains, content), as `bootstrap
--snapshot` re-applies a snapshot's change log: the new store trusts nothing unsigned.

It stops once the node is healthy with at least one origin and holds exactly what is
announced: connected, heads heard for `health.settle_s`, no origin behind its
announced head by even one seq (health alone tolerates a lag within `[health]`'s
bounds), nothing pending, nothing halted. Then the store's own `check` runs. Its HTTP
endpoint and retention are off while it runs; `jukisync run` then takes over the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import msgspec

from jukisync.config import RetentionConfig, TierConfig
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.tier.daemon import Daemon, StartupError

__all__ = ["PeerBootstrap", "bootstrap_from_peers"]

_POLL_S = 0.25


@dataclasses.dataclass
class PeerBootstrap:
    store: str
    caught_up: bool = False
    origins: int = 0
    applied_bundles: int = 0
    records: int = 0
    digest: str = ""
    heads: dict[str, int] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)


async def bootstrap_from_peers(config: TierConfig, timeout_s: float) -> PeerBootstrap:
    """Build `config.store` (which must not exist) from the peers; raises
    StartupError (with its exit code) when the node cannot start."""
    if (Path(config.store) / "data.mdb").exists():
        raise StartupError(ExitCode.USAGE, f"{config.store} already holds a store")
    config = msgspec.structs.replace(
        config,
        http=msgspec.structs.replace(config.http, port=0),
        retention=RetentionConfig(),
    )
    daemon = Daemon(config, connection_name=f"jukisync bootstrap {config.id} pid {os.getpid()}")
    report = PeerBootstrap(store=config.store)

    async def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not daemon.stop_requested:
            await asyncio.sleep(_POLL_S)
            node = daemon.node
            if node is None or node.failure is not None:
                continue
            # Healthy is not enough: health tolerates a lag within the `[health]`
            # bounds, and a rebuilt store must hold every announced head exactly.
            healthy, details = daemon.health()
            if (
                healthy
                and not details.get("behind")
                and not details.get("pending")
                and node.store.chain_heads()
            ):
                report.caught_up = True
                break
        daemon.request_stop()

    watcher = asyncio.create_task(watch())
    try:
        code = await daemon.run(wait=False)
    finally:
        watcher.cancel()
    node = daemon.node
    if code != ExitCode.OK:
        report.problems.append(f"the node stopped with exit code {int(code)}")
    if node is not None:
        store = node.store
        heads = store.chain_heads()
        report.origins = len(heads)
        report.heads = {o: seq for o, (seq, _) in sorted(heads.items())}
        report.applied_bundles = node.stats.applied
        facts = snapshots.store_facts(store)
        report.records, report.digest = facts["records"], facts["digest"]
        report.problems += [f"check: {p}" for p in snapshots.consistency_problems(store)]
    if not report.caught_up:
        report.problems.append(
            f"not caught up within {timeout_s:g}s (the store holds what was verified so far; "
            "`jukisync run` goes on from there)"
        )
    return report
