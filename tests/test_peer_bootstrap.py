"""`jukisync bootstrap --peer` over RabbitMQ, from centres whose change logs were pruned.

The centres run and have applied every origin's stream; both prune their change logs
(`jukisync retention prune`, hot, keeping two bundles per origin). National is lost:
a new national store is built from the centres over the broker with `bootstrap --peer`
(every envelope re-verified by the store's apply; the ranges the centres pruned are
served from their archives), and must equal the outboxes' reference exactly. Then the
new national runs as the node and keeps up with more updates.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from daemonkit import MAP_SIZE, Net, synthetic_updates, until, write_updates
from jukisync import _core

pytestmark = pytest.mark.broker


@pytest.fixture
def net(broker_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    made = Net(tmp_path, broker_url, centres=("east", "west"), max_updates=10)
    yield made
    made.stop_all()
    made.remove_topology()


def test_national_rebuilt_from_pruned_centres_over_the_broker(net: Net, tmp_path: Path) -> None:
    net.start_and_wait(net.national, *net.centres)
    updates = synthetic_updates(300, 300, seed=21)
    net.publish_all(write_updates(tmp_path / "a.jsonl", updates[:200]))
    net.wait_converged([*net.centres, net.national])
    # Forwards national confirmed are marked done with the centre's next commit, or
    # alone after `forward_poll_s` idle; retention never prunes what is not marked, so
    # wait for the marks before pruning to two bundles.
    assert until(
        lambda: all(net.store(c).stats()["forward_backlog"] == 0 for c in net.centres), 60
    ), {c: net.store(c).stats()["forward_backlog"] for c in net.centres}
    for centre in net.centres:
        pruned = net.cli(
            "retention", "prune", "--store", str(net.store_dir(centre)),
            "--key", str(net.root / "keys" / f"{centre}-k1.key.json"),
            "--archive-dir", str(tmp_path / "archive" / centre),
            "--keep-bundles", "2", "--keep-days", "0", "--json",
        )  # fmt: skip
        assert json.loads(pruned.stdout)["pruned"], pruned.stdout

    # National is lost with its store; a new one is built from the centres.
    assert net.kill(net.national, signal.SIGTERM) == 0
    config = net.configs[net.national]
    config.write_text(
        config.read_text().replace(
            f'store = "data/{net.national}"', f'store = "data/{net.national}-new"'
        )
    )
    built = net.cli(
        "bootstrap", "--peer", "--config", str(config), "--timeout", "55", "--json",
        check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["caught_up"] and report["problems"] == [], report
    reference = net.reference()
    new_store = net.root / "data" / f"{net.national}-new"
    rebuilt = _core.Store(
        str(new_store), registry=net.registry(), require_attestation=False, map_size=MAP_SIZE
    )
    assert rebuilt.chain_heads() == reference.chain_heads()
    assert rebuilt.digest() == reference.digest()
    assert rebuilt.stats()["applied_updates"] == reference.stats()["applied_updates"]
    assert rebuilt.check() == []
    # the centres served the pruned ranges from their archives (they hold two bundles)
    assert all(net.store(c).changelog_entries() <= 2 * len(net.origins) for c in net.centres)
    del rebuilt

    # Then it runs as national and keeps up.
    again = net.cli("bootstrap", "--peer", "--config", str(config), "--timeout", "5", check=False)
    assert again.returncode == 2  # a store is there now: never overwritten
    net.store_dir = lambda name: (  # type: ignore[method-assign]
        new_store if name == net.national else net.root / "data" / name
    )
    net._stores.pop(net.national, None)  # read the new store from now on
    net.start_and_wait(net.national)
    net.publish_all(write_updates(tmp_path / "b.jsonl", updates[200:]))
    net.wait_converged([*net.centres, net.national])
