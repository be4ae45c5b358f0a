"""The README's key runbooks over RabbitMQ, with the CLI an operator uses:

- rotation: a municipality's key is replaced mid-stream (`keys generate`, `keys
  rotate`, SIGHUP); its chain carries on under the new key, nothing lost;
- a centre's own key is rotated mid-stream (SIGHUP: it reads its config's key file
  again); national accepts the new key's attestations, nothing refused or lost;
- revocation: a centre's key is revoked (`keys revoke`, SIGHUP at national); national
  refuses that centre's later attestations and converges through the twin centre.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import (
    Net,
    assert_matches_reference,
    synthetic_updates,
    until,
    write_updates,
)
from jukisync.wire.messages import Update

pytestmark = pytest.mark.broker

YAMAGUCHI_CITY = "352039"


@pytest.fixture
def nets(broker_url: str, tmp_path: Path) -> Iterator[list[Net]]:
    made: list[Net] = []
    yield made
    for net in made:
        net.stop_all()
        net.remove_topology()


def _halves(updates: list[Update]) -> tuple[list[Update], list[Update]]:
    mid = len(updates) // 2
    return updates[:mid], updates[mid:]


def _reload(net: Net, *names: str) -> None:
    """SIGHUP and wait until each daemon logged the new registry in use."""

    def reloads(name: str) -> int:  # the whole log: output() is only its tail
        return net.procs[name].log.read_text(errors="replace").count("registry reloaded")

    before = {n: reloads(n) for n in names}
    for name in names:
        net.procs[name].signal(signal.SIGHUP)
    assert until(lambda: all(reloads(n) > before[n] for n in names)), "\n".join(
        net.procs[n].output() for n in names
    )


def test_rotating_a_municipality_key_mid_stream(
    nets: list[Net], broker_url: str, tmp_path: Path
) -> None:
    net = Net(tmp_path, broker_url, origins=(YAMAGUCHI_CITY,))
    nets.append(net)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    first, second = _halves(synthetic_updates(120, 120, seed=31, origins=(YAMAGUCHI_CITY,)))
    net.publish_all(write_updates(tmp_path / "first.jsonl", first))
    net.wait_converged([centre, net.national])

    # The municipality's new key (the six-year refresh, or a suspected leak).
    net.cli("keys", "generate", "--owner", YAMAGUCHI_CITY, "--key-id", f"{YAMAGUCHI_CITY}-k2",
            "--out", "keys")  # fmt: skip
    new_pub = f"keys/{YAMAGUCHI_CITY}-k2.pub.json"
    net.cli("keys", "rotate", "--root", "keys/root.key.json", "--registry", "keys/registry.bin",
            "--old", f"{YAMAGUCHI_CITY}-k1", "--new", new_pub)  # fmt: skip
    net.registry_bytes = (net.root / "keys" / "registry.bin").read_bytes()  # the reference's
    _reload(net, centre, net.national)
    config = net.configs[YAMAGUCHI_CITY]
    config.write_text(config.read_text().replace("-k1.key.json", "-k2.key.json"))

    net.publish_all(write_updates(tmp_path / "second.jsonl", second))
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    assert net.store(centre).stats()["rejected_security"] == 0
    # The chain carried on across the switch: later bundles are signed with k2.
    last = net.store(net.national).changes(YAMAGUCHI_CITY, net.applied(net.national), 1)
    assert f"{YAMAGUCHI_CITY}-k2".encode() in last[0]


def test_revoking_a_centre_key_the_twin_carries_on(
    nets: list[Net], broker_url: str, tmp_path: Path
) -> None:
    net = Net(tmp_path, broker_url, centres=("east", "west"))
    nets.append(net)
    east, west = net.centres
    net.start_and_wait(net.national, east, west)
    first, second = _halves(synthetic_updates(150, 150, seed=32))
    net.publish_all(write_updates(tmp_path / "first.jsonl", first))
    net.wait_converged([east, west, net.national])
    refused_before = net.store(net.national).stats()["rejected_security"]
    assert refused_before == 0

    # East's machine is compromised: its key is revoked, national reloads.
    net.cli("keys", "revoke", "--root", "keys/root.key.json", "--registry", "keys/registry.bin",
            "--key-id", f"{east}-k1")  # fmt: skip
    _reload(net, net.national)

    net.publish_all(write_updates(tmp_path / "second.jsonl", second))
    net.wait_converged([west, net.national])  # through the twin
    reference = net.reference()
    assert_matches_reference(net, [west, net.national], reference)
    # East's forwards of the second half were refused as attested by a revoked key.
    assert until(lambda: net.store(net.national).stats()["rejected_security"] > 0)
    reasons = {e.reason for e in net.store(net.national).quarantine()}
    assert reasons and all(east in r and "revoked" in r for r in reasons), reasons
    # Security events, not a halt: no origin stopped at national.
    assert net.store(net.national).halted() == {}


def _logged(net: Net, name: str, text: str) -> int:
    return net.procs[name].log.read_text(errors="replace").count(text)


def test_rotating_a_centre_key_mid_stream(nets: list[Net], broker_url: str, tmp_path: Path) -> None:
    """The centre's own key is replaced without a restart: SIGHUP makes it read its
    config's key file again; national accepts the new key's attestations once its
    registry lists the key, and nothing is lost or refused across the switch."""
    net = Net(tmp_path, broker_url)
    nets.append(net)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    first, second = _halves(synthetic_updates(150, 150, seed=33))
    net.publish_all(write_updates(tmp_path / "first.jsonl", first))
    net.wait_converged([centre, net.national])

    net.cli("keys", "generate", "--owner", centre, "--key-id", f"{centre}-k2", "--out", "keys")
    net.cli("keys", "rotate", "--root", "keys/root.key.json", "--registry", "keys/registry.bin",
            "--old", f"{centre}-k1", "--new", f"keys/{centre}-k2.pub.json")  # fmt: skip
    net.registry_bytes = (net.root / "keys" / "registry.bin").read_bytes()
    config = net.configs[centre]
    config.write_text(config.read_text().replace(f"{centre}-k1.key.json", f"{centre}-k2.key.json"))
    _reload(net, net.national)  # national first: it must know the key before it is used
    _reload(net, centre)
    assert until(lambda: _logged(net, centre, "signing key rotated") == 1)

    net.publish_all(write_updates(tmp_path / "second.jsonl", second))
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    assert net.store(net.national).stats()["rejected_security"] == 0
    assert net.procs[centre].alive()  # no restart
    # What national holds of the second half is attested with the new key.
    national = net.store(net.national)
    for origin in net.origins:
        [last] = national.changes(origin, national.chain_heads()[origin][0], 1)
        assert f"{centre}-k2".encode() in last and f"{centre}-k1".encode() not in last

    # A key file the registry does not list is refused; the centre keeps k2.
    net.cli("keys", "generate", "--owner", centre, "--key-id", f"{centre}-k3", "--out", "keys")
    config.write_text(config.read_text().replace(f"{centre}-k2.key.json", f"{centre}-k3.key.json"))
    net.procs[centre].signal(signal.SIGHUP)
    assert until(lambda: _logged(net, centre, "signing key reload refused") == 1)
    assert f"keeping key '{centre}-k2'" in net.procs[centre].log.read_text(errors="replace")
