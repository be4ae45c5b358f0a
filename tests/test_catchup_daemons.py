"""Issue 9, cases 1 and 4, through the daemons and the real broker: a tier that missed
bundles learns it from the announced heads and converges without the origin
publishing again, and its `/healthz` says `degraded` (503) until it has.

Every wait polls with a bound; health is sampled before the store, so a sample
"ok" taken while the store is still behind is a contradiction the test catches
(a store's heads only move forward).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from daemonkit import (
    Net,
    Nets,
    assert_matches_reference,
    synthetic_updates,
    until,
    write_updates,
)
from jukisync.tier.daemon import national_queue_name

# Any announced seq not applied is a degradation; and no claim of being caught up
# before 5 s of hearing heads (relayed every 0.5 s), even on a loaded machine.
STRICT = "max_lag_seqs = 0\nsettle_s = 5.0"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, json.dumps({"status": f"unreachable: {exc}"})


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _log_lines(net: Net, name: str) -> list[str]:
    """The lines of a daemon's log (without the kit's `===` command headers)."""
    text = net.procs[name].log.read_text()
    return [line for line in text.splitlines() if line and not line.startswith("=== ")]


def _converges_degraded_until_done(net: Net, name: str) -> list[dict[str, object]]:
    """Poll `name`'s /healthz and store until it holds every origin's head and says
    ok; every sample taken while behind must be non-200. Returns the samples."""
    heads = net.expected_heads()
    samples: list[dict[str, object]] = []

    def step() -> bool:
        code, body = _get(net.ports[name], "/healthz")
        converged = net.converged([name], heads)
        health = json.loads(body)
        samples.append({"code": code, "converged": converged, **health})
        return converged and code == 200

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in net.procs.values())

    assert until(step), f"{name} did not converge and report ok: {samples[-3:]}\n{logs()}"
    behind_ok = [s for s in samples if not s["converged"] and s["code"] == 200]
    assert not behind_ok, f"healthy while behind: {behind_ok}"
    degraded = [s for s in samples if s["status"] == "degraded"]
    assert degraded, f"never reported degraded while behind: {samples[:5]}\n{logs()}"
    assert any("behind" in str(s["reasons"]) for s in degraded), degraded[:3]
    return samples


def test_late_centre_converges_from_its_twin(make_net: Nets, tmp_path: Path) -> None:
    """Case 1: national and east up, the origins publish and exit, then west starts:
    it hears east's relayed heads, asks the origin (gone: its request waits unread),
    then its twin east, which serves the range from its change log."""
    net = make_net(centres=("east", "west"), http=True, health=STRICT)
    east, west = net.centres
    net.start_and_wait(net.national, east)
    data = write_updates(tmp_path / "changes.jsonl", synthetic_updates(60, 90, seed=11))
    net.publish_all(data)  # every origin publishes, is confirmed, and exits
    net.wait_converged([east, net.national])

    net.start(west, "--log-format", "json")
    _converges_degraded_until_done(net, west)

    assert_matches_reference(net, [east, west, net.national], net.reference())
    lines = [json.loads(line) for line in _log_lines(net, west)]
    assert any("asked the twin centre" in line["message"] for line in lines)
    assert any(line["message"].startswith(f"{west}: applied ") for line in lines)
    for line in lines:
        # ISO 8601 with its offset, e.g. 2026-12-01T21:45:03.120+00:00
        assert dt.datetime.fromisoformat(line["time"]).utcoffset() is not None, line
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    assert "from the change log" in net.procs[east].output()
    code, text = _get(net.ports[west], "/metrics")
    assert code == 200
    for origin, (seq, _) in net.expected_heads().items():
        assert _metric(text, "jukisync_origin_announced_seq", origin=origin) == seq
        assert _metric(text, "jukisync_origin_lag_seqs", origin=origin) == 0
        assert _metric(text, "jukisync_origin_lag_seconds", origin=origin) == 0
        applied_at = _metric(text, "jukisync_origin_last_applied_timestamp_seconds", origin=origin)
        assert applied_at is not None and applied_at > 0
    repairs = _metric(text, "jukisync_repair_requests_total")
    assert repairs is not None and repairs >= 1
    assert _metric(text, "jukisync_reconnects_total") == 0


def test_national_recovers_lost_forwards_from_the_centre(make_net: Nets, tmp_path: Path) -> None:
    """Case 4: every forward to national is lost (its queue purged before it ever
    consumed); national hears the centre's relayed heads and asks it to re-forward
    from its change log. The origins never publish again."""
    net = make_net(centres=("east",), http=True, health=STRICT)
    [east] = net.centres
    net.declare_centre_queue(net.national)  # forwards are routable: east forwards all
    net.start_and_wait(east)
    data = write_updates(tmp_path / "changes.jsonl", synthetic_updates(60, 90, seed=12))
    net.publish_all(data)
    net.wait_converged([east])
    assert until(lambda: net.store(east).stats()["forward_backlog"] == 0)
    assert net.purge(national_queue_name(net.national)) > 0  # national lost them all

    net.start(net.national)
    _converges_degraded_until_done(net, net.national)

    assert_matches_reference(net, [east, net.national], net.reference())
    assert "asked the centres to re-send" in net.procs[net.national].output()
    assert "(to the national)" in net.procs[east].output()
