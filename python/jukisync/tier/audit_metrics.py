"""`jukisync_audit_anomalies{kind}`: anomalies of the query audit log (late-night use,
mass searches, repeated denials) in the last 24 hours, for the alert rules
(deploy/prometheus/alerts.yml, JukisyncAuditAnomaly).

Registered on a node's metrics registry when the node answers queries, since only then
does its store hold an audit log and the policy say the thresholds. Computed at scrape
time from the store's audit entries of the window, with the same `anomalies()` the
`jukisync audit anomalies` report uses, so the alert and the report agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from jukisync import _core, clock
from jukisync.query import audit
from jukisync.query.policy import Thresholds

__all__ = ["KINDS", "WINDOW_US", "AuditAnomalyCollector"]

WINDOW_US = 24 * 3600 * 1_000_000
KINDS = ("late_night", "mass_search", "repeated_denials")


class AuditAnomalyCollector:
    def __init__(self, store: _core.Store, thresholds: Thresholds) -> None:
        self.store = store
        self.thresholds = thresholds

    def collect(self) -> Iterable[Metric]:
        now = clock.now_us()
        found = audit.anomalies(self.store.audit_entries(now - WINDOW_US, None), self.thresholds)
        counts = Counter(a.kind for a in found)
        family = GaugeMetricFamily(
            "jukisync_audit_anomalies",
            "Anomalies flagged in the query audit log over the last 24 hours",
            labels=["kind"],
        )
        for kind in sorted({*KINDS, *counts}):
            family.add_metric([kind], counts.get(kind, 0))
        yield family
