"""Snapshots and backups of a tier store or a publisher's outbox, and rebuilding a
node's store from a snapshot (`jukisync snapshot`, `bootstrap`, `backup`, `restore`).

An archive is a tar file (uncompressed: the LMDB copy is already compacted):

    manifest.json   what it holds: kind (store | outbox), created_at (µs), per-origin
                    chain heads, record count and digest (stores), the SHA-256 and size
                    of every other member, and the signer (owner, key id, public key)
    manifest.sig    Ed25519 signature of manifest.json by the node's key, hex
    data/data.mdb   LMDB's compacted hot copy (one read transaction: consistent
                    while the daemon writes)
    data/registry.bin, data/root.pub   a store's trust files, as beside the store

Trust. `verify_archive` checks every member against the manifest and the manifest's
signature; whose key signed it is checked against the registry (verified against a
root key the operator gives, never against the archive's own root.pub alone).
`bootstrap` goes further and trusts nothing unsigned: it re-applies every signed
envelope of the snapshot's change log into a fresh store (origin signatures and
attestations batch-verified by the core, chains checked) and requires the rebuilt
heads and record digest to equal the manifest's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from jukisync import _core, clock
from jukisync.trust import keys, storedir

__all__ = [
    "FORMAT",
    "ArchiveError",
    "Manifest",
    "Rebuild",
    "TrustError",
    "check_restored",
    "check_signer",
    "extracted",
    "make_archive",
    "rebuild",
    "registry_of",
    "seal",
    "store_facts",
    "verify_archive",
]

FORMAT = "jukisync-archive/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
DATA_DIR = "data"
DATA_FILE = "data.mdb"
_PAGE = 1000  # change-log envelopes per apply call when rebuilding


class ArchiveError(Exception):
    """The archive is unreadable, incomplete or does not match its manifest."""


class TrustError(Exception):
    """The manifest's signer is not trusted (unknown key, wrong key, bad signature)."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    raw: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.raw["kind"])

    @property
    def created_at(self) -> int:
        return int(self.raw["created_at"])

    @property
    def heads(self) -> dict[str, tuple[int, str]]:
        return {o: (int(h["seq"]), str(h["hash"])) for o, h in self.raw["heads"].items()}

    @property
    def signer(self) -> dict[str, str]:
        return dict(self.raw["signer"])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_FACTS = ("heads", "records", "digest", "audit")


def store_facts(store: _core.Store) -> dict[str, Any]:
    first, last, head = store.audit_head()
    return {
        "heads": {o: {"seq": s, "hash": h.hex()} for o, (s, h) in store.chain_heads().items()},
        "records": store.stats()["records"],
        "digest": store.digest(""),
        "audit": {"first": first, "last": last, "head": head.hex()},
    }


def _outbox_copy(source: Path, dest_dir: Path) -> dict[str, Any]:
    """Compacted hot copy of a publisher's outbox and its chain head (python-lmdb owns
    outboxes; this process opens it read-only, beside the running publisher)."""
    if not (source / DATA_FILE).is_file():
        raise FileNotFoundError(f"no outbox at {source} (no {DATA_FILE})")
    dest_dir.mkdir(parents=True)
    env = lmdb.open(str(source), readonly=True, max_dbs=4, create=False)
    try:
        env.copy(str(dest_dir), compact=True)
    finally:
        env.close()
    heads = _outbox_heads(dest_dir)
    return {"heads": heads, "origin": next(iter(heads))}


def _outbox_heads(path: Path) -> dict[str, dict[str, Any]]:
    """An outbox's chain head as a manifest records it: {origin: {seq, hash}}."""
    env = lmdb.open(str(path), readonly=True, max_dbs=4, create=False)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            origin = bytes(txn.get(b"origin") or b"").decode()
            seq = int.from_bytes(txn.get(b"head_seq") or b"", "big")
            head_hash = bytes(txn.get(b"head_hash") or b"").hex()
    finally:
        env.close()
    return {origin: {"seq": seq, "hash": head_hash}}


