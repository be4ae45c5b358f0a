"""Registry reloads that must be refused, and what a reload tells a centre about itself.

- Any change to a signed registry file is refused (a property over every byte), and
  the holder still takes a genuine newer registry afterwards.
- Over RabbitMQ, a running centre and national sent SIGHUP with a tampered registry,
  an older version and a missing file: each refusal is logged and counted, the
  version in use stays, and the daemons keep applying (the second half of the stream
  converges, checked against the reference).
- A reload that revokes the centre's own key is taken (the registry's keeper
  decides) and its health says why national will refuse its attestations.
"""

from __future__ import annotations

import json
import os
import random
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemonkit import Net, assert_matches_reference, synthetic_updates, until, write_updates
from jukisync import _core
from jukisync.tier.registry_reload import RegistryHolder, ReloadRefused
from jukisync.trust import keys
from jukisync.wire.messages import KeyEntry, Update
from netkit import KeyRing

YAMAGUCHI_CITY = "352039"


def _registry(ring: KeyRing, version: int) -> bytes:
    entries = [
        KeyEntry(owner=o, key_id=k, public_key=_core.public_key(s), not_before=0)
        for o, (k, s) in ring.keys.items()
    ]
    return keys.build_registry(entries, ring.root, version, 0)


def test_any_changed_byte_of_a_registry_is_refused(tmp_path: Path) -> None:
    ring = KeyRing()
    ring.add(YAMAGUCHI_CITY)
    root = _core.public_key(ring.root)
    first = _registry(ring, 1)
    store = _core.Store(
        str(tmp_path / "s"), role="national", registry=_core.KeyRegistry(first, root)
    )
    holder = RegistryHolder(store, str(tmp_path / "s"), 1, first)
    newer = _registry(ring, 2)

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def tampered_is_refused(data: st.DataObject) -> None:
        at = data.draw(st.integers(0, len(newer) - 1), label="byte")
        value = data.draw(st.integers(0, 255).filter(lambda b: b != newer[at]), label="value")
        tampered = newer[:at] + bytes([value]) + newer[at + 1 :]
        with pytest.raises(ReloadRefused):
            holder.replace(tampered, root)
        assert holder.version == 1

    tampered_is_refused()
    assert holder.replace(newer, root)  # the genuine one still goes in
    assert holder.version == 2


# --- running daemons -------------------------------------------------------------------


def _get(port: int, path: str) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            body: bytes = r.read()
    except urllib.error.HTTPError as exc:  # 503 while degraded: still a JSON body
        body = exc.read()
    return body


def _health(port: int) -> dict[str, object]:
    result: dict[str, object] = json.loads(_get(port, "/healthz"))
    return result


def _metric(port: int, name: str) -> float | None:
    for line in _get(port, "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _log(net: Net, name: str) -> str:
    return net.procs[name].log.read_text(errors="replace")  # all of it, not the tail


def _hup_until_logged(net: Net, names: list[str], line: str) -> None:
    """SIGHUP each daemon and wait until each logged `line` once more."""
    before = {n: _log(net, n).count(line) for n in names}
    for name in names:
        net.procs[name].signal(signal.SIGHUP)
    assert until(lambda: all(_log(net, n).count(line) > before[n] for n in names)), "\n".join(
        _log(net, n)[-3000:] for n in names
    )


def _working(health: dict[str, object]) -> bool:
    return bool(health["connected"] and health["consuming"] and health["failure"] is None)


@pytest.mark.broker
def test_refused_reloads_keep_the_registry_and_the_flow(
    broker_url: str, tmp_path: Path, rng: random.Random
) -> None:
    net = Net(tmp_path, broker_url, origins=(YAMAGUCHI_CITY,), http=True)
    try:
        [centre] = net.centres
        tiers = [centre, net.national]
        ports = [net.ports[n] for n in tiers]
        registry_file = net.root / "keys" / "registry.bin"
        root = keys.load(net.root / "keys" / "root.key.json")
        issued = keys.read_registry(registry_file, root.public_key)

        def signed(version: int) -> bytes:
            return keys.build_registry(issued.entries, root.secret, version, keys.now_us())

        net.start_and_wait(*tiers)
        first, second = _halves(synthetic_updates(80, 80, seed=41, origins=(YAMAGUCHI_CITY,)))
        net.publish_all(write_updates(tmp_path / "first.jsonl", first))
        net.wait_converged(tiers)

        current = signed(2)  # a genuine reload first: version 2 in use
        registry_file.write_bytes(current)
        # As the README does it: the pid from the store's lock file.
        pids = {n: int((net.store_dir(n) / "daemon.lock").read_text().split()[0]) for n in tiers}
        assert pids == {n: net.procs[n].pid for n in tiers}
        for pid in pids.values():
            os.kill(pid, signal.SIGHUP)
        assert until(lambda: all("registry reloaded" in _log(net, n) for n in tiers))
        assert all(_health(p)["registry_version"] == 2 for p in ports)

        newer = signed(3)
        at = rng.randrange(len(newer))
        tampered = newer[:at] + bytes([newer[at] ^ (1 << rng.randrange(8))]) + newer[at + 1 :]
        cases = {"tampered": tampered, "older": signed(1), "missing": None}
        for case, content in cases.items():
            if content is None:
                registry_file.unlink()
            else:
                registry_file.write_bytes(content)
            _hup_until_logged(net, tiers, "registry reload refused, keeping version 2")
            for port in ports:
                health = _health(port)
                assert health["registry_version"] == 2, (case, health)
                assert _working(health), (case, health)
            assert all(net.procs[n].alive() for n in tiers), case
        registry_file.write_bytes(current)
        for port in ports:
            assert _metric(port, "jukisync_registry_reload_failures_total") == len(cases)
            assert _metric(port, "jukisync_registry_version") == 2

        # Still applying, under version 2: the rest of the stream converges.
        net.publish_all(write_updates(tmp_path / "second.jsonl", second))
        net.wait_converged(tiers)
        assert_matches_reference(net, tiers, net.reference())

        # The keeper revokes this centre's key: the reload is taken, and the centre's
        # health says national will refuse what it attests.
        net.cli("keys", "revoke", "--root", "keys/root.key.json", "--registry",
                "keys/registry.bin", "--key-id", f"{centre}-k1")  # fmt: skip
        _hup_until_logged(net, [centre], "registry reloaded")
        assert "signing key" in _log(net, centre)
        health = _health(net.ports[centre])
        assert health["registry_version"] == 3
        assert health["status"] == "degraded", health
        reasons = health["reasons"]
        assert isinstance(reasons, list)
        assert any(f"{centre}-k1" in r for r in reasons), health
    finally:
        net.stop_all()
        net.remove_topology()


def _halves(updates: list[Update]) -> tuple[list[Update], list[Update]]:
    mid = len(updates) // 2
    return updates[:mid], updates[mid:]
