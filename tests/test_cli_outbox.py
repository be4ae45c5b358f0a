"""`jukisync outbox inspect|verify`: an operator's view of a (damaged) outbox."""

from __future__ import annotations

import json
from pathlib import Path

import lmdb
import msgspec
import pytest
from click.testing import CliRunner

from jukisync.cli import main
from jukisync.publisher.bundling import BundlePolicy, Numbered
from jukisync.publisher.origin import Publisher
from jukisync.publisher.outbox import Change, Outbox
from jukisync.trust import keys
from jukisync.wire.messages import encode
from netkit import HAGI, YAMAGUCHI_CITY, update

ORIGIN = YAMAGUCHI_CITY


@pytest.fixture
def config(tmp_path: Path) -> Path:
    pair = keys.generate(ORIGIN, "k1")
    keys.save(pair, tmp_path / "keys")
    path = tmp_path / "muni.toml"
    path.write_text(
        f'role = "municipality"\norigin = "{ORIGIN}"\n'
        'signing_key = "keys/k1.key.json"\noutbox = "outbox"\n'
    )
    p = Publisher(
        ORIGIN, pair.secret, "k1", tmp_path / "outbox", policy=BundlePolicy(max_updates=3)
    )
    p.add_many([update(ORIGIN, n) for n in range(8)])  # 1-3, 4-6 sealed; 7, 8 open
    p.confirm(p.unconfirmed()[:1])
    p.close()
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_inspect_shows_head_range_and_unconfirmed(config: Path) -> None:
    code, out = run("outbox", "inspect", "--config", str(config), "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["head_seq"] == 6 and summary["next_seq"] == 9
    assert summary["open_updates"] == 2 and summary["unconfirmed_bundles"] == 1
    assert (summary["retained_from_seq"], summary["retained_to_seq"]) == (1, 6)
    assert summary["last_bundle"]["first_seq"] == 4 and not summary["last_bundle"]["confirmed"]
    code, out = run("outbox", "inspect", "--config", str(config))
    assert code == 0 and "unconfirmed" in out and "seq 1-6" in out


def test_verify_passes_a_sound_outbox(config: Path) -> None:
    code, out = run("outbox", "verify", "--config", str(config), "--json")
    assert code == 0, out
    assert json.loads(out.splitlines()[0]) == {
        "ok": True,
        "bundles": 2,
        "open_updates": 2,
        "damage": [],
    }


def test_verify_names_each_damaged_entry(config: Path, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox", ORIGIN)
    # What an unvalidated add used to leave behind: an update that does not decode.
    poison = msgspec.structs.replace(update(ORIGIN, 50), seq=9, sex=3, municipality=HAGI)
    outbox.commit(Change(add_open=[Numbered(9, encode(poison))], next_seq=10))
    outbox.close()
    env = lmdb.open(str(tmp_path / "outbox"), max_dbs=4)
    bundles = env.open_db(b"bundles")
    with env.begin(write=True, db=bundles) as txn:  # flip a byte of bundle 4-6
        key = (6).to_bytes(8, "big")
        stored = txn.get(key)
        assert stored is not None
        raw = bytearray(stored)
        raw[-5] ^= 0xFF
        txn.put(key, bytes(raw))
    env.close()
    code, out = run("outbox", "verify", "--config", str(config))
    assert code == 1, out
    assert "open update 9: does not decode" in out and "Invalid enum value 3" in out
    assert "bundle 4-6: " in out  # whichever check the flipped byte breaks
    assert "bundle 1-3" not in out
    code, out = run("outbox", "inspect", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["open_updates"] == 3


def test_a_missing_outbox_is_not_found(tmp_path: Path) -> None:
    pair = keys.generate(ORIGIN, "k1")
    keys.save(pair, tmp_path / "keys")
    path = tmp_path / "muni.toml"
    path.write_text(
        f'role = "municipality"\norigin = "{ORIGIN}"\n'
        'signing_key = "keys/k1.key.json"\noutbox = "nowhere"\n'
    )
    assert run("outbox", "verify", "--config", str(path))[0] == 5
