"""What a tier node reports of its batches: a halt found while draining pending is
counted, logged and halts the origin like a delivered one; applied batches are
logged, one line per batch or a summary when busy; log lines carry their offset."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jukisync import _core, logs
from jukisync.tier.node import NodeConfig, TierNode, _BatchLog
from jukisync.tier.observability import NodeMetrics
from jukisync.transport.inprocess import InProcessNetwork
from netkit import YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

ORIGIN = YAMAGUCHI_CITY


def test_a_halt_found_while_draining_pending_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    first = origin.bundle([update(ORIGIN, 1)])
    bad = msgspec.structs.replace(update(ORIGIN, 2), kojin_bango="983205673210")  # bad digit
    second = origin.bundle([bad])
    third = origin.bundle([update(ORIGIN, 3)])
    store = _core.Store(
        str(tmp_path / "store"),
        role="national",
        registry=ring.registry(),
        require_attestation=False,
    )
    node = TierNode(
        NodeConfig(name="n", role="national", queue="q"), store, InProcessNetwork().transport("n")
    )
    metrics = NodeMetrics(node)
    assert [r.status for r in store.apply([second, third])] == ["gap", "gap"]
    [result] = store.apply([first])
    assert result.status == "applied" and result.released == 0
    found = result.pending_rejected
    assert found is not None and (found.kind, found.first_seq) == ("halt", 2)
    with caplog.at_level(logging.INFO, logger="jukisync.node"):
        node._account(result)
        node._log_batch([result])
    metrics.observe([result], 0.001)
    assert node.stats.halts == 1 and node.stats.halted_origins == {ORIGIN}
    assert any("HALTED (found while draining pending)" in m for m in caplog.messages)
    assert any(m.startswith("n: applied 1 bundles") for m in caplog.messages)
    assert store.stats()["rejected_halt"] == 1
    text = metrics.render("")[0].decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("jukisync_rejected_total", (("kind", "halt"), ("origin", ORIGIN)))] == 1
    assert samples[("jukisync_store_rejected_halt_total", ())] == 1
    assert samples[("jukisync_origin_halted", (("origin", ORIGIN),))] == 1


class _Applied:
    """Stands in for an applied `ApplyResult` in the batch log's arithmetic."""

    status = "applied"
    released = 0
    updates = 3

    def __init__(self, origin: str) -> None:
        self.origin = origin


def test_batch_log_is_one_line_per_batch_or_a_summary_when_busy() -> None:
    batch_log = _BatchLog()
    one = [_Applied(ORIGIN)]
    assert batch_log.add(one, 0, now=0.0, every_s=1.0) is not None  # type: ignore[arg-type]
    # Busy: three batches within the second are summed into the next line.
    for t in (0.2, 0.4, 0.6):
        assert batch_log.add(one, 1, now=t, every_s=1.0) is None  # type: ignore[arg-type]
    line = batch_log.add((), 0, now=1.5, every_s=1.0)  # quiet: the summary comes out
    assert line == (
        f"applied 3 bundles (9 updates) of 1 origins ({ORIGIN}) in 3 batches; "
        "3 deliveries were redeliveries"
    )
    assert batch_log.add((), 0, now=3.0, every_s=1.0) is None  # nothing new: no line


def test_json_log_lines_carry_time_with_offset() -> None:
    record = logging.LogRecord("jukisync.node", logging.INFO, __file__, 1, "x %s", ("y",), None)
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "jukisync.node", "x y")
    assert dt.datetime.fromisoformat(line["time"]).utcoffset() is not None
    text = logs.TextFormatter().format(record)
    stamp = text.split(" ", 1)[0]
    assert dt.datetime.fromisoformat(stamp).utcoffset() is not None
    assert text.endswith("INFO jukisync.node: x y")


async def test_health_is_degraded_while_behind_or_halted_and_ok_when_caught_up(
    tmp_path: Path,
) -> None:
    """Daemon.health over a running national node (in-process transport): behind an
    announced head (signed by the origin) → degraded with the reason, and ok once the
    bundles are applied; a halted origin → degraded."""
    import asyncio
    import types

    from jukisync.config import HealthConfig, NationalConfig, TrustConfig
    from jukisync.tier.daemon import Daemon
    from jukisync.trust.heads import sign_head
    from jukisync.wire.messages import Head

    ring = KeyRing()
    origin = Origin(ring, ORIGIN)
    bundles = [origin.bundle([update(ORIGIN, i)]) for i in range(1, 4)]
    store = _core.Store(
        str(tmp_path / "store"),
        role="national",
        registry=ring.registry(),
        require_attestation=False,
    )
    network = InProcessNetwork()
    node = TierNode(
        NodeConfig(name="n", role="national", queue="q", heads_queue="heads.n"),
        store,
        network.transport("n"),
        registry=ring.registry(),
    )
    config = NationalConfig(
        store=str(tmp_path / "store"),
        trust=TrustConfig(root_public_key="unused", registry="unused"),
        health=HealthConfig(max_lag_seqs=0, settle_s=0.001),
    )
    daemon = Daemon(config)
    daemon.node = node
    daemon.transport = types.SimpleNamespace(  # type: ignore[assignment]
        connected=True, last_error=None, connections_opened=1
    )
    await node.start()
    try:
        for _ in range(500):  # bounded polls: hearing heads, then settle_s has passed
            if daemon.health()[0]:
                break
            await asyncio.sleep(0.01)
        assert daemon.health()[0], daemon.health()[1]
        head = Head(origin=ORIGIN, seq=3, hash=origin.head.hash, created_at=1, announced_at=1)
        message = sign_head(head, ring.key_id(ORIGIN), ring.secret(ORIGIN))
        await network.transport("o").publish_heads(f"head.35.{ORIGIN}", message)
        for _ in range(500):
            if node.catchup.book.known(ORIGIN) is not None:
                break
            await asyncio.sleep(0.01)
        healthy, details = daemon.health()
        assert not healthy and details["status"] == "degraded"
        assert any(f"origin {ORIGIN} behind by 3 seqs" in r for r in details["reasons"])
        assert details["behind"][ORIGIN]["announced_seq"] == 3
        assert [r.status for r in store.apply(bundles)] == ["applied"] * 3
        healthy, details = daemon.health()
        assert healthy and details["reasons"] == [], details
        # A head of seq 3 with another hash, heard by a fresh book: the tier holds seq 3
        # with its own hash, so they disagree (a fork, or this tier diverged).
        node.catchup.book = type(node.catchup.book)()
        node.catchup.book.observe(msgspec.structs.replace(head, hash=b"\7" * 32))
        healthy, details = daemon.health()
        assert not healthy and any("differs from the announced" in r for r in details["reasons"])
        node.catchup.book = type(node.catchup.book)()
        bad = msgspec.structs.replace(update(ORIGIN, 4), kojin_bango="983205673210")
        assert store.apply([origin.bundle([bad])])[0].kind == "halt"
        healthy, details = daemon.health()
        assert not healthy and any("halted" in r for r in details["reasons"])
    finally:
        await node.stop(graceful=False)
