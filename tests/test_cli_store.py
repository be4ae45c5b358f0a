"""Operator commands on a tier store: status, quarantine list/show/release/drop."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from jukisync import _core
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.trust import storedir
from netkit import CHIYODA, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin


@pytest.fixture
def halted_store(tmp_path: Path) -> tuple[Path, Origin]:
    """A store where 山口市 is halted by a bundle with a bad 個人番号 check digit, with its
    next bundle waiting, and a forged bundle quarantined as a security event."""
    ring = KeyRing()
    good, other = Origin(ring, YAMAGUCHI_CITY), Origin(ring, CHIYODA)
    path = tmp_path / "store"
    store = _core.Store(
        str(path), role="national", registry=ring.registry(), require_attestation=False
    )
    storedir.write_trust(path, ring.signed_registry(), _core.public_key(ring.root))
    bad = msgspec.structs.replace(update(YAMAGUCHI_CITY, 2), kojin_bango="983205673210")
    forged = other.bundle([update(CHIYODA, 1)])[:-5] + b"XXXXX"
    results = store.apply(
        [
            good.bundle([update(YAMAGUCHI_CITY, 1)]),
            good.bundle([bad]),
            good.bundle([update(YAMAGUCHI_CITY, 3)]),
            forged,
        ]
    )
    assert [r.status for r in results] == ["applied", "rejected", "gap", "rejected"]
    del store
    return path, good


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    out = (result.exit_code, result.output)
    # Each command opens the store; a failed one leaves it referenced from the kept
    # traceback, and LMDB allows one open environment per path in a process (a real
    # CLI run is its own process).
    del result
    gc.collect()
    return out


def test_status_reports_counts_and_halts(halted_store: tuple[Path, Origin]) -> None:
    path, _ = halted_store
    code, out = run("status", "--store", str(path), "--heads", "--digest", "35", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["stats"]["records"] == 1 and report["stats"]["pending"] == 1
    assert set(report["halted"]) == {YAMAGUCHI_CITY}
    assert report["verdict"]["state"] == "halted"
    assert report["verdict"]["line"].startswith(f"halted: {YAMAGUCHI_CITY}")
    assert report["heads"][YAMAGUCHI_CITY]["seq"] == 1
    assert len(report["digests"]["35"]) == 64


def test_list_show_and_release(halted_store: tuple[Path, Origin]) -> None:
    path, _ = halted_store
    code, out = run("quarantine", "list", "--store", str(path), "--json")
    assert code == 0, out
    listing = json.loads(out)
    kinds = {e["kind"]: e for e in listing["entries"]}
    assert set(kinds) == {"halt", "security"}
    assert "kojin_bango" in kinds["halt"]["reason"]
    halt_id = str(kinds["halt"]["id"])
    code, out = run("quarantine", "show", "--store", str(path), "--json", halt_id)
    assert code == 0 and json.loads(out)["envelope_hex"]
    # a security rejection cannot be released
    who = ("--operator", "op-1", "--reason", "vendor confirmed the patch")
    code, out = run("quarantine", "release", "--store", str(path), halt_id)
    assert code == ExitCode.USAGE and "--operator" in out  # who and why are required
    code, out = run(
        "quarantine", "release", "--store", str(path), *who, str(kinds["security"]["id"])
    )
    assert code == ExitCode.INPUT and "security" in out
    code, out = run("quarantine", "release", "--store", str(path), *who, halt_id)
    assert code == 0, out
    assert "1 waiting bundle(s)" in out
    code, out = run("quarantine", "show", "--store", str(path), "--json", halt_id)
    [action] = json.loads(out)["actions"]
    assert (action["action"], action["operator"], action["role"]) == ("release", "op-1", "national")
    assert action["reason"] == "vendor confirmed the patch" and action["at"]
    code, out = run("status", "--store", str(path), "--json")
    assert json.loads(out)["halted"] == {} and json.loads(out)["stats"]["records"] == 3


def test_drop_leaves_the_origin_waiting_for_a_reissue(halted_store: tuple[Path, Origin]) -> None:
    path, _ = halted_store
    code, out = run("quarantine", "list", "--store", str(path), "--json")
    entry = next(e for e in json.loads(out)["entries"] if e["kind"] == "halt")
    who = ("--operator", "op-2", "--reason", "garbled")
    code, out = run("quarantine", "drop", "--store", str(path), *who, str(entry["id"]))
    assert code == 0 and entry["hash"] in out
    code, out = run("quarantine", "list", "--store", str(path), "--json")
    assert "dropped" in json.loads(out)["halted"][YAMAGUCHI_CITY]


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["quarantine", "show", "--store", "{path}", "999"], ExitCode.NOT_FOUND),
        (
            ["quarantine", "drop", "--store", "{path}", "--operator", "o", "--reason", "r", "999"],
            ExitCode.INPUT,
        ),
        (["status", "--store", "{missing}"], ExitCode.NOT_FOUND),
    ],
)
def test_errors_have_their_exit_codes(
    halted_store: tuple[Path, Origin], tmp_path: Path, args: list[str], exit_code: int
) -> None:
    path, _ = halted_store
    filled = [a.format(path=path, missing=tmp_path / "nothing") for a in args]
    code, out = run(*filled)
    assert code == exit_code, out


def test_store_without_trust_files_is_a_config_error(tmp_path: Path) -> None:
    ring = KeyRing()
    _core.Store(str(tmp_path / "s"), role="national", registry=ring.registry())
    code, out = run("status", "--store", str(tmp_path / "s"))
    assert code == ExitCode.CONFIG and "registry.bin" in out
