"""`jukisync outbox reseed`: a municipality's outbox lost (or restored old) is brought up to a
centre's chain head from the centre's signed change log, so publishing resumes
without a fork; a forged change log or a diverged outbox is refused."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import _core
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.publisher.origin import Publisher
from jukisync.trust import keys, storedir
from jukisync.wire.messages import Envelope
from netkit import HAGI, KeyRing, update
from storekit import forge_signature

CENTRE = "centre-east"


class Setup:
    """萩市's publisher, a centre store applying its bundles, and the files a
    municipality operator has (config, key, root public key)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ring = KeyRing()
        key_id, self.secret = self.ring.add(HAGI)
        centre_id, centre_secret = self.ring.add(CENTRE)
        pair = keys.KeyPair(HAGI, key_id, self.secret, _core.public_key(self.secret), 0)
        self.key_file, _ = keys.save(pair, tmp / "keys")
        self.root_file = tmp / "keys" / "root.pub"
        self.root_file.write_text(_core.public_key(self.ring.root).hex())
        self.outbox = tmp / "outbox"
        self.config = tmp / "muni.toml"
        self.config.write_text(
            f'role = "municipality"\norigin = "{HAGI}"\n'
            f'signing_key = "{self.key_file}"\noutbox = "{self.outbox}"\n'
        )
        self.store_dir = tmp / "centre"
        self.centre_key = (centre_id, centre_secret)
        self.store = self.open_store()
        storedir.write_trust(
            self.store_dir, self.ring.signed_registry(), _core.public_key(self.ring.root)
        )
        self.n = 0

    def open_store(self) -> _core.Store:
        """The centre's store, as its daemon opens it (it applies and attests)."""
        key_id, secret = self.centre_key
        return _core.Store(
            str(self.store_dir),
            role="aggregator",
            registry=self.ring.registry(),
            centre_id=CENTRE,
            centre_key=secret,
            centre_key_id=key_id,
        )

    def publish(self, bundles: int, *, deliver: bool = True) -> None:
        """Publish `bundles` bundles of 3 updates (applied at the centre if `deliver`)."""
        publisher = Publisher(HAGI, self.secret, f"{HAGI}-k1", self.outbox, sync=False)
        try:
            for _ in range(bundles):
                for _ in range(3):
                    self.n += 1
                    publisher.add(update(HAGI, self.n))
                entry = publisher.flush()
                assert entry is not None
                if deliver:
                    assert self.store.apply([entry.envelope])[0].status == "applied"
                publisher.confirm([entry])
        finally:
            publisher.close()

    def close_store(self) -> None:
        del self.store
        gc.collect()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    out = (result.exit_code, result.output)
    del result
    gc.collect()
    return out


def _reseed(s: Setup, *extra: str) -> tuple[int, str]:
    return cli(
        "outbox", "reseed", "--config", str(s.config), "--from-store", str(s.store_dir),
        "--root", str(s.root_file), "--json", *extra,
    )  # fmt: skip


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.integers(1, 6), backed_up_at=st.integers(0, 6), after=st.integers(1, 3))
def test_a_lost_or_old_outbox_continues_the_chain(
    tmp_path_factory: pytest.TempPathFactory, before: int, backed_up_at: int, after: int
) -> None:
    s = Setup(tmp_path_factory.mktemp("reseed"))
    backup = s.tmp / "outbox-backup"
    s.publish(min(backed_up_at, before))
    if backed_up_at <= before:
        shutil.copytree(s.outbox, backup)  # an old copy of the outbox (or none at all)
    s.publish(before - min(backed_up_at, before))
    head = s.store.chain_head(HAGI)
    s.close_store()
    shutil.rmtree(s.outbox)  # the disk is lost
    if backup.exists():
        shutil.copytree(backup, s.outbox)
    code, output = _reseed(s)
    assert code == 0, output
    result = json.loads(output)
    assert result["after"] == before * 3 and result["state"] in ("reseeded", "current")
    # The publisher resumes; the centre applies its next bundles: no fork.
    s.store = s.open_store()
    assert s.store.chain_head(HAGI) == head
    s.publish(after)
    head_after = s.store.chain_head(HAGI)
    assert head_after is not None and head_after[0] == (before + after) * 3
    # Adopted bundles are kept to serve resend requests, as the origin signed them.
    publisher = Publisher(HAGI, s.secret, f"{HAGI}-k1", s.outbox, sync=False)
    try:
        resent = publisher.resend(1)
        assert [e.first_seq for e in resent][:1] == [1] or result["adopted"] < before
        for entry in resent:
            envelope = msgspec.msgpack.decode(entry.envelope, type=Envelope)
            assert envelope.attestations == []
    finally:
        publisher.close()


