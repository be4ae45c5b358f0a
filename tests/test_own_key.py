"""A centre's own key rotated on reload (`tier/own_key.py`): what is taken, what is
refused, and when the new key starts attesting. The daemon over RabbitMQ:
tests/test_key_runbooks.py."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jukisync import _core
from jukisync.tier.catchup import CentreSigner
from jukisync.tier.own_key import KeyRefused, rotate_own_key
from jukisync.trust import keys

CENTRE = "centre-east"
T = 1_900_000_000_000_000  # µs: where the rotation puts k2's start


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[tuple[_core.Store, Any, Path, keys.KeyPair]]:
    root = keys.generate("root")
    k1 = keys.generate(CENTRE, f"{CENTRE}-k1")
    k2 = keys.generate(CENTRE, f"{CENTRE}-k2")
    keys.save(k1, tmp_path)
    keys.save(k2, tmp_path)
    old = k1.public.entry(not_before=0, prefectures=["35"])
    new = k2.public.entry(not_before=T, prefectures=[])
    entries = keys.rotate([old], old.key_id, new)
    registry = keys.build_registry(entries, root.secret, 2, 0)
    store = _core.Store(
        str(tmp_path / "store"),
        role="aggregator",
        registry=_core.KeyRegistry(registry, root.public_key),
        centre_id=CENTRE,
        centre_key=k1.secret,
        centre_key_id=k1.key_id,
    )
    catchup = SimpleNamespace(signer=CentreSigner(CENTRE, k1.key_id, k1.secret))
    (tmp_path / "registry.bin").write_bytes(registry)
    yield store, catchup, tmp_path, k2
    del store
    gc.collect()


def _rotate(store: _core.Store, catchup: Any, key_file: Path, registry: bytes) -> Any:
    return rotate_own_key(CENTRE, str(key_file), store, catchup, registry)


def test_a_listed_new_key_attests_from_its_start(
    centre: tuple[_core.Store, Any, Path, keys.KeyPair],
) -> None:
    store, catchup, directory, k2 = centre
    registry = (directory / "registry.bin").read_bytes()
    secret_file = keys.paths_for(directory, k2.key_id)[0]

    async def run() -> Any:  # on a loop: the relayed heads switch keys at T by a timer
        return _rotate(store, catchup, secret_file, registry)

    rotation = asyncio.run(run())
    assert rotation.key_id == k2.key_id and rotation.not_before == T
    assert store.centre_key_id(T - 1) == f"{CENTRE}-k1"  # until the registry's switch
    assert store.centre_key_id(T) == k2.key_id
    # Taken already: a second reload changes nothing.
    assert _rotate(store, catchup, secret_file, registry) is None


def test_keys_not_taken(centre: tuple[_core.Store, Any, Path, keys.KeyPair]) -> None:
    store, catchup, directory, k2 = centre
    registry = (directory / "registry.bin").read_bytes()
    own = keys.paths_for(directory, f"{CENTRE}-k1")[0]
    assert _rotate(store, catchup, own, registry) is None  # the key in use
    stranger = keys.generate("centre-west", "centre-west-k1")
    keys.save(stranger, directory)
    with pytest.raises(KeyRefused, match="belongs to 'centre-west'"):
        _rotate(store, catchup, keys.paths_for(directory, stranger.key_id)[0], registry)
    unlisted = keys.generate(CENTRE, f"{CENTRE}-k3")
    keys.save(unlisted, directory)
    with pytest.raises(KeyRefused, match="not in the registry in use"):
        _rotate(store, catchup, keys.paths_for(directory, unlisted.key_id)[0], registry)
    with pytest.raises(KeyRefused, match="signing_key"):
        _rotate(store, catchup, directory / "missing.key.json", registry)
    # A file claiming k2's id with another key pair is not k2.
    forged = keys.generate(CENTRE, k2.key_id)
    forged_dir = directory / "forged"
    keys.save(forged, forged_dir)
    with pytest.raises(KeyRefused, match="not in the registry in use"):
        _rotate(store, catchup, keys.paths_for(forged_dir, k2.key_id)[0], registry)
    assert store.centre_key_id(T + 1) == f"{CENTRE}-k1"  # nothing was taken
