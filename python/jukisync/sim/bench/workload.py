"""The workload: keys, a registry and signed, chained bundles of a synthetic population and
its changes, generated before any clock starts."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass

from jukisync import _core, clock
from jukisync.publisher.bundling import ChainHead, number, seal
from jukisync.sim import synth
from jukisync.sim.bench.options import CENTRE, BenchOptions
from jukisync.trust import keys
from jukisync.wire.messages import Envelope, Update, encode

# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bundle:
    origin: str
    last_seq: int
    updates: int
    envelope: bytes

    @property
    def key(self) -> tuple[str, int]:
        return (self.origin, self.last_seq)


@dataclass(slots=True)
class Workload:
    """Keys, registry and signed bundles, per origin in chain order, for each phase."""

    origins: list[str]
    prefectures: list[str]
    key_pairs: dict[str, keys.KeyPair]
    registry_bytes: bytes
    root_public: bytes
    throughput: dict[str, list[Bundle]]
    latency: dict[str, list[Bundle]]
    preload: dict[str, list[Bundle]]  # published untimed before the latency phase
    heads: dict[str, tuple[int, bytes]]  # every origin's chain head after both phases
    prepare_s: float = 0.0

    def registry(self) -> _core.KeyRegistry:
        return _core.KeyRegistry(self.registry_bytes, self.root_public)

    @staticmethod
    def count(bundles: dict[str, list[Bundle]]) -> tuple[int, int, int]:
        """(bundles, updates, envelope bytes)."""
        every = [b for group in bundles.values() for b in group]
        return len(every), sum(b.updates for b in every), sum(len(b.envelope) for b in every)


def _origins(n: int) -> list[synth.Municipality]:
    """The first `n` municipalities (山口県's first), weighted equally so that every
    publisher carries about the same share."""
    return [dataclasses.replace(m, weight=1.0) for m in synth.MUNICIPALITIES[:n]]


class _Signer:
    def __init__(self, pairs: dict[str, keys.KeyPair]) -> None:
        self.pairs = pairs
        self.heads: dict[str, ChainHead] = {}

    def bundles(self, stream: Iterable[tuple[str, Update]], size: int) -> dict[str, list[Bundle]]:
        """Each origin's updates of `stream`, in order, as signed bundles of `size`."""
        by_origin: dict[str, list[Update]] = {}
        for origin, update in stream:
            by_origin.setdefault(origin, []).append(update)
        out: dict[str, list[Bundle]] = {}
        for origin, updates in by_origin.items():
            out[origin] = [
                self.sign(origin, updates[i : i + size]) for i in range(0, len(updates), size)
            ]
        return out

    def sign(self, origin: str, updates: list[Update]) -> Bundle:
        head = self.heads.get(origin, ChainHead())
        sealed = seal(origin, head, number(updates, head.next_seq), keys.now_us())
        self.heads[origin] = sealed.head
        pair = self.pairs[origin]
        envelope = encode(
            Envelope(body=sealed.encoded, key_id=pair.key_id, sig=pair.sign(sealed.encoded))
        )
        return Bundle(origin, sealed.last_seq, len(updates), envelope)


def make_workload(options: BenchOptions) -> Workload:
    """A synthetic population of `updates // 2` residents in the chosen municipalities:
    the throughput phase loads them, then changes them (the other half of `updates`);
    the latency phase carries on with more changes. Without the throughput phase the
    residents are loaded (untimed) before the latency phase."""
    started = time.perf_counter()
    municipalities = _origins(options.publishers)
    origins = [m.code for m in municipalities]
    residents = max(1, options.updates // 2)
    population = synth.generate_population(residents, options.seed, municipalities)
    changes = (options.updates - residents if options.runs_throughput else 0) + (
        options.latency_updates
    )
    span = synth.span_until(population.as_of, clock.now().date())
    stream = itertools.chain(
        synth.initial_load(population),
        synth.generate_changes(population, changes, options.seed, max_span_days=span),
    )
    first = options.updates if options.runs_throughput else residents
    pairs = {o: keys.generate(o) for o in [*origins, CENTRE]}
    root = keys.generate("root")
    registry = keys.build_registry(
        keys.entries_for(
            (p.public for p in pairs.values()), sorted({o[:2] for o in origins}), not_before=0
        ),
        root.secret,
        1,
        keys.now_us(),
    )
    signer = _Signer(pairs)
    head_part = signer.bundles(itertools.islice(stream, first), options.bundle_size)
    latency = signer.bundles(stream, options.latency_bundle_size)
    # Latency only: the residents the changes are about are loaded first, untimed.
    throughput, preload = (head_part, {}) if options.runs_throughput else ({}, head_part)
    return Workload(
        origins=origins,
        prefectures=sorted({o[:2] for o in origins}),
        key_pairs=pairs,
        registry_bytes=registry,
        root_public=root.public_key,
        throughput=throughput,
        latency=latency,
        preload=preload,
        heads={o: (h.last_seq, h.hash) for o, h in signer.heads.items()},
        prepare_s=time.perf_counter() - started,
    )


def interleave(streams: dict[str, list[Bundle]]) -> list[Bundle]:
    """Every origin's bundles in chain order, each origin spread evenly over the list."""
    keyed = [
        ((i + 0.5) / len(bundles), k, bundle)
        for k, bundles in enumerate(streams.values())
        for i, bundle in enumerate(bundles)
    ]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [bundle for _, _, bundle in keyed]
