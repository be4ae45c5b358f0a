"""A centre's own signing key, rotated without a restart (SIGHUP, after the registry).

The runbook (README "Keys and trust without restarts"): generate the centre's new key,
`jukisync keys rotate --at T` in the registry (the old key stops where the new one
starts), point the centre config's `signing_key` at the new key file (or replace the
file it names), distribute `registry.bin`, and reload national and then the centre
before T. On that reload the centre reads its config's key file again; when it holds
a new key of this centre that the registry in use lists, the store attests what it
receives from the key's `not_before` on with it, and the centre signs the heads it
relays with it from then. A rotation makes exactly one of the two keys valid at each
instant, so the switch follows the registry's time, not the moment of the reload.

Refused, keeping the key in use (logged, counted with the registry reload failures
so `JukisyncRegistryReloadRefused` fires): a key file that does not load, belongs to
another owner, or whose key the registry does not list for this centre, or lists
revoked or expired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

from jukisync import _core, clock
from jukisync.config import AggregatorConfig, ConfigError
from jukisync.config import load as load_config
from jukisync.tier.catchup import CatchUp, CentreSigner
from jukisync.trust import keys
from jukisync.wire.messages import KeyEntry, RegistryBody, SignedRegistry

__all__ = ["KeyRefused", "Rotation", "rotate_own_key", "signing_key_path"]

log = logging.getLogger("jukisync.registry")


class KeyRefused(Exception):
    """The key file is not taken; the key in use stays."""


@dataclass(frozen=True, slots=True)
class Rotation:
    key_id: str
    not_before: int  # µs: what is received from then on is attested with it

    @property
    def starts(self) -> str:
        moment = dt.datetime.fromtimestamp(self.not_before / 1e6, dt.UTC)
        return moment.isoformat(timespec="seconds")


def signing_key_path(config: AggregatorConfig, config_path: Path | None) -> str:
    """The key file the centre's config names now (read again: the operator may have
    pointed it at the new key); the one it started with without a config file."""
    if config_path is None:
        return config.signing_key
    try:
        fresh = load_config(config_path)
    except ConfigError as exc:
        raise KeyRefused(f"config: {exc}") from None
    if not isinstance(fresh, AggregatorConfig) or fresh.id != config.id:
        raise KeyRefused(f"{config_path} is no longer the config of centre {config.id!r}")
    return fresh.signing_key


def _entry(registry_bytes: bytes, key_id: str) -> KeyEntry | None:
    """The registry entry of `key_id` (the bytes were verified when they were taken)."""
    signed = msgspec.msgpack.decode(registry_bytes, type=SignedRegistry)
    body = msgspec.msgpack.decode(signed.body, type=RegistryBody)
    return next((e for e in body.entries if e.key_id == key_id), None)


def rotate_own_key(
    centre: str,
    key_file: str,
    store: _core.Store,
    catchup: CatchUp,
    registry_bytes: bytes,
) -> Rotation | None:
    """Take the key in `key_file` if it is a new key of `centre` the registry lists;
    None when it is the key in use (or already scheduled). Raises KeyRefused."""
    try:
        pair = keys.load(key_file)
    except keys.KeyFileError as exc:
        raise KeyRefused(f"signing_key: {exc}") from None
    if pair.owner != centre:
        raise KeyRefused(f"signing_key: {key_file} belongs to {pair.owner!r}, not to {centre!r}")
    signer = catchup.signer
    now = clock.now_us()
    # In use now, or already taken for later (the key at the end of time is the last
    # one scheduled): nothing to do.
    if pair.key_id in (store.centre_key_id(now), store.centre_key_id(2**64 - 1)):
        return None
    entry = _entry(registry_bytes, pair.key_id)
    if entry is None or entry.owner != centre or entry.public_key != pair.public_key:
        raise KeyRefused(
            f"signing_key: key {pair.key_id!r} of {centre!r} is not in the registry in use: "
            "add it (`jukisync keys rotate`) and reload the registry first"
        )
    if entry.revoked_at is not None or (entry.not_after is not None and entry.not_after <= now):
        raise KeyRefused(f"signing_key: key {pair.key_id!r} is revoked or expired")
    store.set_centre_key(pair.key_id, pair.secret, entry.not_before)
    new_signer = CentreSigner(centre, pair.key_id, pair.secret)
    if signer is None or entry.not_before <= now:
        catchup.signer = new_signer
    else:  # the heads it relays: signed with the new key once that key is valid
        delay_s = (entry.not_before - now) / 1e6
        asyncio.get_running_loop().call_later(delay_s, setattr, catchup, "signer", new_signer)
    return Rotation(pair.key_id, entry.not_before)
