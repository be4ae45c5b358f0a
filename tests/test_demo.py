"""`jukisync demo` and `jukisync lookup` through the command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from jukisync.cli import ExitCode, main
from jukisync.publisher.bundling import BundlePolicy
from jukisync.sim.demo import DemoOptions, DemoResult
from jukisync.sim.network import Network, NetworkSpec
from jukisync.trust.storedir import ROOT_FILE
from jukisync.wire.messages import ChangeReason
from netkit import HAGI, update

SMALL = ["--residents", "1500", "--changes", "1500", "--bundle-size", "50"]


@pytest.fixture(scope="module")
def kept_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path]:
    data_dir = tmp_path_factory.mktemp("demo") / "net"
    result = CliRunner().invoke(main, ["demo", *SMALL, "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), data_dir


def test_demo_converges_and_reports_every_tier(kept_demo: tuple[dict[str, object], Path]) -> None:
    report, data_dir = kept_demo
    assert report["converged"] is True
    assert report["updates"] == 3000
    seconds = report["elapsed_s"]  # present and plausible; never a timing bound
    assert isinstance(seconds, float) and seconds > 0
    tiers = report["tiers"]
    assert isinstance(tiers, dict)
    assert set(tiers) == {"centre-a", "centre-b", "national"}
    records = {t["records"] for t in tiers.values()}
    assert len(records) == 1 and records.pop() > 0
    for tier in tiers.values():
        assert tier["updates_applied"] == 3000
        assert tier["heads_equal"] is True
        assert tier["inconsistencies"] == []
        assert tier["security_events"] == tier["halts"] == 0
    # 山口県 and at least one other prefecture, all digests equal.
    prefectures = report["prefectures"]
    assert isinstance(prefectures, list)
    assert "35" in prefectures and len(prefectures) >= 2
    assert report["digests_equal"] == {p: True for p in prefectures}
    assert report["centres_agree"] is True
    assert report["origins"] >= 20  # type: ignore[operator]
    assert report["data_dir"] == str(data_dir)


def test_demo_table_without_json() -> None:
    result = CliRunner().invoke(main, ["demo", "--residents", "300", "--changes", "100"])
    assert result.exit_code == 0, result.output
    assert "CONVERGED" in result.stdout
    assert "centre-a" in result.stdout and "national" in result.stdout


def test_demo_exit_status_says_whether_it_converged(
    kept_demo: tuple[dict[str, object], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import jukisync.cli.demo as cli_demo
    from jukisync.sim.demo import run_demo as real

    async def diverging(options: DemoOptions, on_progress: object = None) -> DemoResult:
        result = await real(options)
        result.converged = False
        return result

    monkeypatch.setattr(cli_demo, "run_demo", diverging)
    result = CliRunner().invoke(main, ["demo", "--residents", "200", "--changes", "0", "--json"])
    assert result.exit_code == ExitCode.FAILURE
    assert json.loads(result.stdout)["converged"] is False


def test_demo_says_when_the_broker_is_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    result = CliRunner().invoke(main, ["demo", "--broker", url, "--residents", "10"])
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in result.stderr and "unavailable" in result.stderr
    bad = CliRunner().invoke(main, ["demo", "--broker", "http://localhost/"])
    assert bad.exit_code == ExitCode.USAGE


def test_demo_refuses_a_used_data_dir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = CliRunner().invoke(main, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == ExitCode.USAGE
    assert "must be empty" in result.stderr


def test_lookup_reads_the_kept_stores(kept_demo: tuple[dict[str, object], Path]) -> None:
    report, data_dir = kept_demo
    code = report["sample_code"]
    assert isinstance(code, str)
    runner = CliRunner()
    shown = {}
    for tier in ("national", "centre-a"):
        result = runner.invoke(main, ["lookup", "--store", str(data_dir / tier), "--json", code])
        assert result.exit_code == 0, result.output
        shown[tier] = json.loads(result.stdout)
        assert shown[tier]["juminhyo_code"] == code
    assert shown["national"] == shown["centre-a"]
    text = runner.invoke(main, ["lookup", "--store", str(data_dir / "national"), code])
    assert "住民票コード" in text.stdout and code in text.stdout


def test_lookup_errors(kept_demo: tuple[dict[str, object], Path], tmp_path: Path) -> None:
    _, data_dir = kept_demo
    runner = CliRunner()
    missing = runner.invoke(main, ["lookup", "--store", str(data_dir / "national"), "00000000000"])
    assert missing.exit_code == ExitCode.NOT_FOUND
    bad = runner.invoke(main, ["lookup", "--store", str(data_dir / "national"), "12345"])
    assert bad.exit_code == ExitCode.USAGE
    nowhere = runner.invoke(main, ["lookup", "--store", str(tmp_path / "none"), "00000000000"])
    assert nowhere.exit_code == ExitCode.NOT_FOUND
    assert not (tmp_path / "none").exists()  # no empty store was created by the lookup
    # A store without its root key cannot be trusted, so it is not opened.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "data.mdb").touch()  # the trust files are checked before the store is opened
    untrusted = runner.invoke(main, ["lookup", "--store", str(copy), "00000000000"])
    assert untrusted.exit_code == ExitCode.CONFIG
    assert ROOT_FILE in untrusted.stderr or "registry.bin" in untrusted.stderr


def test_lookup_follows_a_code_change(tmp_path: Path) -> None:
    async def run() -> None:
        spec = NetworkSpec(origins=[HAGI], policy=BundlePolicy(10, 0.01))
        net = Network(tmp_path, spec)
        await net.start()
        born = update(HAGI, 1)
        changed = msgspec.structs.replace(
            update(HAGI, 2, reason=ChangeReason.JUMINHYO_CODE_CHANGE),
            previous_juminhyo_code=born.juminhyo_code,
            kojin_bango=born.kojin_bango,
            changed_on=dt.date(2024, 5, 1),
        )
        net.submit([(HAGI, born), (HAGI, changed)])
        await net.drain_publishers()
        assert await net.wait_converged(30)
        await net.stop()

    asyncio.run(run())
    new_code = update(HAGI, 2).juminhyo_code
    old_code = update(HAGI, 1).juminhyo_code
    result = CliRunner().invoke(
        main, ["lookup", "--store", str(tmp_path / "national"), "--json", old_code]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["juminhyo_code"] == new_code
    assert found["redirected_from"] == [old_code]
