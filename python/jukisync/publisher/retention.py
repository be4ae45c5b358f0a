"""Retention of a publisher's outbox (issue 12 §2): its confirmed bundles older than
a policy are archived (the change-log archive format of `jukisync.tier.retention`,
kind `outbox-log`, signed by the origin's key, with the chain head as checkpoint)
and then deleted. The chain head (meta) and the newest bundle survive, so the origin
goes on chaining and announcing; unconfirmed bundles are never touched.

A resend asked for before the retained range then fails with the `PublisherError`
naming the archive; the centres fall back to the twin centre's change log."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, BinaryIO

from jukisync import clock
from jukisync.publisher.outbox import Outbox
from jukisync.tier import retention
from jukisync.trust import keys
from jukisync.wire.messages import decode_body, decode_envelope

__all__ = ["OutboxPruneReport", "prune_outbox"]

_US_PER_DAY = 86_400_000_000


@dataclasses.dataclass
class OutboxPruneReport:
    archive: str | None  # None: the policy let nothing go
    head: dict[str, Any]  # the chain head at the checkpoint (seq, hash)
    pruned: int
    bundles_before: int
    bundles_after: int


def prune_outbox(
    outbox: Outbox, key: keys.KeyPair, archive_dir: Path, policy: retention.Policy
) -> OutboxPruneReport:
    """Archive and delete the confirmed bundles `policy` lets go (oldest first)."""
    head = outbox.head()
    checkpoint = {"seq": head.last_seq, "hash": head.hash.hex()}
    bundles = outbox.raw_bundles()  # (last_seq, bytes, confirmed), in chain order
    created_before = clock.now_us() - int(policy.keep_days * _US_PER_DAY)
    entries = outbox.bundles_from(0)
    doomed = []
    for entry, (_, _, confirmed) in zip(
        entries[: max(0, len(entries) - max(1, policy.keep_bundles))], bundles, strict=False
    ):
        if (
            not confirmed
            or decode_body(decode_envelope(entry.envelope).body).created_at > created_before
        ):
            break
        doomed.append(entry)
    if not doomed:
        return OutboxPruneReport(None, checkpoint, 0, len(bundles), len(bundles))

    def write(f: BinaryIO) -> dict[str, Any]:
        for entry in doomed:
            retention.frame(f, outbox.origin, entry.envelope)
        first, upto = doomed[0].first_seq, doomed[-1].last_seq
        return {
            "checkpoint": {"heads": {outbox.origin: checkpoint}},
            "ranges": {outbox.origin: {"from_seq": first, "upto": upto, "bundles": len(doomed)}},
            "heads": {outbox.origin: checkpoint},
        }

    manifest = retention.seal_segment(
        outbox.path, archive_dir, key, retention.OUTBOX_ARCHIVE_KIND, write
    )
    pruned = outbox.prune_confirmed(doomed[-1].last_seq, manifest.raw["archive"])
    return OutboxPruneReport(
        manifest.raw["archive"], checkpoint, pruned, len(bundles), len(outbox.raw_bundles())
    )
