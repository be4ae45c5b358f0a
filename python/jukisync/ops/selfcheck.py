"""A node's security self-check (自己点検), scored 0–3 per item as the seed's checklist.

Each check looks at what a node can verify about itself from its config file and
returns an `Item`: a score (3 good, 2 acceptable with a recommendation, 1 weak, 0
failing), what was found, and what to do to raise it. Checks that do not apply to a
role are left out rather than scored. The scoring rules are small pure functions
(`score_*`), so they are tested over their whole range.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from yarl import URL

from jukisync import _core, clock
from jukisync.config import (
    AggregatorConfig,
    BrokerConfig,
    MunicipalityConfig,
    NationalConfig,
    NodeConfigFile,
)
from jukisync.ops import snapshots
from jukisync.transport.amqp import ssl_context
from jukisync.trust import keys, storedir

__all__ = [
    "BACKUP_PREFIX",
    "Item",
    "backup_time",
    "run_checks",
    "score_backup_age",
    "score_disk",
    "score_key_age",
    "score_key_mode",
    "score_registry_expiry",
]

US_PER_DAY = 86_400 * 1_000_000
REFRESH_YEARS = 6  # equipment and keys are replaced every six years (機器更新)
BACKUP_PREFIX = "jukisync-backup-"


@dataclass(frozen=True)
class Item:
    name: str
    score: int  # 0..3
    finding: str
    advice: str = ""  # what raises the score; empty at 3


# --- scoring rules (pure) --------------------------------------------------------------


def score_key_mode(mode: int) -> tuple[int, str]:
    """A secret key file: owner-only is the rule; group access weakens, world fails."""
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return 0, "chmod 600 the key file: anyone on the machine can read it"
    if mode & (stat.S_IRGRP | stat.S_IWGRP):
        return 1, "chmod 600 the key file: its group can read it"
    if mode & 0o177:
        return 2, "chmod 600 the key file (it has execute bits)"
    return 3, ""


def score_key_age(age_days: float) -> tuple[int, str]:
    """Keys follow the six-year equipment refresh: plan the rotation in year five."""
    years = age_days / 365.25
    if years >= REFRESH_YEARS:
        return 0, "rotate the key now (`jukisync keys rotate`): it is past the refresh"
    if years >= REFRESH_YEARS - 1:
        return 2, "plan the key rotation: the six-year refresh is within a year"
    return 3, ""


def score_registry_expiry(days_left: list[float]) -> tuple[int, str]:
    """Days until each unrevoked key of the registry expires (negatives: expired)."""
    soonest = min(days_left, default=None)
    if soonest is None or soonest > 90:
        return 3, ""
    if soonest <= 0:
        return 0, "publish a registry without the expired keys, or with their successors"
    if soonest <= 30:
        return 1, "rotate the keys expiring within 30 days and publish the new registry"
    return 2, "rotate the keys expiring within 90 days"


def score_backup_age(age_days: float | None) -> tuple[int, str]:
    if age_days is None:
        return 0, "back the store up (`jukisync backup --dir DIR`), e.g. daily from a timer"
    if age_days <= 1:
        return 3, ""
    if age_days <= 7:
        return 2, "back up daily: the last backup is more than a day old"
    if age_days <= 30:
        return 1, "back up daily: the last backup is more than a week old"
    return 0, "the last backup is more than a month old: back up now"


def score_disk(free_fraction: float, free_bytes: int, needed_bytes: int) -> tuple[int, str]:
    """Headroom on the data volume: the store may grow to its map size, and a
    backup or snapshot needs about the store's size again."""
    if free_fraction < 0.05 or free_bytes < needed_bytes // 2:
        return 0, "free disk space now: the store or its next backup may not fit"
    if free_fraction < 0.10:
        return 1, "add disk space: less than 10% free"
    if free_fraction < 0.20 or free_bytes < needed_bytes:
        return 2, "plan more disk space: less than 20% free, or less than the store's size"
    return 3, ""


# --- checks -----------------------------------------------------------------------------


def _key_items(path: Path, now: int) -> list[Item]:
    try:
        mode = path.stat().st_mode
        pair = keys.read_key_file(path, check_permissions=False)
    except (OSError, keys.KeyFileError) as exc:
        return [Item("signing key", 0, f"{path}: {exc}", "fix the key file named in the config")]
    score, advice = score_key_mode(mode)
    items = [Item("key file permissions", score, f"{path}: mode {stat.S_IMODE(mode):04o}", advice)]
    age_days = (now - pair.created_at) / US_PER_DAY
    score, advice = score_key_age(age_days)
    items.append(
        Item("key age", score, f"{pair.key_id} created {age_days / 365.25:.1f} years ago", advice)
    )
    return items


