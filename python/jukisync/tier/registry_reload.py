"""Reloading the key registry on SIGHUP (DESIGN.md §7), without a restart.

`jukisync keys registry` writes a new signed registry; `kill -HUP` (or `systemctl
reload`) makes the daemon read it again from `trust.registry`, verify it against the
root key, and swap it into the store atomically (bundles in a batch being applied
finish under the registry they started with). New municipalities, rotated keys and
revocations take effect from the next batch.

Refused, keeping the registry in use (logged; `jukisync_registry_reload_failures_total`
counts them): a file that does not verify against the root key, and a version lower
than the one in use (replaying an old registry would bring revoked keys back). The
same version with other content is refused too: a registry's version names its
content.

The version in use is `jukisync_registry_version` and in `/healthz`; the registry is
written beside the store (`registry.bin`), so `jukisync status` and the other tools
see what the daemon uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jukisync import _core
from jukisync.trust import storedir

__all__ = ["RegistryHolder", "ReloadRefused"]

log = logging.getLogger("jukisync.registry")


class ReloadRefused(Exception):
    """The new registry is not taken; the one in use stays."""


@dataclass(eq=False)  # identity: a Prometheus collector is registered by identity
class RegistryHolder:
    """The registry a daemon's store uses, and how to replace it."""

    store: _core.Store
    store_dir: str
    version: int
    registry_bytes: bytes
    failures: int = 0
    reloads: int = 0
    # Others verifying with the registry (the node's head-announcement checks).
    also: list[Callable[[_core.KeyRegistry], None]] = field(default_factory=list)

    def replace(self, registry_bytes: bytes, root_public: bytes) -> bool:
        """Swap in a new registry; False when it is the one in use (same bytes).
        Raises ReloadRefused and keeps the current one otherwise."""
        try:
            registry = _core.KeyRegistry(registry_bytes, root_public)
        except _core.JukisyncError as exc:
            raise ReloadRefused(f"does not verify against the root key: {exc}") from None
        if registry_bytes == self.registry_bytes:
            return False
        if registry.version < self.version:
            raise ReloadRefused(
                f"version {registry.version} is older than the version in use, {self.version}"
            )
        if registry.version == self.version:
            raise ReloadRefused(
                f"version {registry.version} is in use with other content: give a new "
                "registry a new version"
            )
        self.store.set_registry(registry)
        for user in self.also:
            user(registry)
        storedir.write_trust(self.store_dir, registry_bytes, root_public)
        self.version, self.registry_bytes = registry.version, registry_bytes
        self.reloads += 1
        return True

    def reload(self, load: Callable[[], tuple[bytes, bytes]]) -> bool:
        """`load` gives (registry bytes, root public key) from the config's files. Logs
        the outcome; True when a new registry is in use."""
        try:
            registry_bytes, root_public = load()
            changed = self.replace(registry_bytes, root_public)
        except (ReloadRefused, OSError, ValueError) as exc:
            self.failures += 1
            log.error("registry reload refused, keeping version %d: %s", self.version, exc)
            return False
        if changed:
            log.info("registry reloaded: version %d in use", self.version)
        else:
            log.info("registry reload: version %d unchanged", self.version)
        return changed

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "jukisync_registry_version", "Version of the key registry in use", self.version
        )
        yield CounterMetricFamily(
            "jukisync_registry_reload_failures",
            "Registry reloads refused (the registry in use was kept)",
            self.failures,
        )