def make_archive(
    source: Path,
    out: Path,
    key: keys.KeyPair,
    *,
    kind: str = "store",
    store: _core.Store | None = None,
) -> Manifest:
    """Write a signed archive of a store (`store` open on `source`) or an outbox to
    `out` (refused if it exists; written beside it and renamed, so `out` is complete
    or absent)."""
    if out.exists():
        raise FileExistsError(f"{out} exists; an archive is never overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        data = work / DATA_DIR
        facts: dict[str, Any]
        if kind == "store":
            assert store is not None
            store.copy_compacted(str(data))
            for name in (storedir.REGISTRY_FILE, storedir.ROOT_FILE):
                shutil.copy2(source / name, data / name)
            copy = _core.Store(
                str(data),
                registry=storedir.load_registry(data),
                require_attestation=False,
            )
            facts = store_facts(copy)
            del copy  # closes the copy's environment before it is archived
        else:
            facts = _outbox_copy(source, data)
        (data / "lock.mdb").unlink(missing_ok=True)
        return seal(work, out, key, kind=kind, source=source, facts=facts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def seal(
    work: Path, out: Path, key: keys.KeyPair, *, kind: str, source: Path, facts: dict[str, Any]
) -> Manifest:
    """Sign a manifest of `facts` and every file under `work/data`, and write the tar
    to `out` atomically (built in `work`, fsynced, then hard-linked: `out` is complete
    or absent, and an existing `out` is never replaced)."""
    data = work / DATA_DIR
    files = {
        f"{DATA_DIR}/{p.name}": {"sha256": _sha256_file(p), "size": p.stat().st_size}
        for p in sorted(data.iterdir())
    }
    raw = {
        "format": FORMAT,
        "kind": kind,
        "created_at": clock.now_us(),
        "source": str(source),
        **facts,
        "files": files,
        "signer": {
            "owner": key.owner,
            "key_id": key.key_id,
            "public_key": key.public_key.hex(),
        },
    }
    manifest = json.dumps(raw, ensure_ascii=False, indent=1, sort_keys=True).encode()
    partial = work / "archive.tar"
    with tarfile.open(partial, "w") as tar:
        _add_bytes(tar, MANIFEST, manifest)
        _add_bytes(tar, SIGNATURE, key.sign(manifest).hex().encode())
        for name in files:
            tar.add(work / name, arcname=name)
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    os.link(partial, out)  # fails if `out` appeared meanwhile: never overwrite
    _fsync_dir(out.parent)
    return Manifest(raw)


def _fsync_dir(path: Path) -> None:
    """The new directory entry is durable too (an archive the store then names)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


@contextmanager
def extracted(archive: Path) -> Iterator[tuple[Manifest, bytes, bytes, Path]]:
    """The archive unpacked into a temporary directory: (manifest, its bytes, its
    signature, the data directory), every member checked against the manifest."""
    with tempfile.TemporaryDirectory(prefix="jukisync-archive-") as tmp:
        work = Path(tmp)
        try:
            with tarfile.open(archive, "r") as tar:
                tar.extractall(work, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise ArchiveError(f"{archive}: not a readable archive: {exc}") from None
        try:
            manifest_bytes = (work / MANIFEST).read_bytes()
            signature = bytes.fromhex((work / SIGNATURE).read_text().strip())
            raw = json.loads(manifest_bytes)
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"{archive}: no valid {MANIFEST}/{SIGNATURE}: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ArchiveError(f"{archive}: not a {FORMAT} archive")
        for name, meta in raw["files"].items():
            path = work / name
            if not path.is_file():
                raise ArchiveError(f"{archive}: {name} is missing")
            if _sha256_file(path) != meta["sha256"] or path.stat().st_size != meta["size"]:
                raise ArchiveError(f"{archive}: {name} does not match the manifest's SHA-256")
        listed = {f"{DATA_DIR}/{p.name}" for p in (work / DATA_DIR).iterdir()}
        if listed != set(raw["files"]):
            raise ArchiveError(
                f"{archive}: members not in the manifest: {listed - set(raw['files'])}"
            )
        yield Manifest(raw), manifest_bytes, signature, work / DATA_DIR


def check_signer(
    manifest: Manifest,
    manifest_bytes: bytes,
    signature: bytes,
    registry: _core.KeyRegistry | None,
    pinned: keys.PublicKey | None,
) -> str:
    """How the signer is trusted ("registry" or "pinned"); raises TrustError."""
    signer = manifest.signer
    public = bytes.fromhex(signer["public_key"])
    if not _core.verify(public, manifest_bytes, signature):
        raise TrustError("the manifest's signature does not verify")
    if pinned is not None:
        if pinned.public_key != public:
            raise TrustError(f"signed by key {signer['key_id']!r}, not by the pinned key")
        return "pinned"
    known = registry.key_for(signer["key_id"]) if registry is not None else None
    if known is None or known[1] != public or known[0] != signer["owner"]:
        raise TrustError(
            f"signed by key {signer['key_id']!r} of {signer['owner']!r}, which the registry "
            "does not hold: pin the signer's public key (--signer FILE)"
        )
    return "registry"


def verify_archive(
    archive: Path, root_public: bytes | None, pinned: keys.PublicKey | None = None
) -> Manifest:
    """Check an archive end to end without keeping it unpacked: members, signature,
    and (stores) that the copy opens and has the manifest's heads and digest."""
    with extracted(archive) as (manifest, manifest_bytes, signature, data):
        registry = registry_of(data, root_public) if manifest.kind == "store" else None
        check_signer(manifest, manifest_bytes, signature, registry, pinned)
        if manifest.kind == "store":
            assert registry is not None
            copy = _core.Store(str(data), registry=registry, require_attestation=False)
            facts = store_facts(copy)
            del copy
            for field in _FACTS:
                if facts[field] != manifest.raw[field]:
                    raise ArchiveError(f"{archive}: the copy's {field} differ from the manifest")
        return manifest


def registry_of(data: Path, root_public: bytes | None) -> _core.KeyRegistry:
    try:
        root = root_public or storedir.read_root_public(data / storedir.ROOT_FILE)
        return _core.KeyRegistry((data / storedir.REGISTRY_FILE).read_bytes(), root)
    except (OSError, storedir.StoreDirError) as exc:
        raise TrustError(f"no usable registry: {exc}") from None
    except _core.JukisyncError as exc:
        raise TrustError(
            f"the archive's registry does not verify against the root key: {exc}"
        ) from None


@dataclasses.dataclass
class Rebuild:
    origins: int = 0
    envelopes: int = 0
    updates: int = 0
    released: int = 0  # operator releases carried over (validly signed, content accepted)
    quarantined: int = 0  # open quarantine entries re-applied (rejected again, kept)
    halted: list[str] = dataclasses.field(default_factory=list)  # origins halted again
    audit_entries: int = 0  # query audit trail carried over (hash chain verified)
    forward_backlog: int = 0  # bundles the centre had not forwarded yet, queued again
    problems: list[str] = dataclasses.field(default_factory=list)


def rebuild(
    source: _core.Store,
    target: _core.Store,
    manifest: Manifest,
    archives: Sequence[Path] = (),
) -> Rebuild:
    """Re-apply every envelope of `source`'s change log into the empty `target`, in
    chain order per origin, through the core's verifying apply; then compare heads and
    the record digest with the manifest. A change log pruned after a checkpoint is
    read from its archives (where the store recorded them, or under `archives`).
    Problems are listed, not raised."""
    from jukisync.tier import retention  # it builds on this module's archive format

    report = Rebuild()
    released = {e.hash: e for e in source.quarantine(include_closed=True) if e.state == "released"}
    for origin, (seq, _) in sorted(manifest.heads.items()):
        report.origins += 1
        next_seq = 1
        while next_seq <= seq and not report.problems:
            try:
                page = retention.changes(source, origin, next_seq, _PAGE, archive_dirs=archives)
            except retention.BeforeRetention as exc:
                report.problems.append(str(exc))
                break
            if not page:
                report.problems.append(f"{origin}: the change log ends before seq {seq}")
                break
            for result in target.apply(page):
                report.envelopes += 1
                report.updates += result.updates
                entry = released.get(result.hash) if result.hash else None
                if result.status == "rejected" and result.kind == "halt" and entry is not None:
                    # An operator accepted this validly signed bundle as is: accept it
                    # again. Its successors in this page were held behind the halt and
                    # the release applies them from pending; the next page starts
                    # after whatever that reached.
                    assert result.quarantine_id is not None
                    target.release(result.quarantine_id)
                    report.released += 1
                    break
                if result.status not in ("applied", "duplicate"):
                    report.problems.append(
                        f"{origin}: seqs {result.first_seq}..{result.last_seq} "
                        f"{result.status}: {result.reason}"
                    )
                    break
            head = target.chain_head(origin)
            reached = head[0] if head else 0
            if reached < next_seq and not report.problems:
                report.problems.append(f"{origin}: no progress past seq {reached}")
            next_seq = reached + 1
    if not report.problems:
        _carry_quarantine(source, target, report)
    if not report.problems:
        _carry_audit(source, target, report)
    if not report.problems:
        # Pointers into the change log just re-verified: the new centre forwards the
        # same signed, attested envelopes the old one had not forwarded yet.
        report.forward_backlog = target.copy_forward_backlog_from(source)
    facts = store_facts(target)
    for field, what in (
        ("heads", "chain heads"),
        ("digest", "records' digest"),
        ("records", "record count"),
        ("audit", "audit trail head"),
    ):
        if facts[field] != manifest.raw[field]:
            report.problems.append(f"the rebuilt {what} differ from the manifest's")
    if not report.problems:
        report.problems += [f"check: {p}" for p in consistency_problems(target)]
    if not report.problems and source.role != target.role:
        # Rebuilt as national (applying without attesting again); the node it is for
        # opens it as what it is.
        target.record_role_after_rebuild(
            "aggregator" if source.role == "aggregator" else "national"
        )
    return report


def consistency_problems(store: _core.Store) -> list[str]:
    """The store's own consistency check (`Store.check`, as `jukisync check`: indexes,
    Merkle sums, heads against the change log, signatures, audit chain)."""
    return [f"{kind}: {detail}" for kind, detail in store.check()]


def _carry_quarantine(source: _core.Store, target: _core.Store, report: Rebuild) -> None:
    """Open quarantine entries are evidence (forgeries) or an origin's halt awaiting an
    operator: re-applied, they are verified and rejected again for what they are, so
    the new store halts the same origins and keeps the same evidence."""
    for entry in source.quarantine():
        result = target.apply([entry.envelope])[0]
        report.quarantined += 1
        if result.status != "rejected":
            report.problems.append(
                f"quarantine entry {entry.id} was {result.status} when re-applied, "
                f"not rejected ({entry.reason})"
            )
    report.halted = sorted(target.halted())
    if set(report.halted) != set(source.halted()):
        report.problems.append(
            f"halted origins differ: {sorted(source.halted())} in the snapshot, "
            f"{report.halted} rebuilt"
        )


def _carry_audit(source: _core.Store, target: _core.Store, report: Rebuild) -> None:
    """The query audit trail (provision records, kept for years) is hash-chained, not
    signed: carried over whole and its chain verified in the new store."""
    report.audit_entries = target.copy_audit_from(source)
    verification = target.audit_verify()
    if not verification.ok:
        report.problems.append(
            f"the carried audit trail does not verify: {verification.problems[:3]}"
        )


def check_restored(target: Path, manifest: Manifest, root_public: bytes | None) -> str | None:
    """What is wrong with a restored store or outbox, or None: it must open and hold
    the manifest's heads (and, for stores, records and digest)."""
    if manifest.kind == "store":
        store = _core.Store(
            str(target),
            registry=registry_of(target, root_public),
            require_attestation=False,
        )
        facts = store_facts(store)
        inconsistent = consistency_problems(store)
        del store
        for field in _FACTS:
            if facts[field] != manifest.raw[field]:
                return f"the restored store's {field} differ from the backup's manifest"
        if inconsistent:
            return f"`check` finds the restored store inconsistent: {inconsistent[:3]}"
        return None
    if manifest.raw["heads"] != _outbox_heads(target):
        return "the restored outbox's chain head differs from the backup's manifest"
    return None
