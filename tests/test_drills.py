"""`jukisync demo --scenario NAME`: the drills, in process and over RabbitMQ, and the
plain demo explaining itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jukisync.cli import ExitCode, main
from jukisync.sim import drillkit
from jukisync.sim.drills import SCENARIOS
from jukisync.sim.network import Network

SMALL = ["--residents", "600", "--changes", "600", "--timeout", "60"]
ALERT_RULES = Path(__file__).parents[1] / "deploy" / "prometheus" / "alerts.yml"

# What each drill must show an operator, beyond its checks: (step, tier) -> alert.
ALERTS_SEEN = {
    "centre-loss": ("centre-b is down", "centre-b", "JukisyncDown"),
    "garbled-update": ("signs garbled names", "centre-a", "JukisyncOriginHalted"),
    "national-restore": ("national lost its disk", "national", "JukisyncDown"),
}


def _drill(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["demo", *args, "--json"])
    assert result.stdout, result.output
    return result.exit_code, json.loads(result.stdout)


def _assert_drill_passed(report: dict[str, Any], scenario: str) -> None:
    assert report["scenario"] == scenario
    failed = [what for what, held in report["checks"].items() if not held]
    assert not failed, (failed, report["steps"])
    assert report["ok"] is True and report["converged"] is True
    assert len(report["checks"]) >= 4
    tiers = report["tiers"]
    assert set(tiers) == {"centre-a", "centre-b", "national"}
    assert len({t["digests"]["35"] for t in tiers.values()}) == 1
    assert all(t["heads_equal"] and not t["halted_origins"] for t in tiers.values())
    steps = report["steps"]
    assert len(steps) >= 3
    for step in steps:  # each says what happened and what every tier showed
        assert step["happened"] and step["seen"]
        for view in step["seen"].values():
            assert view["verdict"]
    assert steps[-1]["seen"]["national"]["verdict"].startswith("caught up")
    if scenario in ALERTS_SEEN:
        title, tier, alert = ALERTS_SEEN[scenario]
        [step] = [s for s in steps if title in s["title"]]
        assert alert in step["seen"][tier]["alerts"]
    assert not any(v["alerts"] for v in steps[-1]["seen"].values())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_drill_in_process(scenario: str) -> None:
    code, report = _drill("--scenario", scenario, *SMALL)
    _assert_drill_passed(report, scenario)
    assert code == ExitCode.OK
    assert report["transport"].startswith("in process")


@pytest.mark.broker
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_drill_over_rabbitmq(scenario: str, broker_url: str) -> None:
    code, report = _drill("--scenario", scenario, "--broker", broker_url, *SMALL)
    _assert_drill_passed(report, scenario)
    assert code == ExitCode.OK
    assert report["transport"].startswith("RabbitMQ at amqp://")
    assert "jukisync-demo-" in report["transport"]  # its own namespace, removed after
    assert "guest:guest" not in report["transport"]  # no password shown


def test_garbled_update_drill_tells_the_operator_why(tmp_path: Path) -> None:
    code, report = _drill("--scenario", "garbled-update", *SMALL)
    assert code == ExitCode.OK
    halted = report["steps"][1]
    assert any("HALTED" in line and "U+FFFD" in line for line in halted["logs"])
    assert halted["seen"]["centre-a"]["verdict"].startswith("halted:")
    assert halted["seen"]["centre-a"]["metrics"]["jukisync_store_quarantine_open"] == 1
    assert any("--supersedes" in line for line in report["steps"][2]["happened"])


def test_a_drill_whose_outcome_did_not_happen_exits_nonzero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_returns(self: Network, name: str) -> None:
        return None  # the lost centre is never brought back

    monkeypatch.setattr(Network, "restart_tier", never_returns)
    code, report = _drill("--scenario", "centre-loss", *SMALL)
    assert code == ExitCode.FAILURE
    assert report["ok"] is False
    assert report["checks"]["in the end every tier holds the same records"] is False
    text = CliRunner().invoke(main, ["demo", "--scenario", "centre-loss", *SMALL])
    assert text.exit_code == ExitCode.FAILURE
    assert "DRILL FAILED" in text.stdout and "did not happen" in text.stdout


def test_drill_table_says_what_happened() -> None:
    result = CliRunner().invoke(main, ["demo", "--scenario", "late-centre", *SMALL])
    assert result.exit_code == ExitCode.OK, result.output
    out = result.stdout
    assert "drill late-centre" in out and "network: in process" in out
    assert "centre-b starts" in out and "behind centre-a by" in out
    assert "DRILL PASSED" in out
    unknown = CliRunner().invoke(main, ["demo", "--scenario", "meteor"])
    assert unknown.exit_code == ExitCode.USAGE


def test_the_drills_alerts_are_the_deployed_rules() -> None:
    """Every alert a drill reports is a rule of deploy/prometheus/alerts.yml, with the
    threshold the drill applies."""
    rules = ALERT_RULES.read_text()
    thresholds = {
        "JukisyncOriginLagging": "> 300",
        "JukisyncOriginLaggingSeqs": "> 1000",
        "JukisyncForwardBacklog": "> 10000",
        "JukisyncOriginHalted": "== 1",
        "JukisyncNodeFailed": "== 0",
        drillkit.DOWN: 'up{job="jukisync"} == 0',
    }
    for name in [*drillkit.ALERTS, drillkit.DOWN]:
        match = re.search(rf"- alert: {name}\n(?:\s+#.*\n)*\s+expr: (.*)", rules)
        assert match, f"{name} is not a rule in {ALERT_RULES}"
        if name in thresholds:
            assert thresholds[name] in match.group(1), (name, match.group(1))


def test_plain_demo_explains_itself() -> None:
    result = CliRunner().invoke(main, ["demo", "--residents", "300", "--changes", "100"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "住基ネット" in out and "network: in process" in out
    assert "35 山口県" in out and "13 東京都" in out  # names beside the codes
    assert "both centres forward everything" in out
    assert "Equal heads mean" in out and "equal digests" in out
    report = json.loads(
        CliRunner().invoke(main, ["demo", "--residents", "300", "--changes", "0", "--json"]).stdout
    )
    assert report["prefecture_names"]["35"] == "山口県"
    # National receives each bundle from both centres: it counts the second copies.
    national = report["tiers"]["national"]
    assert national["duplicates"] > 0
    assert national["duplicates"] <= national["bundles_applied"]


@pytest.mark.broker
def test_plain_demo_says_it_runs_over_rabbitmq(broker_url: str) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--broker", broker_url, "--residents", "300", "--changes", "100"]
    )
    assert result.exit_code == 0, result.output
    assert "network: RabbitMQ at amqp://" in result.stdout
    assert "CONVERGED" in result.stdout
