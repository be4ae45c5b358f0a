"""Retention of a tier store's change log (issue 12 §2): a signed checkpoint, an
archive of the oldest entries, then those entries pruned from the store.

The change log grows by ~465 KB per 1,000 updates; without retention a national store
gains ~150 GB a year. `checkpoint_and_prune` (by hand: `jukisync retention prune`; in
the daemon: `[retention]` of its config, every `interval_s`) does, in this order:

1. asks the core what the policy lets go, per origin: all but the newest
   `keep_bundles` entries, and only entries created more than `keep_days` ago; never an
   origin's head entry, never one the forward backlog still names;
2. writes one archive (`kind = "changelog"`, the snapshot format of `snapshots`) under
   `archive_dir`: `data/changelog.bin`, every pruned envelope as stored (origin
   signature and attestations: each re-verifiable on its own), and a manifest signed
   by the node's key holding the **checkpoint** (chain heads per origin, record count
   and digest of the store at that moment) and the range archived per origin. The
   archive is fsynced and linked into place before anything is deleted;
3. deletes those entries in one LMDB write transaction, recording per origin where the
   log now begins and which archive holds each pruned range.

A SIGKILL between 2 and 3 leaves an archive and an unpruned store (the next run
archives the same entries again: overlap, never loss); a SIGKILL during 3 leaves the
store as before it (LMDB's transaction).

Reads below the retained range. `store.changes` refuses them with
`_core.PrunedError` naming the archive; `changes` here then reads the archive (when
the file is where the store recorded it, or under `archive_dirs`) and raises
`BeforeRetention`, naming it, when it cannot: the caller reports that, never a
silent gap. Resends, repairs, `reconcile --repair` and `bootstrap` read through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from jukisync import _core, clock
from jukisync.config import RetentionConfig
from jukisync.ops import snapshots
from jukisync.trust import keys
from jukisync.wire.messages import decode_body, decode_envelope

__all__ = [
    "ARCHIVE_KIND",
    "OUTBOX_ARCHIVE_KIND",
    "BeforeRetention",
    "Policy",
    "PruneReport",
    "archived_bundles",
    "changes",
    "checkpoint_and_prune",
    "frame",
    "policy_key",
    "run_policy",
    "seal_segment",
]

log = logging.getLogger("jukisync.retention")

ARCHIVE_KIND = "changelog"
OUTBOX_ARCHIVE_KIND = "outbox-log"  # confirmed bundles pruned from a publisher's outbox
SEGMENT = "changelog.bin"
_FRAME = struct.Struct(">HI")  # origin length, envelope length; then origin, envelope
_PAGE = 1000
_US_PER_DAY = 86_400_000_000


class BeforeRetention(Exception):
    """A read before the retained change log whose archive is not readable here."""

    def __init__(self, origin: str, seq: int, archive: str, why: str) -> None:
        super().__init__(
            f"{origin} seq {seq} was pruned from the change log after a checkpoint; it is in "
            f"the archive {archive} ({why}): restore or copy that file to serve it"
        )
        self.origin, self.seq, self.archive = origin, seq, archive


@dataclasses.dataclass(frozen=True)
class Policy:
    keep_bundles: int  # the newest change-log entries of each origin always kept
    keep_days: float  # entries created within this many days are kept


@dataclasses.dataclass
class PruneReport:
    archive: str | None  # None: the policy let nothing go
    checkpoint: dict[str, Any]  # heads, records, digest at the checkpoint
    ranges: dict[str, dict[str, int]]  # origin -> from_seq, upto, bundles archived
    pruned: dict[str, int]  # origin -> entries deleted
    entries_before: int
    entries_after: int


def _checkpoint(store: _core.Store) -> dict[str, Any]:
    """Heads, record count and digest, read again until the heads did not move while
    the digest was computed (a live daemon writes meanwhile): one state of the store."""
    for _ in range(5):
        heads = store.chain_heads()
        facts = snapshots.store_facts(store)
        if store.chain_heads() == heads:
            return {k: facts[k] for k in ("heads", "records", "digest")}
    facts = snapshots.store_facts(store)
    return {k: facts[k] for k in ("heads", "records", "digest")} | {"live": True}


def _archive_name(source: Path, archive_dir: Path, kind: str) -> Path:
    stamp = clock.now().strftime("%Y%m%dT%H%M%S")
    base = f"{source.resolve().name}-{kind}-{stamp}"
    out, n = archive_dir / f"{base}.tar", 1
    while out.exists():
        n += 1
        out = archive_dir / f"{base}-{n}.tar"
    return out


def frame(f: BinaryIO, origin: str, raw: bytes) -> None:
    name = origin.encode()
    f.write(_FRAME.pack(len(name), len(raw)) + name + raw)


def seal_segment(
    source: Path,
    archive_dir: Path,
    key: keys.KeyPair,
    kind: str,
    write: Callable[[BinaryIO], dict[str, Any]],
) -> snapshots.Manifest:
    """An archive of `kind` under `archive_dir`: `write` fills data/changelog.bin
    (with `frame`) and returns the manifest's facts; signed by `key`, fsynced and
    linked into place (complete or absent). The manifest's `archive` is its path."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    # One archiver of a directory at a time (a daemon's policy and an operator's prune
    # may meet): a flock on the directory itself, released however the process ends.
    # Holding it, a partial of this kind found here was left by a killed run (archives
    # are linked into place whole, so a partial never became one): remove it.
    held = os.open(archive_dir, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        _remove_partials(archive_dir, kind)
        out = _archive_name(source, archive_dir, kind)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=archive_dir))
        try:
            (work / snapshots.DATA_DIR).mkdir()
            with (work / snapshots.DATA_DIR / SEGMENT).open("wb") as f:
                facts = write(f)
            manifest = snapshots.seal(work, out, key, kind=kind, source=source, facts=facts)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(held)
    manifest.raw["archive"] = str(out.resolve())
    return manifest


