"""`jukisync_audit_anomalies`: the audit log's anomalies of the last 24 hours as a
gauge per kind, agreeing with `audit.anomalies` (the `audit anomalies` report)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jukisync import _core, clock
from jukisync.query import audit
from jukisync.query.policy import Thresholds
from jukisync.tier.audit_metrics import KINDS, WINDOW_US, AuditAnomalyCollector
from netkit import KeyRing

NOW = "2026-06-10T12:00:00+09:00"
HOUR = 3600 * 1_000_000


def _gauge(collector: AuditAnomalyCollector) -> dict[str, float]:
    (family,) = list(collector.collect())
    assert family.name == "jukisync_audit_anomalies"
    return {s.labels["kind"]: s.value for s in family.samples}


@pytest.fixture
def store(tmp_path: Path) -> _core.Store:
    return _core.Store(str(tmp_path / "store"), role="national", registry=KeyRing().registry())


def test_quiet_log_reports_zero_for_every_kind(
    store: _core.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(clock.NOW_ENV, NOW)
    now = clock.now_us()
    store.lookup("12345678901", requester="agency-a", task="T1", time=now - HOUR)
    assert _gauge(AuditAnomalyCollector(store, Thresholds())) == dict.fromkeys(KINDS, 0)


@settings(max_examples=25, deadline=None)
@given(hours_ago=st.lists(st.integers(min_value=1, max_value=47), min_size=1, max_size=8))
def test_night_queries_in_the_window_count(
    tmp_path_factory: pytest.TempPathFactory, hours_ago: list[int]
) -> None:
    store = _core.Store(
        str(tmp_path_factory.mktemp("s") / "store"), role="national", registry=KeyRing().registry()
    )
    now = clock.parse_instant(NOW)
    for h in sorted(hours_ago, reverse=True):
        store.lookup("12345678901", requester="agency-a", task="T1", time=now - h * HOUR)
    os.environ[clock.NOW_ENV] = NOW
    try:
        gauge = _gauge(AuditAnomalyCollector(store, Thresholds()))
    finally:
        del os.environ[clock.NOW_ENV]
    expected = audit.anomalies(store.audit_entries(now - WINDOW_US, None), Thresholds())
    assert gauge["late_night"] == sum(a.kind == "late_night" for a in expected)
    # 12:00 JST now: hours 7..14 ago are 22:00..05:00 of last night, inside the window.
    assert (gauge["late_night"] > 0) == any(7 <= h <= 14 for h in hours_ago)