def _registry_item(config: AggregatorConfig | NationalConfig, now: int) -> Item:
    try:
        root = storedir.read_root_public(config.trust.root_public_key)
        body = keys.read_registry(config.trust.registry, root)
    except (storedir.StoreDirError, keys.KeyFileError) as exc:
        return Item("registry keys", 0, str(exc), "fix trust.registry / trust.root_public_key")
    days_left = [
        (e.not_after - now) / US_PER_DAY
        for e in body.entries
        if e.not_after is not None and e.revoked_at is None
    ]
    score, advice = score_registry_expiry(days_left)
    expiring = sum(d <= 90 for d in days_left)
    finding = (
        f"registry v{body.version}: {len(body.entries)} keys, {expiring} expire within 90 days"
    )
    return Item("registry keys", score, finding, advice)


def _tls_item(broker: BrokerConfig) -> Item:
    url = URL(broker.addresses[0])  # every address has the same scheme (checked)
    if url.scheme == "amqps":
        if broker.ca_file:
            return Item("broker TLS", 3, f"amqps to {url.host}, private CA {broker.ca_file}")
        return Item("broker TLS", 3, f"amqps to {url.host}, verified against the system CAs")
    local = url.host in ("127.0.0.1", "localhost", "::1")
    if local:
        return Item(
            "broker TLS",
            1,
            f"plain amqp to {url.host} (same machine)",
            "use amqps:// with broker.ca_file even on one machine",
        )
    return Item("broker TLS", 0, f"plain amqp to {url.host}", "use amqps:// with broker.ca_file")


async def _probe_privilege(broker: BrokerConfig) -> Item:
    """Try what no node needs: declaring an exchange of a made-up name. A least-
    privilege broker user is refused; the probe removes what it made otherwise."""
    name = f"jukisync-selfcheck-{uuid.uuid4().hex[:12]}"
    connection = None
    failure: BaseException | None = None
    for address in broker.addresses:  # a cluster: the first node that answers
        url = URL(address)
        try:
            connection = await aio_pika.connect(
                address,
                ssl_context=ssl_context(broker) if url.scheme == "amqps" else None,
                client_properties={"connection_name": "jukisync selfcheck"},
                timeout=broker.connect_timeout_s,
            )
            break
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            failure = exc
    if connection is None:
        return Item(
            "broker least privilege",
            0,
            f"cannot connect to {url.host}:{url.port}: {failure}",
            "start the broker or fix broker.url / broker.urls; then rerun",
        )
    try:
        channel = await connection.channel()
        try:
            exchange = await channel.declare_exchange(name, auto_delete=True)
        except (aiormq.exceptions.ChannelAccessRefused, aio_pika.exceptions.ChannelClosed):
            return Item(
                "broker least privilege",
                3,
                f"user {url.user!r} was refused an exchange outside jukisync's names",
            )
        await exchange.delete()
        return Item(
            "broker least privilege",
            0,
            f"user {url.user!r} may configure anything on vhost {url.path or '/'}",
            "give each node its own broker user limited to jukisync's names "
            "(rabbitmqctl set_permissions with configure/write/read patterns)",
        )
    finally:
        await connection.close()


def _audit_item(store: _core.Store) -> Item:
    result = store.audit_verify()
    if result.ok:
        return Item("audit chain", 3, f"{result.entries} entries verified")
    problems = "; ".join(f"#{i}: {p}" for i, p in result.problems[:3])
    return Item(
        "audit chain",
        0,
        f"broken: {problems}",
        "stop answering queries; compare with the kept checkpoints (`jukisync audit verify`)",
    )


def _store_state_item(store: _core.Store) -> Item:
    stats = store.stats()
    halted, open_q = stats.get("halted", 0), stats.get("quarantine_open", 0)
    if halted:
        return Item(
            "store state",
            1,
            f"{halted} origins halted, {open_q} quarantine entries open",
            "resolve the halts (`jukisync quarantine list`, release or drop)",
        )
    if open_q:
        return Item(
            "store state",
            2,
            f"{open_q} quarantine entries open",
            "review the quarantine (`jukisync quarantine list`)",
        )
    return Item("store state", 3, f"{stats.get('records', 0):,} records, nothing halted or open")


