"""Test kit for the daemons as processes: keys, configs, data, processes, stores.

`Net` lays out one test's network in a temporary directory (keys and a registry
signed by a fresh root key, a config per node, all in a namespace of their own on
the broker), starts `jukisync run` and `jukisync publish` as subprocesses, and reads
the stores from the test process (LMDB allows readers in other processes).

Every wait polls a condition with a bounded timeout; nothing here sleeps to
synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import msgspec

from externaltools import close_connection_async, rabbitmqctl
from jukisync import _core
from jukisync.publisher.origin import Publisher
from jukisync.publisher.outbox import Outbox
from jukisync.sim import synth
from jukisync.tier.assembly import national_queue_name
from jukisync.transport.amqp import (
    AmqpOptions,
    AmqpTransport,
    QueueType,
    bundle_queue_name,
    control_queue_name,
    heads_queue_name,
    remove_topology,
)
from jukisync.trust import keys
from jukisync.wire.messages import Update

YAMAGUCHI_CITY = "352039"  # 山口市
UBE = "352021"  # 宇部市
CHIYODA = "131016"  # 千代田区
ORIGINS = (YAMAGUCHI_CITY, UBE, CHIYODA)
PREFECTURES = ("13", "35")
MAP_SIZE = 1 << 30
TIMEOUT = 60.0  # for convergence; generous for a loaded CI machine
# Heads announced and gaps repaired quickly, so the tests do not wait for defaults.
REPLICATION = (
    "announce_interval_s = 0.5\nresend_interval_s = 0.2\nanswer_wait_s = 2.0\n"
    "max_requests_per_s = 50.0"
)


def jukisync_command() -> list[str]:
    """The console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("jukisync")
    if script.exists():
        return [str(script)]
    found = shutil.which("jukisync")
    assert found, "the jukisync console script is not installed"
    return [found]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(predicate: Callable[[], bool], timeout: float = TIMEOUT, poll_s: float = 0.1) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def synthetic_updates(
    residents: int, changes: int, seed: int, origins: Sequence[str] = ORIGINS
) -> list[Update]:
    """A population and its change stream in `origins` only, as one file would hold."""
    munis = [m for m in synth.MUNICIPALITIES if m.code in origins]
    population = synth.generate_population(residents, seed, munis)
    stream = [u for _, u in synth.initial_load(population)]
    # Within 2024 (the population's date + a year): the tiers refuse future dates, and
    # every clock the suite runs at is later.
    changed = synth.generate_changes(population, changes, seed, max_span_days=365)
    stream += [u for _, u in changed]
    return stream


def write_updates(path: Path, updates: Iterable[Update]) -> Path:
    path.write_bytes(msgspec.json.Encoder().encode_lines(list(updates)))
    return path


