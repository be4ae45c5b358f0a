"""Registry reload on SIGHUP: the rules (`RegistryHolder`) and a running daemon over
RabbitMQ taking a new municipality's key without a restart."""

from __future__ import annotations

import gc
import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import Net, synthetic_updates, until, write_updates
from jukisync import _core
from jukisync.tier.registry_reload import RegistryHolder, ReloadRefused
from jukisync.trust import keys, storedir
from jukisync.wire.messages import KeyEntry
from netkit import KeyRing

HAGI = "352047"  # 萩市: joins the network while it runs


def _registry(ring: KeyRing, version: int, *, without: str | None = None) -> bytes:
    entries = [
        KeyEntry(owner=o, key_id=k, public_key=_core.public_key(s), not_before=0)
        for o, (k, s) in ring.keys.items()
        if o != without
    ]
    return keys.build_registry(entries, ring.root, version, 0)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[RegistryHolder, KeyRing]]:
    ring = KeyRing()
    ring.add("352039")
    first = _registry(ring, 2)
    store = _core.Store(
        str(tmp_path / "s"),
        role="national",
        registry=_core.KeyRegistry(first, _core.public_key(ring.root)),
    )
    yield RegistryHolder(store, str(tmp_path / "s"), 2, first), ring
    del store
    gc.collect()


def test_a_newer_registry_is_swapped_in_and_written_beside_the_store(
    holder: tuple[RegistryHolder, KeyRing], tmp_path: Path
) -> None:
    h, ring = holder
    root = _core.public_key(ring.root)
    assert not h.replace(h.registry_bytes, root)  # unchanged: nothing to do
    ring.add(HAGI)
    newer = _registry(ring, 3)
    assert h.replace(newer, root)
    assert h.version == 3
    assert storedir.load_registry(tmp_path / "s").version == 3
    assert {m.name: m.samples[0].value for m in h.collect()}["jukisync_registry_version"] == 3


@pytest.mark.parametrize("case", ["older", "same-version", "foreign-root", "garbage"])
def test_refused_registries_keep_the_one_in_use(
    holder: tuple[RegistryHolder, KeyRing], case: str
) -> None:
    h, ring = holder
    root = _core.public_key(ring.root)
    ring.add(HAGI)
    data, key = {
        "older": (_registry(ring, 1), root),
        "same-version": (_registry(ring, 2), root),
        "foreign-root": (_registry(ring, 5), _core.public_key(_core.generate_signing_key())),
        "garbage": (b"\x00not a registry", root),
    }[case]
    with pytest.raises(ReloadRefused):
        h.replace(data, key)
    assert h.version == 2
    assert not h.reload(lambda: (data, key))
    assert h.failures == 1


# --- a running daemon ------------------------------------------------------------------


def _health(port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            body: dict[str, object] = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    return body


@pytest.mark.broker
def test_sighup_admits_a_new_municipality_without_a_restart(
    broker_url: str, tmp_path: Path
) -> None:
    net = Net(tmp_path, broker_url, origins=("352039", HAGI), http=True)
    try:
        [centre] = net.centres
        root = keys.load(net.root / "keys" / "root.key.json")
        registry_file = net.root / "keys" / "registry.bin"

        # Built from the registry the network was set up with (whatever its entries
        # carry), with 萩市's key left out of version 1.
        issued = keys.read_registry(registry_file, root.public_key)

        def registry(version: int, *, with_hagi: bool) -> bytes:
            entries = [e for e in issued.entries if with_hagi or e.owner != HAGI]
            return keys.build_registry(entries, root.secret, version, keys.now_us())

        registry_file.write_bytes(registry(1, with_hagi=False))  # 萩市 not admitted yet
        net.start_and_wait(net.national, centre)
        for name in (centre, net.national):
            assert _health(net.ports[name])["registry_version"] == 1
        assert _health(net.ports[centre])["signing_key_id"] == f"{centre}-k1"
        assert _health(net.ports[net.national])["signing_key_id"] is None

        changes = synthetic_updates(60, 60, seed=21, origins=("352039", HAGI))
        mine_updates = [u for u in changes if u.municipality == HAGI]
        mine = write_updates(tmp_path / "hagi.jsonl", mine_updates)
        first = net.publish(HAGI, mine)
        assert first.wait() == 0, first.output()  # the broker took them; the centre refused
        assert until(lambda: net.store(centre).stats()["rejected_security"] > 0)
        assert HAGI not in net.store(centre).chain_heads()

        # The operator admits 萩市 (registry v2) and reloads both daemons.
        registry_file.write_bytes(registry(2, with_hagi=True))
        for name in (centre, net.national):
            net.procs[name].signal(signal.SIGHUP)
        ports = [net.ports[centre], net.ports[net.national]]
        assert until(lambda: all(_health(p)["registry_version"] == 2 for p in ports))
        status = json.loads(
            net.cli("status", "--store", str(net.store_dir(centre)), "--json").stdout
        )
        assert status["registry_version"] == 2

        # 萩市 publishes again: the centre sees the gap its refused bundles left and
        # asks for them; the publisher (--follow) resends them from its outbox.
        rest = [u for u in synthetic_updates(10, 0, seed=22, origins=(HAGI,))]
        second = net.publish(HAGI, write_updates(tmp_path / "hagi2.jsonl", rest), "--follow")
        expected = len(mine_updates) + len(rest)
        assert until(
            lambda: all(
                net.store(n).chain_heads().get(HAGI, (0, b""))[0] == expected
                for n in (centre, net.national)
            )
        ), second.output()
        second.signal(signal.SIGTERM)
        assert second.wait() == 0, second.output()
        assert net.procs[centre].alive() and net.procs[net.national].alive()  # no restart

        # A bad registry is refused on reload, the daemon keeps version 2.
        registry_file.write_bytes(b"garbage")
        net.procs[centre].signal(signal.SIGHUP)
        assert until(lambda: "registry reload refused" in net.procs[centre].output())
        assert _health(net.ports[centre])["registry_version"] == 2
    finally:
        net.stop_all()
        net.remove_topology()
