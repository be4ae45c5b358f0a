"""Snapshots, bootstrap, backups and restores against real tier stores and outboxes.

- `snapshot` copies a store while this process keeps writing to it (the daemon's
  situation): the archive is a consistent prefix, and `bootstrap` rebuilds it;
- `bootstrap` re-verifies every envelope: a change log with one forged signature, in
  a snapshot validly signed by a trusted node, is refused, and nothing is left;
- operator releases are carried over; untrusted signers and tampered archives refused;
- `backup` rotates and verifies; `restore` of an old backup gives a node that
  catches up with a peer that is ahead, by re-applying the peer's change log;
- an outbox (the origin's chain) is backed up and restored with the same commands.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import _core
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.ops import snapshots
from jukisync.publisher.origin import Publisher
from jukisync.trust import keys, storedir
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin, edit_entry, forge_signature

CENTRE = "centre-east"
JUKISYNC = str(Path(sys.executable).parent / "jukisync")


class Centre:
    """An aggregation centre's store with two origins' chains, its key on disk."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ring = KeyRing()
        self.origins = [Origin(self.ring, YAMAGUCHI_CITY), Origin(self.ring, CHIYODA)]
        key_id, secret = self.ring.add(CENTRE)
        pair = keys.KeyPair(CENTRE, key_id, secret, _core.public_key(secret), 0)
        self.key_file, self.pub_file = keys.save(pair, tmp / "keys")
        self.root_file = tmp / "keys" / "root.pub"
        self.root_file.write_text(_core.public_key(self.ring.root).hex() + "\n")
        self.path = tmp / "centre"
        self.n = 0

    def open(self, path: Path | None = None) -> _core.Store:
        key_id, secret = self.ring.keys[CENTRE]
        path = path or self.path
        store = _core.Store(
            str(path),
            role="aggregator",
            registry=self.ring.registry(),
            centre_id=CENTRE,
            centre_key=secret,
            centre_key_id=key_id,
            map_size=1 << 28,
        )
        storedir.write_trust(path, self.ring.signed_registry(), _core.public_key(self.ring.root))
        return store

    def snapshot(self, out: Path) -> tuple[int, str]:
        """`jukisync snapshot` of this (closed) store to `out`, signed by its key."""
        return cli(
            "snapshot", "--store", str(self.path), "--key", str(self.key_file), "--out", str(out)
        )

    def snapshot_and_bootstrap(self) -> tuple[int, str, Path]:
        """`snapshot` the (closed) store, then `bootstrap --json` a new one from it:
        bootstrap's exit code and output, and where the new store was to be."""
        out = self.tmp / "snap.tar"
        code, output = self.snapshot(out)
        assert code == 0, output
        new = self.tmp / "new"
        code, output = cli(
            "bootstrap", "--snapshot", str(out), "--store", str(new),
            "--root", str(self.root_file), "--json",
        )  # fmt: skip
        return code, output, new

    def bundles(self, count: int) -> list[bytes]:
        out = []
        for i in range(count):
            origin = self.origins[i % 2]
            self.n += 1
            out.append(
                origin.bundle([update(origin.code, self.n), update(origin.code, 9000 + self.n)])
            )
        return out


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    out = (result.exit_code, result.output)
    del result  # a failed command's traceback holds its store open
    gc.collect()
    return out


def facts(store: _core.Store) -> tuple[str, dict[str, tuple[int, bytes]]]:
    return store.digest(), store.chain_heads()


@pytest.fixture
def centre(tmp_path: Path) -> Centre:
    return Centre(tmp_path)


