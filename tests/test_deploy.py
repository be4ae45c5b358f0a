"""The deployment files under deploy/ and the generated configuration reference.

- systemd units: `systemd-analyze verify` accepts them (with ExecStart pointed at this
  virtualenv's `jukisync`, as verify insists the binary exists) without a warning, and
  each carries the restart policy and hardening an operator expects;
- Prometheus alert rules: `promtool check rules`, and `promtool test rules` with
  synthetic series proving each alert fires and stays quiet (deploy/prometheus/
  alerts_test.yml); a weakened copy fails those tests, so they can fail;
- the Grafana dashboard: every PromQL expression parses (wrapped as recording rules
  for `promtool check rules`) and names only metrics the alerts or the code export;
- docs/configuration.md equals what `jukisync config reference` generates.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from externaltools import real_clock_env, require_tool
from jukisync import _core
from jukisync.cli import main
from jukisync.config import reference as configdoc
from jukisync.query.policy import Thresholds
from jukisync.tier.audit_metrics import AuditAnomalyCollector
from jukisync.tier.node import NodeConfig, TierNode
from jukisync.tier.observability import NodeMetrics
from jukisync.tier.registry_reload import RegistryHolder
from jukisync.transport.inprocess import InProcessNetwork
from netkit import KeyRing

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
    (DEPLOY / "systemd").glob("*.timer")
)
DAEMONS = [u for u in UNITS if u.suffix == ".service" and "backup" not in u.name]
JUKISYNC = Path(sys.executable).parent / "jukisync"
SHIPPED_EXEC = "/usr/local/bin/jukisync"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=120, env=real_clock_env()
    )


# --- systemd -----------------------------------------------------------------------------


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_units_cover_each_daemon() -> None:
    names = {u.name for u in UNITS}
    assert names == {
        "jukisync-national.service",
        "jukisync-aggregator@.service",
        "jukisync-publisher@.service",
        "jukisync-backup@.service",
        "jukisync-backup@.timer",
    }


@pytest.mark.parametrize("unit", DAEMONS, ids=lambda p: p.name)
def test_daemons_restart_on_failure_only(unit: Path) -> None:
    service = _unit(unit)["Service"]
    assert service["Restart"] == "on-failure"
    assert "3" in service["RestartPreventExitStatus"].split()  # bad config: no restart loop
    if "publisher" not in unit.name:  # tier daemons reload their registry on SIGHUP
        assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("unit", [u for u in UNITS if u.suffix == ".service"], ids=lambda p: p.name)
def test_unit_is_hardened(unit: Path) -> None:
    service = _unit(unit)["Service"]
    assert service["User"] == "jukisync"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }.items():
        assert service[key] == value, key
    assert "/var/lib/jukisync" in service["ReadWritePaths"].split()
    assert service["ExecStart"].startswith(f"{SHIPPED_EXEC} ")
    subcommand = service["ExecStart"].split()[1]
    assert subcommand in main.commands  # the unit runs a command that exists


def _verify(units_dir: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return _run("systemd-analyze", "verify", *(str(units_dir / n) for n in names))


def _instantiated(tmp_path: Path, transform: str = "") -> list[str]:
    """Copies of the units with ExecStart at this venv's jukisync; templates get an
    instance (`verify` checks instances, not bare templates)."""
    names = []
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8").replace(SHIPPED_EXEC, str(JUKISYNC)) + transform
        name = unit.name.replace("@.", "@example.")
        if unit.name == "jukisync-backup@.service":  # its argument file is optional here
            text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")
        (tmp_path / name).write_text(text, encoding="utf-8")
        names.append(name)
    return names


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    assert JUKISYNC.is_file()
    names = _instantiated(tmp_path)
    done = _verify(tmp_path, names)
    assert done.returncode == 0, done.stderr
    # verify only warns (exit 0) about unknown keys or bad values: none allowed.
    ours = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert ours == [], "\n".join(ours)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a mistyped directive is reported."""
    require_tool("systemd-analyze")
    names = _instantiated(tmp_path, transform="NoNewPrivilege=yes\n")
    done = _verify(tmp_path, names)
    assert any("NoNewPrivilege" in line for line in done.stderr.splitlines())


# --- Prometheus --------------------------------------------------------------------------

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
EXPECTED_ALERTS = {
    "JukisyncOriginHalted",
    "JukisyncOriginLagging",
    "JukisyncOriginLaggingSeqs",
    "JukisyncPendingStuck",
    "JukisyncForwardBacklog",
    "JukisyncDown",
    "JukisyncNodeFailed",
    "JukisyncDisconnected",
    "JukisyncQuarantineGrowing",
    "JukisyncForgedBundles",
    "JukisyncRegistryReloadRefused",
    "JukisyncRegistryVersionsDiffer",
    "JukisyncAuditAnomaly",
}