def test_without_reseed_a_fresh_outbox_forks(tmp_path: Path) -> None:
    """Why reseed exists: the centre refuses a fresh outbox's first bundle."""
    s = Setup(tmp_path)
    s.publish(2)
    shutil.rmtree(s.outbox)
    publisher = Publisher(HAGI, s.secret, f"{HAGI}-k1", s.outbox, sync=False)
    publisher.add(update(HAGI, 99))
    entry = publisher.flush()
    publisher.close()
    assert entry is not None
    result = s.store.apply([entry.envelope])[0]
    assert result.status == "rejected" and "fork" in (result.reason or "")


def test_a_forged_change_log_entry_is_refused(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.publish(3)
    s.close_store()
    forge_signature(s.store_dir, HAGI, 6)
    shutil.rmtree(s.outbox)
    code, output = _reseed(s)
    assert code == ExitCode.FAILURE and "bad signature" in output
    assert not (s.outbox / "data.mdb").exists() or _head_seq(s) == 0


def _head_seq(s: Setup) -> int:
    publisher = Publisher(HAGI, s.secret, f"{HAGI}-k1", s.outbox, sync=False)
    try:
        return publisher.head.last_seq
    finally:
        publisher.close()


def test_an_outbox_with_undelivered_bundles_is_not_reseeded(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.publish(2)
    backup = s.tmp / "old"
    shutil.copytree(s.outbox, backup)
    s.publish(2)
    s.close_store()
    shutil.rmtree(s.outbox)
    shutil.copytree(backup, s.outbox)
    # The restored outbox takes new updates before anyone noticed: numbered on the old
    # head, they collide with what the centre holds.
    publisher = Publisher(HAGI, s.secret, f"{HAGI}-k1", s.outbox, sync=False)
    publisher.add(update(HAGI, 500))
    publisher.close()
    code, output = _reseed(s)
    assert code == ExitCode.FAILURE and "accepted updates" in output
    assert _head_seq(s) == 6  # unchanged


def test_reseed_from_a_snapshot_and_usage_errors(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.publish(2)
    s.close_store()
    snap = tmp_path / "centre.tar"
    centre_key = keys.KeyPair(
        CENTRE,
        s.ring.key_id(CENTRE),
        s.ring.secret(CENTRE),
        _core.public_key(s.ring.secret(CENTRE)),
        0,
    )
    key_file, _ = keys.save(centre_key, tmp_path / "centre-keys")
    assert (
        cli("snapshot", "--store", str(s.store_dir), "--key", str(key_file), "--out", str(snap))[0]
        == 0
    )
    shutil.rmtree(s.outbox)
    code, output = cli(
        "outbox", "reseed", "--config", str(s.config), "--from-snapshot", str(snap),
        "--root", str(s.root_file), "--json",
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(output)["after"] == 6
    assert (
        cli("outbox", "reseed", "--config", str(s.config), "--root", str(s.root_file))[0]
        == ExitCode.USAGE
    )
    missing = cli(
        "outbox", "reseed", "--config", str(s.config), "--from-store", str(tmp_path / "none"),
        "--root", str(s.root_file),
    )  # fmt: skip
    assert missing[0] == ExitCode.NOT_FOUND