def _snapshot(centre: Centre, out: Path, *extra: str) -> subprocess.Popen[str]:
    """`jukisync snapshot` in its own process, as an operator runs it beside the daemon."""
    return subprocess.Popen(
        [
            JUKISYNC,
            "snapshot",
            "--store",
            str(centre.path),
            "--key",
            str(centre.key_file),
            "--out",
            str(out),
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(before=st.integers(min_value=1, max_value=30), during=st.integers(0, 30))
def test_hot_snapshot_then_bootstrap_rebuilds_and_catches_up(
    tmp_path_factory: pytest.TempPathFactory, before: int, during: int
) -> None:
    centre = Centre(tmp_path_factory.mktemp("hot"))
    live = centre.open()
    assert {r.status for r in live.apply(centre.bundles(before))} == {"applied"}
    out = centre.tmp / "snap.tar"
    proc = _snapshot(centre, out)
    for bundle in centre.bundles(during):  # the "daemon" keeps writing meanwhile
        assert live.apply([bundle])[0].status == "applied"
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    manifest = json.loads(stdout)
    assert manifest["signer"]["key_id"] == centre.ring.key_id(CENTRE)
    new = centre.tmp / "new"
    code, output = cli(
        "bootstrap", "--snapshot", str(out), "--store", str(new),
        "--root", str(centre.root_file), "--json",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(output)
    assert report["verified"] and report["problems"] == []
    assert report["signer_trusted_by"] == "registry"
    assert _core.Store(str(new), registry=storedir.load_registry(new)).role == "aggregator"
    gc.collect()
    rebuilt = centre.open(new)  # as the new centre's daemon opens it: with its key
    # A consistent prefix: exactly the manifest's heads, whatever was written meanwhile.
    assert {o: (s, h.hex()) for o, (s, h) in rebuilt.chain_heads().items()} == {
        o: (h["seq"], h["hash"]) for o, h in manifest["heads"].items()
    }
    assert rebuilt.digest() == manifest["digest"]
    # Joining: what the snapshot lacks comes from the peer's change log, verified.
    for origin in live.chain_heads():
        have = rebuilt.chain_head(origin)
        missing = live.changes(origin, (have[0] if have else 0) + 1)
        assert {r.status for r in rebuilt.apply(missing)} <= {"applied"}
    assert facts(rebuilt) == facts(live)


def test_bootstrap_refuses_a_forged_envelope_in_a_signed_snapshot(centre: Centre) -> None:
    live = centre.open()
    live.apply(centre.bundles(6))
    del live
    gc.collect()
    forge_signature(centre.path, YAMAGUCHI_CITY, 2)  # behind the store's back
    code, output, new = centre.snapshot_and_bootstrap()
    assert code == ExitCode.FAILURE
    report = json.loads(output.splitlines()[0])
    assert not report["verified"]
    assert any("bad signature" in p for p in report["problems"])
    assert not new.exists()  # nothing half-verified for a daemon to start on


def test_bootstrap_carries_an_operator_release_over(centre: Centre) -> None:
    live = centre.open()
    origin = centre.origins[0]
    bad = msgspec.structs.replace(update(YAMAGUCHI_CITY, 2), kojin_bango="983205673210")
    results = live.apply([origin.bundle([update(YAMAGUCHI_CITY, 1)]), origin.bundle([bad])])
    assert [r.status for r in results] == ["applied", "rejected"]
    qid = results[1].quarantine_id
    assert qid is not None
    live.release(qid)
    live.apply([origin.bundle([update(YAMAGUCHI_CITY, 3)])])
    del live
    gc.collect()
    code, output, _ = centre.snapshot_and_bootstrap()
    assert code == 0, output
    assert json.loads(output)["released"] == 1


def test_untrusted_or_tampered_snapshots_are_refused(centre: Centre, tmp_path: Path) -> None:
    live = centre.open()
    live.apply(centre.bundles(4))
    del live
    gc.collect()
    out = tmp_path / "snap.tar"
    assert centre.snapshot(out)[0] == 0
    assert centre.snapshot(out)[0] == ExitCode.FAILURE  # OUT exists: never overwritten
    # Another root key: the registry does not verify.
    other_root = tmp_path / "other-root.pub"
    other_root.write_text(_core.public_key(_core.generate_signing_key()).hex())
    code, _ = cli(
        "bootstrap",
        "--snapshot",
        str(out),
        "--store",
        str(tmp_path / "a"),
        "--root",
        str(other_root),
    )
    assert code == ExitCode.CONFIG
    # A signer the registry does not hold, unless pinned.
    stranger = keys.generate("national")
    stranger_key, stranger_pub = keys.save(stranger, tmp_path / "k")
    out2 = tmp_path / "snap2.tar"
    assert (
        cli(
            "snapshot", "--store", str(centre.path), "--key", str(stranger_key), "--out", str(out2)
        )[0]
        == 0
    )
    root = str(centre.root_file)
    code, _ = cli(
        "bootstrap", "--snapshot", str(out2), "--store", str(tmp_path / "b"), "--root", root
    )
    assert code == ExitCode.CONFIG
    code, output = cli(
        "bootstrap", "--snapshot", str(out2), "--store", str(tmp_path / "b"), "--root", root,
        "--signer", str(stranger_pub),
    )  # fmt: skip
    assert code == 0, output
    # Tampered data: one byte of data.mdb changed.
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(out) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("data.mdb"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            member.size = len(data)
            dst.addfile(member, __import__("io").BytesIO(data))
    code, _ = cli(
        "bootstrap", "--snapshot", str(tampered), "--store", str(tmp_path / "c"), "--root", root
    )
    assert code == ExitCode.INPUT
    assert (
        cli(
            "bootstrap",
            "--snapshot",
            str(tmp_path / "none.tar"),
            "--store",
            str(tmp_path / "d"),
            "--root",
            root,
        )[0]
        == ExitCode.NOT_FOUND
    )
    # An existing store is never bootstrapped over.
    assert (
        cli("bootstrap", "--snapshot", str(out), "--store", str(centre.path), "--root", root)[0]
        == ExitCode.USAGE
    )


def test_backup_rotates_and_restore_catches_up_with_a_peer(centre: Centre, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    live = centre.open()
    peer = centre.open(tmp_path / "twin")  # the twin centre applies the same stream
    taken = []
    for _ in range(3):
        batch = centre.bundles(5)
        live.apply(batch)
        peer.apply(batch)
        proc = subprocess.run(
            [JUKISYNC, "backup", "--store", str(centre.path), "--dir", str(backups),
             "--key", str(centre.key_file), "--keep", "2", "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        taken.append(json.loads(proc.stdout))
    assert all(t["verified"] for t in taken)
    kept = sorted(backups.iterdir())
    assert [str(p) for p in kept] == taken[-1]["kept"] and len(kept) == 2
    assert taken[-1]["removed"] == [taken[0]["backup"]]
    # The node loses its disk; the oldest kept backup is restored.
    peer.apply(centre.bundles(7))  # the peer moved on meanwhile
    del live
    gc.collect()
    restored_path = tmp_path / "restored"
    code, output = cli(
        "restore", "--backup", str(kept[0]), "--store", str(restored_path),
        "--root", str(centre.root_file), "--signer", str(centre.pub_file), "--json",
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(output)["heads"] == taken[1]["heads"]
    restored = centre.open(restored_path)
    assert facts(restored) != facts(peer)
    for origin in peer.chain_heads():
        have = restored.chain_head(origin)
        results = restored.apply(peer.changes(origin, (have[0] if have else 0) + 1))
        assert {r.status for r in results} <= {"applied"}
    assert facts(restored) == facts(peer)  # nothing lost
    del restored
    gc.collect()
    # Restore never overwrites a store; a missing backup is not found.
    assert (
        cli("restore", "--backup", str(kept[0]), "--store", str(restored_path))[0] == ExitCode.USAGE
    )
    assert (
        cli("restore", "--backup", str(tmp_path / "x.tar"), "--store", str(tmp_path / "y"))[0]
        == ExitCode.NOT_FOUND
    )
    assert (
        cli("restore", "--backup", str(kept[0]), "--outbox", str(tmp_path / "z"))[0]
        == ExitCode.INPUT
    )


def test_outbox_backup_and_restore_keep_the_origin_chain(tmp_path: Path) -> None:
    secret = _core.generate_signing_key()
    pair = keys.KeyPair(HAGI, "352047-k1", secret, _core.public_key(secret), 0)
    key_file, pub_file = keys.save(pair, tmp_path / "keys")
    outbox = tmp_path / "outbox"
    publisher = Publisher(HAGI, secret, "352047-k1", outbox, sync=False)
    for n in range(1, 8):
        publisher.add(update(HAGI, n))
    publisher.flush()
    head = publisher.head
    unconfirmed = [e.envelope for e in publisher.unconfirmed()]
    # Backed up while the publisher holds its outbox open (hot).
    proc = subprocess.run(
        [JUKISYNC, "backup", "--outbox", str(outbox), "--dir", str(tmp_path / "b"),
         "--key", str(key_file), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["heads"] == {HAGI: {"seq": head.last_seq, "hash": head.hash.hex()}}
    publisher.close()
    restored = tmp_path / "restored"
    code, output = cli(
        "restore", "--backup", result["backup"], "--outbox", str(restored),
        "--root", str(tmp_path / "root.pub"), "--signer", str(pub_file),
    )  # fmt: skip
    assert code == ExitCode.CONFIG  # the root key file is missing
    # An outbox has no registry: the municipality's own key, pinned, is the trust.
    code, output = cli(
        "restore", "--backup", result["backup"], "--outbox", str(restored),
    )  # fmt: skip
    assert code == ExitCode.CONFIG  # signed by a key nobody vouched for
    code, output = cli(
        "restore", "--backup", result["backup"], "--outbox", str(restored),
        "--signer", str(pub_file),
    )  # fmt: skip
    assert code == 0, output
    again = Publisher(HAGI, secret, "352047-k1", restored, sync=False)
    assert again.head == head
    assert [e.envelope for e in again.unconfirmed()] == unconfirmed
    again.close()


def test_archive_members_must_match_the_manifest(centre: Centre, tmp_path: Path) -> None:
    live = centre.open()
    live.apply(centre.bundles(2))
    key = keys.load(centre.key_file)
    out = tmp_path / "a.tar"
    manifest = snapshots.make_archive(centre.path, out, key, store=live)
    assert manifest.raw["records"] == live.stats()["records"]
    extra = tmp_path / "extra.tar"
    with tarfile.open(out) as src, tarfile.open(extra, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("data/evil.mdb")
        dst.addfile(info, __import__("io").BytesIO(b""))
    with pytest.raises(snapshots.ArchiveError):
        snapshots.verify_archive(extra, None, key.public)


def test_bootstrap_keeps_halts_evidence_and_the_audit_trail(centre: Centre) -> None:
    live = centre.open()
    good, other = centre.origins
    bad = msgspec.structs.replace(update(YAMAGUCHI_CITY, 2), kojin_bango="983205673210")
    forged = other.bundle([update(CHIYODA, 1)])[:-5] + b"XXXXX"
    results = live.apply([good.bundle([update(YAMAGUCHI_CITY, 1)]), good.bundle([bad]), forged])
    assert [r.status for r in results] == ["applied", "rejected", "rejected"]
    for n in range(20):  # queries answered by this node: its provision records
        live.lookup(f"{n:011d}", requester="agency-a", task="T1")
    audit_head = live.audit_head()
    del live
    gc.collect()
    code, output, new = centre.snapshot_and_bootstrap()
    assert code == 0, output
    report = json.loads(output)
    assert report["quarantined"] == 2 and report["halted"] == [YAMAGUCHI_CITY]
    assert report["forward_backlog"] == 1  # the applied bundle, not forwarded yet
    assert report["audit_entries"] == 20
    assert _core.Store(str(new), registry=storedir.load_registry(new)).role == "aggregator"
    gc.collect()
    rebuilt = centre.open(new)  # as the new centre's daemon opens it: with its key
    assert rebuilt.audit_head() == audit_head
    assert rebuilt.audit_verify().ok
    assert {e.kind for e in rebuilt.quarantine()} == {"halt", "security"}
    # The new centre forwards what the old one had not, the same attested envelope.
    [(_, _, forwarded)] = rebuilt.forward_batch()
    assert forwarded == rebuilt.changes(YAMAGUCHI_CITY, 1)[0]
    assert set(rebuilt.halted()) == {YAMAGUCHI_CITY}


def test_bootstrap_refuses_a_rewritten_audit_trail(centre: Centre) -> None:
    live = centre.open()
    live.apply(centre.bundles(2))
    for n in range(5):
        live.lookup(f"{n:011d}", requester="agency-a", task="T1")
    del live
    gc.collect()
    # "Agency-a": someone else asked, says the rewritten log.
    entry_2 = (2).to_bytes(8, "big")
    edit_entry(centre.path, b"audit", entry_2, lambda e: e.replace(b"agency-a", b"Agency-a", 1))
    code, output, new = centre.snapshot_and_bootstrap()
    assert code == ExitCode.FAILURE
    assert any("audit" in p for p in json.loads(output.splitlines()[0])["problems"])
    assert not new.exists()


@pytest.mark.parametrize("command", ["backup", "restore"])
@pytest.mark.parametrize("given", [(), ("--store",), ("--outbox",), ("--store", "--outbox")])
def test_backup_and_restore_take_exactly_one_of_store_and_outbox(
    command: str, given: tuple[str, ...], tmp_path: Path
) -> None:
    archive = tmp_path / "none.tar"  # never reached when the choice is wrong
    common = (
        ["--dir", str(tmp_path / "b"), "--key", str(tmp_path / "k.json")]
        if command == "backup"
        else ["--backup", str(archive)]
    )
    targets = [arg for flag in given for arg in (flag, str(tmp_path / flag.strip("-")))]
    code, output = cli(command, *common, *targets)
    if len(given) == 1:
        # The choice is right: it fails further on, on the missing key or archive.
        assert code in (ExitCode.CONFIG, ExitCode.NOT_FOUND), output
    else:
        assert code == ExitCode.USAGE and "exactly one of --store and --outbox" in output