def _alerts() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_alert_rules_check() -> None:
    require_tool("promtool")
    done = _run("promtool", "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(EXPECTED_ALERTS)} rules found" in done.stdout


def test_every_alert_has_a_unit_test() -> None:
    assert set(_alerts()) == EXPECTED_ALERTS
    tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"]}
    quiet = {
        case["alertname"]
        for t in tests
        for case in t["alert_rule_test"]
        if case.get("exp_alerts") == []
    }
    assert tested == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS  # each is also shown to stay quiet


def test_alert_rules_unit_tests_pass() -> None:
    require_tool("promtool")
    done = _run("promtool", "test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("original", "weakened"),
    [
        ("jukisync_origin_lag_seconds) > 300", "jukisync_origin_lag_seconds) > 30000"),
        ("(jukisync_origin_halted) == 1", "(jukisync_origin_halted) == 2"),
        ('kind="security"', 'kind="halt"'),
        ("min(jukisync_registry_version) > 0", "min(jukisync_registry_version) > 5"),
    ],
)
def test_weakened_rules_fail_their_unit_tests(tmp_path: Path, original: str, weakened: str) -> None:
    require_tool("promtool")
    text = ALERTS.read_text(encoding="utf-8")
    assert original in text
    (tmp_path / "alerts.yml").write_text(text.replace(original, weakened), encoding="utf-8")
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    done = _run("promtool", "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert done.returncode != 0


# --- Grafana -----------------------------------------------------------------------------

DASHBOARD = DEPLOY / "grafana" / "jukisync.json"


def _dashboard_exprs() -> list[str]:
    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["expr"]] if isinstance(node.get("expr"), str) else []
            return found + [e for v in node.values() for e in walk(v)]
        if isinstance(node, list):
            return [e for v in node for e in walk(v)]
        return []

    return walk(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    require_tool("promtool")
    exprs = _dashboard_exprs()
    assert len(exprs) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = _run("promtool", "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout


def test_a_broken_dashboard_query_is_caught(tmp_path: Path) -> None:
    require_tool("promtool")
    path = tmp_path / "bad.yml"
    rules = {"groups": [{"name": "d", "rules": [{"record": "d:q", "expr": "sum by (x (up)"}]}]}
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    assert _run("promtool", "check", "rules", str(path)).returncode != 0


_KNOWN_METRICS = re.compile(r"\b(jukisync_[a-z_]+|process_[a-z_]+|up)\b")


def test_dashboard_and_alerts_name_exported_metrics(tmp_path: Path) -> None:
    """Every jukisync_* metric the dashboard and the alerts query is one a daemon
    exports (a renamed metric would leave a silent panel or alert)."""
    wire = _exported_metrics(tmp_path)
    queried = {
        m
        for e in [*_dashboard_exprs(), *_alerts().values()]
        for m in _KNOWN_METRICS.findall(e)
        if m.startswith("jukisync_")
    }
    assert "jukisync_origin_lag_seconds" in queried
    assert queried - wire == set()


def _exported_metrics(tmp_path: Path) -> set[str]:
    """Sample names of a real node's metrics registry, with the collectors a daemon
    adds (the audit anomalies of a node answering queries, the registry in use)."""
    ring = KeyRing()
    store = _core.Store(str(tmp_path / "store"), role="national", registry=ring.registry())
    node = TierNode(
        NodeConfig(name="national", role="national", queue="forwards"),
        store,
        InProcessNetwork().transport("national"),
    )
    metrics = NodeMetrics(node)
    metrics.registry.register(AuditAnomalyCollector(store, Thresholds()))
    metrics.registry.register(RegistryHolder(store, str(tmp_path / "store"), 1, b""))
    names = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


# --- configuration reference -------------------------------------------------------------


def test_every_config_key_is_documented() -> None:
    assert configdoc.undocumented() == []


def test_shipped_configuration_reference_is_current() -> None:
    shipped = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert shipped == configdoc.render(), (
        "docs/configuration.md drifted: `jukisync config reference --out docs/configuration.md`"
    )
    result = CliRunner().invoke(
        main, ["config", "reference", "--check", str(ROOT / "docs" / "configuration.md")]
    )
    assert result.exit_code == 0, result.output


def test_reference_lists_every_field_of_every_role() -> None:
    import msgspec

    from jukisync import config

    keys = configdoc.keys()
    for role, cls in (
        ("aggregator", config.AggregatorConfig),
        ("national", config.NationalConfig),
        ("municipality", config.MunicipalityConfig),
    ):
        paths = {k.path for k in keys[role]}
        for field in msgspec.structs.fields(cls):
            assert field.encode_name in paths
    assert "broker.prefetch" in {k.path for k in keys["national"]}


def test_config_reference_check_detects_drift(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(
        configdoc.render().replace("`broker.prefetch`", "`broker.prefetched`"), encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["config", "reference", "--check", str(stale)])
    assert result.exit_code == 1
    missing = CliRunner().invoke(main, ["config", "reference", "--check", str(tmp_path / "x")])
    assert missing.exit_code == 5
    as_json = CliRunner().invoke(main, ["config", "reference", "--json"])
    assert as_json.exit_code == 0
    assert {"aggregator", "national", "municipality"} <= set(json.loads(as_json.output))