def _store_items(store_dir: Path, map_size: int) -> list[Item]:
    if not (store_dir / "data.mdb").is_file():
        return [Item("store state", 0, f"no store at {store_dir}", "start the node once")]
    try:
        store = _core.Store(
            str(store_dir),
            registry=storedir.load_registry(store_dir),
            require_attestation=False,
            map_size=map_size,
        )
    except (storedir.StoreDirError, _core.JukisyncError) as exc:
        return [Item("store state", 0, f"cannot open {store_dir}: {exc}", "repair or restore it")]
    items = [_audit_item(store), _store_state_item(store)]
    inconsistent = snapshots.consistency_problems(store)
    items.append(
        Item("store check", 3, "consistent (`jukisync check`)")
        if not inconsistent
        else Item(
            "store check",
            0,
            f"{len(inconsistent)} inconsistencies: {inconsistent[0]}",
            "run `jukisync check` and repair from a peer (`jukisync reconcile --repair`)",
        )
    )
    del store  # one environment per path and process: close before anyone reopens
    return items


def backup_time(path: Path) -> int | None:
    """When a backup was taken (µs), from its name (`backup` writes the time there
    from jukisync's clock, so a fixed or faked clock agrees with it)."""
    stamp = path.name.rsplit("-", 1)[-1].removesuffix(".tar")
    try:
        moment = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _backup_item(backups: Path | None, now: int) -> Item:
    if backups is None:
        return Item("last backup", 0, "no backup directory given", "pass --backups DIR")
    taken = [backup_time(p) for p in backups.glob(f"{BACKUP_PREFIX}*.tar")]
    newest = max((t for t in taken if t is not None), default=None)
    age = None if newest is None else (now - newest) / US_PER_DAY
    score, advice = score_backup_age(age)
    finding = "no backups" if age is None else f"newest {age:.1f} days old in {backups}"
    return Item("last backup", score, finding, advice)


def _clock_item(run: Callable[[list[str]], str | None]) -> Item:
    synced = run(["timedatectl", "show", "--property=NTPSynchronized", "--value"])
    if synced == "yes":
        return Item("clock", 3, "synchronised by NTP (timedatectl)")
    if synced == "no":
        return Item(
            "clock",
            0,
            "not synchronised (timedatectl)",
            "enable NTP (systemd-timesyncd or chrony): bundle and attestation times bound "
            "what a tier accepts",
        )
    return Item(
        "clock",
        1,
        "synchronisation unknown (no timedatectl answer)",
        "run an NTP client and make its state visible (timedatectl)",
    )


def _run_quietly(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return done.stdout.strip()


def _disk_item(data_dir: Path, map_size: int | None) -> Item:
    probe = data_dir if data_dir.exists() else data_dir.parent
    usage = shutil.disk_usage(probe)
    data = data_dir / "data.mdb"
    size = data.stat().st_size if data.exists() else 0
    needed = size if map_size is None else max(size, min(map_size, size * 2))
    score, advice = score_disk(usage.free / usage.total, usage.free, needed)
    finding = (
        f"{usage.free / (1 << 30):.1f} GiB free of {usage.total / (1 << 30):.1f} GiB; "
        f"data {size / (1 << 20):.1f} MiB"
    )
    return Item("disk headroom", score, finding, advice)


def run_checks(
    config: NodeConfigFile,
    *,
    backups: Path | None,
    probe_broker: bool = True,
    run: Callable[[list[str]], str | None] = _run_quietly,
) -> list[Item]:
    """Every check that applies to this node's role, in the checklist's order."""
    now = clock.now_us()
    items: list[Item] = []
    if isinstance(config, AggregatorConfig | MunicipalityConfig):
        items += _key_items(Path(config.signing_key), now)
    if isinstance(config, AggregatorConfig | NationalConfig):
        items.append(_registry_item(config, now))
    items.append(_tls_item(config.broker))
    if probe_broker:
        items.append(asyncio.run(_probe_privilege(config.broker)))
    if isinstance(config, AggregatorConfig | NationalConfig):
        store_dir = Path(config.store)
        items += _store_items(store_dir, config.limits.map_size)
        items.append(_backup_item(backups, now))
        items.append(_clock_item(run))
        items.append(_disk_item(store_dir, config.limits.map_size))
    else:
        items.append(_backup_item(backups, now))
        items.append(_clock_item(run))
        items.append(_disk_item(Path(config.outbox), None))
    for item in items:
        assert 0 <= item.score <= 3 and (item.score == 3) == (not item.advice), item
    return items