def _remove_partials(archive_dir: Path, kind: str) -> None:
    """The work directories and unlinked tar files of `kind` that a killed run left."""
    for path in archive_dir.iterdir():
        if not (path.name.startswith(".") and f"-{kind}-" in path.name):
            continue
        log.warning("removing %s, left by an archiving run that did not finish", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_segment(
    store: _core.Store, cuts: list[tuple[str, int, int, int]], f: BinaryIO
) -> dict[str, dict[str, int]]:
    ranges: dict[str, dict[str, int]] = {}
    for origin, from_seq, upto, _ in cuts:
        written, next_seq = 0, from_seq
        while next_seq <= upto:
            page = store.changes(origin, next_seq, _PAGE)
            for raw in page:
                last = decode_body(decode_envelope(raw).body).last_seq
                if last > upto:
                    break
                frame(f, origin, raw)
                written, next_seq = written + 1, last + 1
            else:
                if page:
                    continue
            break
        ranges[origin] = {"from_seq": from_seq, "upto": next_seq - 1, "bundles": written}
    return ranges


def checkpoint_and_prune(
    store: _core.Store,
    store_path: Path,
    key: keys.KeyPair,
    archive_dir: Path,
    policy: Policy,
) -> PruneReport:
    """Checkpoint, archive and prune what `policy` lets go (see the module doc)."""
    before = store.changelog_entries()
    created_before = clock.now_us() - int(policy.keep_days * _US_PER_DAY)
    cuts = store.retention_plan(policy.keep_bundles, max(0, created_before))
    if not cuts:
        return PruneReport(None, _checkpoint(store), {}, {}, before, before)

    def write(f: BinaryIO) -> dict[str, Any]:
        ranges = _write_segment(store, cuts, f)
        return {"checkpoint": _checkpoint(store), "ranges": ranges, "heads": {}}

    manifest = seal_segment(store_path, archive_dir, key, ARCHIVE_KIND, write)
    out, ranges = Path(manifest.raw["archive"]), manifest.raw["ranges"]
    # Only what the archive holds is deleted (the core may keep more: a forward
    # backlog entry that appeared meanwhile).
    pruned = store.prune_changelog(
        [(o, r["upto"]) for o, r in ranges.items() if r["bundles"]], str(out)
    )
    report = PruneReport(
        str(out),
        manifest.raw["checkpoint"],
        ranges,
        dict(pruned),
        before,
        store.changelog_entries(),
    )
    log.info(
        "retention: checkpoint signed, %d change-log entries of %d origins archived to %s "
        "and pruned (%d -> %d entries)",
        sum(report.pruned.values()),
        len(report.pruned),
        out,
        before,
        report.entries_after,
    )
    return report


# --- reading archives -------------------------------------------------------------------


def _frames(data: bytes) -> Iterator[tuple[str, bytes]]:
    at = 0
    while at < len(data):
        name_len, raw_len = _FRAME.unpack_from(data, at)
        at += _FRAME.size
        origin = data[at : at + name_len].decode()
        at += name_len
        yield origin, data[at : at + raw_len]
        at += raw_len


@functools.lru_cache(maxsize=4)
def _load(path: str, _mtime_ns: int) -> dict[str, list[tuple[int, int, bytes]]]:
    with snapshots.extracted(Path(path)) as (manifest, manifest_bytes, signature, data):
        if manifest.kind not in (ARCHIVE_KIND, OUTBOX_ARCHIVE_KIND):
            raise snapshots.ArchiveError(f"{path} is an archive of a {manifest.kind}")
        # The manifest verifies against the key it names (an archive is an operator's
        # file, not a credential); each envelope carries its own origin signature and
        # attestations, verified again by whoever applies it.
        if not _core.verify(
            bytes.fromhex(manifest.signer["public_key"]), manifest_bytes, signature
        ):
            raise snapshots.TrustError(f"{path}: the manifest's signature does not verify")
        by_origin: dict[str, list[tuple[int, int, bytes]]] = {}
        for origin, raw in _frames((data / SEGMENT).read_bytes()):
            body = decode_body(decode_envelope(raw).body)
            by_origin.setdefault(origin, []).append((body.first_seq, body.last_seq, raw))
        return by_origin


def archived_bundles(archive: Path, origin: str, from_seq: int, limit: int) -> list[bytes]:
    """Envelopes of `origin` holding seqs >= from_seq in a change-log archive."""
    entries = _load(str(archive), archive.stat().st_mtime_ns).get(origin, [])
    return [raw for _, last, raw in entries if last >= from_seq][:limit]


def _locate(recorded: str, archive_dirs: Iterable[Path]) -> Path | None:
    candidates = [Path(recorded)] + [Path(d) / Path(recorded).name for d in archive_dirs]
    return next((p for p in candidates if p.is_file()), None)


def changes(
    store: _core.Store,
    origin: str,
    from_seq: int,
    limit: int = _PAGE,
    *,
    archive_dirs: Iterable[Path] = (),
) -> list[bytes]:
    """`store.changes`, reading pruned ranges from their archives; raises
    BeforeRetention (naming the archive) when one is not readable here."""
    out: list[bytes] = []
    next_seq = from_seq
    dirs = list(archive_dirs)
    while len(out) < limit:
        try:
            return out + store.changes(origin, next_seq, limit - len(out))
        except _core.PrunedError as exc:
            recorded = store.archive_for(origin, next_seq) or "(unknown)"
            path = _locate(recorded, dirs)
            if path is None:
                raise BeforeRetention(origin, next_seq, recorded, "no such file here") from exc
            try:
                found = archived_bundles(path, origin, next_seq, limit - len(out))
            except (OSError, snapshots.ArchiveError, snapshots.TrustError) as err:
                raise BeforeRetention(origin, next_seq, str(path), str(err)) from exc
            if not found:
                raise BeforeRetention(
                    origin, next_seq, str(path), "it does not hold that seq"
                ) from exc
            out += found
            next_seq = decode_body(decode_envelope(found[-1]).body).last_seq + 1
    return out


# --- the daemon's policy ----------------------------------------------------------------


def policy_key(cfg: RetentionConfig, node_key: str | None) -> keys.KeyPair | None:
    """The key signing checkpoints (None: retention is off); raises KeyFileError."""
    if cfg.archive_dir is None:
        return None
    path = cfg.signing_key or node_key
    if path is None:  # the config refuses this for national; an aggregator has its key
        raise keys.KeyFileError("(config)", "retention.signing_key", "not set")
    return keys.load(path)


async def run_policy(
    store: _core.Store, store_path: Path, key: keys.KeyPair, cfg: RetentionConfig
) -> None:
    """Checkpoint and prune every `cfg.interval_s` until cancelled. A failure is
    logged and tried again next time: nothing is pruned unless its archive was written."""
    assert cfg.archive_dir is not None
    policy = Policy(keep_bundles=cfg.keep_bundles, keep_days=cfg.keep_days)
    while True:
        try:
            await asyncio.to_thread(
                checkpoint_and_prune, store, store_path, key, Path(cfg.archive_dir), policy
            )
        except (OSError, _core.JukisyncError, snapshots.ArchiveError) as exc:
            log.error("retention: checkpoint and prune failed, nothing pruned: %s", exc)
        except Exception:  # a bug here must not end retention for the daemon's lifetime
            log.exception("retention: checkpoint and prune failed, nothing pruned")
        await asyncio.sleep(cfg.interval_s)
