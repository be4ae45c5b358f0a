"""The equipment refresh (機器更新) runbook over RabbitMQ, as the README tells it:

1. the old centre runs; a snapshot is taken while it applies (`jukisync snapshot`);
2. the new machine's store is built from it (`jukisync bootstrap`, every envelope
   re-verified) while the old centre keeps serving;
3. switch: the old centre stops (SIGTERM); the new one starts with the centre's
   identity (same config and key, its own store) on the same queue;
4. it catches up what the old one applied after the snapshot through the normal
   gap handling (resend requests served by the publishers) and what was published
   while neither ran through the queue;
5. nothing is lost: every tier holds exactly what the outboxes published, national
   applied nothing twice beyond the re-forwarded duplicates.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from daemonkit import (
    ORIGINS,
    Nets,
    assert_matches_reference,
    synthetic_updates,
    until,
    write_updates,
)
from jukisync.wire.messages import Update

pytestmark = pytest.mark.broker


def _thirds(updates: list[Update]) -> list[list[Update]]:
    """Three batches, each holding a contiguous part of every origin's stream."""
    batches: list[list[Update]] = [[], [], []]
    for origin in ORIGINS:
        mine = [u for u in updates if u.municipality == origin]
        cut = len(mine) // 3
        for i, part in enumerate((mine[:cut], mine[cut : 2 * cut], mine[2 * cut :])):
            batches[i].extend(part)
    assert all({u.municipality for u in b} == set(ORIGINS) for b in batches)
    return batches


def test_equipment_refresh_loses_nothing(make_net: Nets, tmp_path: Path) -> None:
    net = make_net(max_updates=10)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    batches = _thirds(synthetic_updates(300, 300, seed=12))
    files = [write_updates(tmp_path / f"batch{i}.jsonl", b) for i, b in enumerate(batches)]

    # 1. The old centre runs and has applied batch 0; snapshot it while it runs.
    net.publish_all(files[0])
    net.wait_converged([centre, net.national])
    snapshot = tmp_path / "centre.tar"
    key = net.root / "keys" / f"{centre}-k1.key.json"
    made = net.cli(
        "snapshot", "--store", str(net.store_dir(centre)), "--key", str(key),
        "--out", str(snapshot), "--json",
    )  # fmt: skip
    at_snapshot = json.loads(made.stdout)["heads"]

    # ... and it keeps applying (batch 1) after the snapshot was taken.
    net.publish_all(files[1])
    net.wait_converged([centre, net.national])

    # 2. The new machine's store, re-verified from the snapshot.
    new_store = net.root / "data" / f"{centre}-new"
    built = net.cli(
        "bootstrap", "--snapshot", str(snapshot), "--store", str(new_store),
        "--root", str(net.root / "keys" / "root.pub.json"), "--json",
    )  # fmt: skip
    report = json.loads(built.stdout)
    assert report["verified"] and report["problems"] == []
    assert {o: h["seq"] for o, h in at_snapshot.items()} != {
        o: s for o, (s, _) in net.store(centre).chain_heads().items()
    }  # the old centre moved on after the snapshot: the new one must catch up

    # 3. Switch: the old centre stops; the new one takes its identity and queue.
    assert net.kill(centre, signal.SIGTERM) == 0
    config = net.configs[centre]
    config.write_text(
        config.read_text().replace(f'store = "data/{centre}"', f'store = "data/{centre}-new"')
    )
    retired = net.store_dir(centre)
    net.store_dir = lambda name: new_store if name == centre else net.root / "data" / name  # type: ignore[method-assign]
    net._stores.pop(centre, None)  # read the new store from now on
    net.start_and_wait(centre)

    # 4. Batch 2 arrives; the gaps it reveals are resent by the publishers (--follow).
    publishers = [net.publish(o, files[2], "--skip-others", "--follow") for o in net.origins]
    assert until(
        lambda: (
            net.converged([centre, net.national], net.expected_heads())
            and net.applied(centre) == sum(len(b) for b in batches)
        )
    ), "\n".join(f"--- {p.name}\n{p.output()}" for p in net.procs.values())
    for proc in publishers:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()

    # 5. Nothing lost, nothing doubled: the new centre and national equal the outboxes.
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    assert retired.exists()  # the old store is kept until the operator retires it