class Net:
    """One test's network: keys, configs and processes, in its own broker namespace."""

    def __init__(
        self,
        root: Path,
        url: str | Sequence[str],
        *,
        node_urls: dict[str, Sequence[str]] | None = None,
        broker_extra: str = "",
        centres: Sequence[str] = ("east",),
        origins: Sequence[str] = ORIGINS,
        max_updates: int = 20,
        linger_s: float = 0.02,
        max_bundle_bytes: int = 1 << 20,
        http: bool = False,
        query_policy: Path | None = None,
        replication: str = REPLICATION,
        health: str = "",
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root = root
        # One broker, or the nodes of a cluster (`[broker] urls`); `node_urls` gives a
        # node ("centre", "national", "publisher") its own order of them, so a test
        # knows which broker node each connects to first.
        self.urls = (url,) if isinstance(url, str) else tuple(url)
        self.url = self.urls[0]
        self.node_urls = dict(node_urls or {})
        self.broker_extra = broker_extra
        self.namespace = f"t{tag}."
        self.centres = [f"{c}-{tag}" for c in centres]  # unique connection names
        self.national = f"national-{tag}"
        self.origins = list(origins)
        self.procs: dict[str, Proc] = {}
        self.ports: dict[str, int] = {}
        self._stores: dict[str, _core.Store] = {}
        self.replication = replication
        self.health = health
        self._make_keys()
        self.configs: dict[str, Path] = {}
        for centre in self.centres:
            self.configs[centre] = self._tier_config(
                centre, "aggregator", http=http, max_bundle_bytes=max_bundle_bytes
            )
        self.configs[self.national] = self._tier_config(
            self.national, "national", http=http, max_bundle_bytes=max_bundle_bytes + 4096
        )
        if query_policy is not None:  # national answers queries under this policy
            with self.configs[self.national].open("a") as config:
                config.write(f'\n[query]\npolicy = "{query_policy}"\n')
        for origin in self.origins:
            self.configs[origin] = self._municipality_config(
                origin, max_updates, linger_s, max_bundle_bytes
            )

    # --- layout ---------------------------------------------------------------------
    def _make_keys(self) -> None:
        key_dir = self.root / "keys"
        root = keys.generate("root", "root")
        keys.save(root, key_dir)
        self.pairs: dict[str, keys.KeyPair] = {}
        for owner in [*self.origins, *self.centres]:
            pair = keys.generate(owner, f"{owner}-k1")
            keys.save(pair, key_dir)
            self.pairs[owner] = pair
        prefectures = sorted({o[:2] for o in self.origins})
        entries = keys.entries_for((p.public for p in self.pairs.values()), prefectures)
        self.registry_bytes = keys.build_registry(entries, root.secret, 1, keys.now_us())
        (key_dir / "registry.bin").write_bytes(self.registry_bytes)
        self.root_public = root.public_key

    @property
    def quorum_replicas(self) -> int | None:
        """The `quorum_replicas` of `broker_extra`, so queues declared by hand match."""
        for line in self.broker_extra.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "quorum_replicas":
                return int(value)
        return None

    def registry(self) -> _core.KeyRegistry:
        return _core.KeyRegistry(self.registry_bytes, self.root_public)

    def _broker_section(self, kind: str) -> str:
        urls = self.node_urls.get(kind, self.urls)
        address = f'url = "{urls[0]}"' if len(urls) == 1 else f"urls = {json.dumps(list(urls))}"
        return (
            f'[broker]\n{address}\nnamespace = "{self.namespace}"\n'
            "connect_timeout_s = 5.0\nreconnect_max_s = 1.0\nconfirm_timeout_s = 10.0\n"
            + self.broker_extra
        )

    def _tier_config(self, name: str, role: str, *, http: bool, max_bundle_bytes: int) -> Path:
        port = free_port() if http else 0
        self.ports[name] = port
        lines = [f'role = "{role}"', f'id = "{name}"', f'store = "data/{name}"']
        if role == "aggregator":
            lines += [
                f"prefectures = {json.dumps(list(PREFECTURES))}",
                f'signing_key = "keys/{name}-k1.key.json"',
            ]
        text = "\n".join(lines) + "\n\n"
        text += (
            '[trust]\nroot_public_key = "keys/root.pub.json"\nregistry = "keys/registry.bin"\n\n'
        )
        kind = "centre" if role == "aggregator" else "national"
        text += self._broker_section(kind) + "prefetch = 64\n\n"
        text += f'[http]\nlisten = "127.0.0.1"\nport = {port}\n\n'
        text += f"[limits]\nmax_bundle_bytes = {max_bundle_bytes}\nmap_size = {MAP_SIZE}\n"
        text += "max_batch = 32\n"
        text += f"\n[replication]\n{self.replication}\n"
        if self.health:
            text += f"\n[health]\n{self.health}\n"
        path = self.root / f"{name}.toml"
        path.write_text(text)
        return path

    def _municipality_config(
        self, origin: str, max_updates: int, linger_s: float, max_bundle_bytes: int
    ) -> Path:
        text = (
            f'role = "municipality"\norigin = "{origin}"\n'
            f'signing_key = "keys/{origin}-k1.key.json"\noutbox = "data/outbox-{origin}"\n'
            f"max_updates = {max_updates}\nlinger_s = {linger_s}\n"
            f"max_bundle_bytes = {max_bundle_bytes}\nannounce_interval_s = 0.5\n\n"
            + self._broker_section("publisher")
        )
        path = self.root / f"muni-{origin}.toml"
        path.write_text(text)
        return path

    def store_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def outbox_dir(self, origin: str) -> Path:
        return self.root / "data" / f"outbox-{origin}"

    @property
    def queues(self) -> list[str]:
        """Full names of every queue this network's nodes declare."""
        names = [bundle_queue_name(c, PREFECTURES) for c in self.centres]
        names.append(national_queue_name(self.national))
        names += [control_queue_name(o) for o in self.origins]
        names += [heads_queue_name(n) for n in [*self.centres, self.national]]
        return [self.namespace + n for n in names]

    def purge(self, queue: str) -> int:
        """Empty a queue (full name without the namespace), as an operator's mistake
        or a lost broker node would; returns how many messages went."""

        async def purge() -> int:
            connection = await aio_pika.connect(self.url)
            try:
                channel = await connection.channel()
                underlay = await channel.get_underlay_channel()
                result = await underlay.queue_purge(self.namespace + queue)
                return int(result.message_count or 0)
            finally:
                await connection.close()

        return asyncio.run(purge())

    # --- processes ------------------------------------------------------------------
    def _spawn(self, key: str, args: list[str], stdin: int = subprocess.DEVNULL) -> Proc:
        log = self.root / f"{key.replace(' ', '_')}.log"
        handle = log.open("ab")
        handle.write(f"\n=== {' '.join(args)}\n".encode())
        handle.flush()
        popen = subprocess.Popen(
            [*jukisync_command(), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            cwd=self.root,
        )
        handle.close()
        proc = Proc(key, popen, log)
        self.procs[key] = proc
        return proc

    def start(self, name: str, *extra: str) -> Proc:
        """`jukisync run` for a centre or national (not waiting for it to be up)."""
        return self._spawn(name, ["run", "--config", str(self.configs[name]), *extra])

    def start_and_wait(self, *names: str) -> None:
        for name in names:
            self.start(name)
        for name in names:
            self.wait_consuming(name)

    def wait_consuming(self, name: str, timeout: float = 30.0) -> None:
        """Until the daemon's log says it consumes (or it died)."""
        proc = self.procs[name]
        assert until(lambda: "consuming" in proc.output() or not proc.alive(), timeout), (
            f"{name} did not start:\n{proc.output()}"
        )
        assert proc.alive(), f"{name} exited with {proc.popen.returncode}:\n{proc.output()}"

    def publish(
        self, origin: str, file: Path | str, *extra: str, stdin: int = subprocess.DEVNULL
    ) -> Proc:
        """`jukisync publish`; with `stdin=subprocess.PIPE` the test writes its input
        (`proc.popen.stdin`, FILE '-')."""
        return self._spawn(
            f"publish {origin}",
            ["publish", "--config", str(self.configs[origin]), *extra, str(file)],
            stdin=stdin,
        )

    def publish_all(self, file: Path, *extra: str) -> None:
        """Every origin publishes its lines of `file`, concurrently; all must succeed."""
        procs = [self.publish(o, file, "--skip-others", *extra) for o in self.origins]
        for proc in procs:
            assert proc.wait() == 0, proc.output()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*jukisync_command(), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
        )
        if check:
            assert done.returncode == 0, f"jukisync {' '.join(args)}: {done.stderr}"
        return done

    def kill(self, name: str, signum: int = signal.SIGKILL) -> int:
        proc = self.procs[name]
        proc.signal(signum)
        return proc.wait()

    def stop_all(self) -> None:
        """SIGKILL whatever still runs (teardown)."""
        for proc in self.procs.values():
            if proc.alive():
                proc.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(10)

    def remove_topology(self) -> None:
        asyncio.run(remove_topology(self.urls, self.namespace, self.queues))

    def declare_centre_queue(self, centre: str, queue_type: QueueType = "quorum") -> None:
        """A centre's (or national's) queue as its daemon would declare it (the centre
        never runs), or with another queue type than the daemons use."""

        async def declare() -> None:
            transport = AmqpTransport(
                self.url,
                name=f"pytest declare {centre}",
                options=AmqpOptions(
                    namespace=self.namespace,
                    queue_type=queue_type,
                    quorum_replicas=self.quorum_replicas,
                ),
            )
            try:
                if centre == self.national:
                    await transport.declare_forward_queue(national_queue_name(centre))
                else:
                    await transport.declare_bundle_queue(
                        bundle_queue_name(centre, PREFECTURES), PREFECTURES
                    )
            finally:
                await transport.close()

        asyncio.run(declare())

    # --- stores ---------------------------------------------------------------------
    def store(self, name: str) -> _core.Store:
        """A handle on a tier store from the test process, opened once (LMDB: one
        environment per process), read while the daemon writes it."""
        if name not in self._stores:
            self._stores[name] = _core.Store(
                str(self.store_dir(name)),  # as the role its daemon recorded
                registry=self.registry(),
                require_attestation=False,
                map_size=MAP_SIZE,
            )
        return self._stores[name]

    def assert_consistent(self) -> None:
        """`check` finds nothing wrong in any tier store this network made (also after
        SIGKILLs: every write is one LMDB transaction)."""
        names = [*self.centres, self.national]
        found = {
            n: self.store(n).check() for n in names if (self.store_dir(n) / "data.mdb").exists()
        }
        assert not any(found.values()), found

    def expected_heads(self) -> dict[str, tuple[int, bytes]]:
        """Each origin's chain head as its outbox has it (no publisher may be running)."""
        heads = {}
        for origin in self.origins:
            if not (self.outbox_dir(origin) / "data.mdb").exists():
                continue
            outbox = Outbox(self.outbox_dir(origin), origin)
            try:
                head = outbox.head()
            finally:
                outbox.close()
            if head.last_seq:
                heads[origin] = (head.last_seq, head.hash)
        return heads

    def outbox_envelopes(self, origin: str) -> list[bytes]:
        outbox = Outbox(self.outbox_dir(origin), origin)
        try:
            return [e.envelope for e in outbox.bundles_from(0)]
        finally:
            outbox.close()

    def reference(self) -> _core.Store:
        """Every outbox's chain applied once, in order, in the test process: what
        every tier must hold."""
        path = self.root / "reference"
        assert not path.exists()
        store = _core.Store(
            str(path),
            role="national",
            registry=self.registry(),
            require_attestation=False,
            map_size=MAP_SIZE,
        )
        for origin in self.origins:
            envelopes = self.outbox_envelopes(origin)
            results = store.apply(envelopes) if envelopes else []
            assert all(r.status == "applied" for r in results), [
                (r.status, r.reason) for r in results if r.status != "applied"
            ]
        return store

    def converged(self, names: Sequence[str], heads: dict[str, tuple[int, bytes]]) -> bool:
        try:
            return all(self.store(n).chain_heads() == heads for n in names)
        except _core.StoreError:  # a daemon that has not made (and recorded) its store yet
            return False

    def wait_converged(self, names: Sequence[str], timeout: float = TIMEOUT) -> None:
        heads = self.expected_heads()
        assert heads, "nothing was published"
        if not until(lambda: self.converged(names, heads), timeout):
            report = {n: {o: s for o, (s, _) in self.store(n).chain_heads().items()} for n in names}
            expected = {o: s for o, (s, _) in heads.items()}
            logs = "\n".join(f"--- {p.name}\n{p.output()}" for p in self.procs.values())
            raise AssertionError(f"not converged: {report} != {expected}\n{logs}")

    def status(self, name: str) -> dict[str, object]:
        """`jukisync status --json` of a store, with heads and per-prefecture digests."""
        args = ["status", "--store", str(self.store_dir(name)), "--heads", "--json"]
        for pref in PREFECTURES:
            args += ["--digest", pref]
        result: dict[str, object] = json.loads(self.cli(*args).stdout)
        return result

    def applied(self, name: str) -> int:
        """Updates applied by a tier so far (its chain heads summed)."""
        return sum(seq for seq, _ in self.store(name).chain_heads().values())


def assert_matches_reference(net: Net, names: Sequence[str], reference: _core.Store) -> None:
    """Same chain heads, same digests per prefecture, and every update applied
    exactly once (the store's own counter equals the reference's)."""
    want_heads = {o: {"seq": s, "hash": h.hex()} for o, (s, h) in reference.chain_heads().items()}
    want_digests = {p: reference.digest(p) for p in PREFECTURES}
    want_updates = reference.stats()["applied_updates"]
    assert want_updates == sum(s for s, _ in reference.chain_heads().values())
    for name in names:
        status = net.status(name)
        assert status["heads"] == want_heads, name
        assert status["digests"] == want_digests, name
        stats = status["stats"]
        assert isinstance(stats, dict)
        assert stats["applied_updates"] == want_updates, (name, stats)
        assert stats["pending"] == 0 and stats["halted"] == 0, (name, stats)
        assert net.store(name).check() == [], name


def close_connections(pids: Iterable[int]) -> int:
    """Have the broker close every connection of these processes (their connection
    names end in `pid N`), as an operator's `rabbitmqctl close_connection` or a
    broker restart would; all at once. Returns how many it closed."""
    suffixes = tuple(f" pid {pid}" for pid in pids)
    targets = []
    for line in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        pid, _, properties = line.partition("\t")
        marker = '{"connection_name","'
        if marker not in properties:
            continue
        name = properties.split(marker, 1)[1].split('"', 1)[0]
        if name.endswith(suffixes):
            targets.append(pid)
    closing = [close_connection_async(pid, "jukisync test: connection cut") for pid in targets]
    return sum(p.wait(60) == 0 for p in closing)


class Nets:
    """The networks one test makes (`make_net(**Net options)` in conftest), each torn
    down with the test: processes killed, broker namespace removed, and, for tests
    marked `check_stores`, every tier store checked afterwards (also after SIGKILLs)."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.nets: list[Net] = []

    def __call__(self, **options: Any) -> Net:
        net = Net(self.root, self.url, **options)
        self.nets.append(net)
        return net

    def close(self, *, check_stores: bool) -> None:
        for net in self.nets:
            net.stop_all()
            net.remove_topology()
        if check_stores:
            for net in self.nets:
                net.assert_consistent()


def sign_garbled(net: Net, origin: str, update: Update) -> int:
    """`origin`'s CS, its validation broken, signs `update` with a garbled name into
    its outbox: a validly signed bundle that halts `origin` where it is applied (its
    later bundles wait behind it). Returns the chain's last seq before that bundle."""
    pair = net.pairs[origin]
    faulty = Publisher(
        origin, pair.secret, pair.key_id, net.outbox_dir(origin), validate=lambda u: None
    )
    try:
        before = faulty.head.last_seq
        faulty.add(msgspec.structs.replace(update, name=update.name + "\ufffd"))
        faulty.flush()
    finally:
        faulty.close()
    return before
