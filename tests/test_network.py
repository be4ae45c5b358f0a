"""The whole network on the in-process transport: faults and how the tiers cope.

Each test runs publishers, two aggregation centres (相互補完) and the national node
in one event loop, then checks chain heads, digests and quarantines of real stores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from jukisync import _core
from jukisync.publisher.bundling import BundlePolicy
from jukisync.publisher.origin import Publisher
from jukisync.sim.network import Network, NetworkSpec
from jukisync.tier.assembly import queue_name
from jukisync.wire.messages import BundleBody, Envelope, decode_body, decode_envelope, encode
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, update

UBE = "352021"  # 宇部市
ORIGINS = (YAMAGUCHI_CITY, HAGI, UBE, CHIYODA)
TIMEOUT = 30.0


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Network]:
    spec = NetworkSpec(
        origins=ORIGINS, policy=BundlePolicy(max_updates=5, linger_s=0.01), resend_interval_s=0.1
    )
    network = Network(tmp_path, spec)
    await network.start()
    yield network
    await network.stop()


def batch(start: int, count: int, origins: tuple[str, ...] = ORIGINS) -> list[tuple[str, object]]:
    return [(o, update(o, n)) for n in range(start, start + count) for o in origins]


async def converge(net: Network) -> None:
    await asyncio.wait_for(net.drain_publishers(), TIMEOUT)
    assert await net.wait_converged(TIMEOUT), {
        t.name: t.store.chain_heads() for t in net.running_tiers()
    }


def assert_same_content(net: Network, tiers: list[str]) -> None:
    reports = [net.report(net.tier(name)) for name in tiers]
    for report in reports:
        assert report.heads_equal, report.name
        assert report.digests == reports[0].digests, report.name
        assert report.records == reports[0].records, report.name


def signed(origin: str, net: Network, body: BundleBody) -> bytes:
    pair = net.key_pairs[origin]
    raw = encode(body)
    return encode(Envelope(body=raw, key_id=pair.key_id, sig=_core.sign(pair.secret, raw)))


def next_body(publisher: Publisher, updates: list[object]) -> BundleBody:
    """The body that would follow the publisher's head (seqs and prev_hash right)."""
    head = publisher.head
    numbered = [
        msgspec.structs.replace(u, seq=head.last_seq + 1 + i)  # type: ignore[type-var]
        for i, u in enumerate(updates)
    ]
    return BundleBody(
        origin=publisher.origin,
        first_seq=head.last_seq + 1,
        last_seq=head.last_seq + len(numbered),
        prev_hash=head.hash,
        created_at=_core_now(),
        updates=numbered,  # type: ignore[arg-type]
    )


def _core_now() -> int:
    import time

    return time.time_ns() // 1000


async def test_every_tier_converges(net: Network) -> None:
    net.submit(batch(0, 40))  # type: ignore[arg-type]
    await converge(net)
    assert_same_content(net, ["centre-a", "centre-b", "national"])
    national = net.report(net.tier("national"))
    assert national.updates_applied == 40 * len(ORIGINS)
    assert national.records == 40 * len(ORIGINS)
    # National applied each bundle once, although both centres forwarded it (the
    # slower centre's forwards may still be on their way when the heads agree).
    tier = net.tier("national")
    assert await net.until(
        lambda: net.report(tier).duplicates == national.bundles_applied, TIMEOUT
    ), net.report(tier)
    assert net.report(tier).bundles_applied == national.bundles_applied


async def test_forged_bundle_is_a_security_event_and_the_origin_carries_on(
    net: Network,
) -> None:
    net.submit(batch(0, 10))  # type: ignore[arg-type]
    await converge(net)
    # An intruder signs "the next bundle of 山口市" with a key of its own that the
    # registry does not know, and another with 萩市's key: neither is from 山口市.
    victim = net.publishers[YAMAGUCHI_CITY]
    forged_body = next_body(victim, [update(YAMAGUCHI_CITY, 999, name="偽 物")])
    raw = encode(forged_body)
    intruder_key = _core.generate_signing_key()
    unknown_key = encode(Envelope(body=raw, key_id="rogue-1", sig=_core.sign(intruder_key, raw)))
    hagi = net.key_pairs[HAGI]
    foreign_key = encode(Envelope(body=raw, key_id=hagi.key_id, sig=_core.sign(hagi.secret, raw)))
    intruder = net.broker.transport("intruder")
    await intruder.publish_bundle(YAMAGUCHI_CITY, unknown_key)
    await intruder.publish_bundle(YAMAGUCHI_CITY, foreign_key)

    net.submit(batch(10, 10))  # type: ignore[arg-type]
    await converge(net)
    assert_same_content(net, ["centre-a", "centre-b", "national"])
    for name in ("centre-a", "centre-b"):
        store = net.tier(name).store
        entries = store.quarantine()
        assert [(e.kind, e.origin) for e in entries] == [("security", YAMAGUCHI_CITY)] * 2
        assert "unknown key" in entries[0].reason
        assert store.halted() == {}
        assert net.tier(name).stats.security_events == 2
        assert store.get(update(YAMAGUCHI_CITY, 999).juminhyo_code) is None
    assert net.tier("national").store.get(update(YAMAGUCHI_CITY, 19).juminhyo_code) is not None


async def test_signed_invalid_content_halts_only_its_origin(net: Network) -> None:
    net.submit(batch(0, 10))  # type: ignore[arg-type]
    await converge(net)
    hagi = net.publishers[HAGI]
    halted_at = hagi.head.last_seq
    # Validly signed by 萩市, yet garbled (the 2013 incident): built by hand, so the
    # publisher's validation never saw it. It takes the next place in 萩市's chain.
    garbled = msgspec.structs.replace(update(HAGI, 500), name="萩\ufffd太郎")
    bad = signed(HAGI, net, next_body(hagi, [garbled]))
    await net.broker.transport("faulty-cs").publish_bundle(HAGI, bad)

    net.submit(batch(10, 10))  # type: ignore[arg-type]
    await asyncio.wait_for(net.drain_publishers(), TIMEOUT)
    others = {o: h for o, h in net.expected_heads().items() if o != HAGI}

    def others_converged() -> bool:
        return all(
            {o: h for o, h in t.store.chain_heads().items() if o != HAGI} == others
            for t in net.tiers()
        )

    assert await net.until(others_converged, TIMEOUT)
    for name in ("centre-a", "centre-b"):
        node = net.tier(name)
        assert HAGI in node.store.halted()
        [entry] = node.store.quarantine()
        assert (entry.kind, entry.origin, entry.first_seq) == ("halt", HAGI, halted_at + 1)
        assert "U+FFFD" in entry.reason or "name" in entry.reason
        assert node.stats.halted_origins == {HAGI}
        # 萩市's genuine later bundles wait; nothing of them is applied.
        assert node.store.chain_head(HAGI)[0] == halted_at  # type: ignore[index]
        assert node.store.pending(HAGI)
    assert net.tier("national").store.chain_head(HAGI)[0] == halted_at  # type: ignore[index]
    assert net.tier("national").store.halted() == {}


async def test_faulty_publisher_dropped_by_operator_then_reissued(net: Network) -> None:
    """A CS that signs garbled updates (validation off) halts its origin; the operator
    drops the bundle at both centres; the publisher re-issues the range; all converge."""
    origin = UBE
    await net.pub_nodes[origin].stop()
    net.publishers[origin].close()
    pair = net.key_pairs[origin]
    faulty = Publisher(
        origin,
        pair.secret,
        pair.key_id,
        net.data_dir / "outbox" / origin,
        policy=BundlePolicy(max_updates=5, linger_s=0.01),
        sync=False,
        validate=lambda u: None,
    )
    net.publishers[origin] = faulty
    await net.start_publisher(origin)
    net.submit([(origin, update(origin, n)) for n in range(5)])
    garbled = [
        msgspec.structs.replace(update(origin, n), address="宇部市\x1b[0m常盤町") for n in (5, 6)
    ]
    net.submit([(origin, u) for u in garbled])
    net.submit([(origin, update(origin, n)) for n in range(7, 12)])
    await asyncio.wait_for(net.drain_publishers(), TIMEOUT)

    centres = [net.tier("centre-a"), net.tier("centre-b")]
    assert await net.until(lambda: all(origin in c.store.halted() for c in centres), TIMEOUT)
    dropped_hash = None
    for centre in centres:
        [entry] = centre.store.quarantine()
        assert entry.kind == "halt" and entry.first_seq == 6
        dropped_hash = entry.hash
        centre.store.drop(entry.id)
    assert dropped_hash is not None
    dropped = decode_body(decode_envelope(faulty.resend(6)[0].envelope).body)
    fixed = [
        msgspec.structs.replace(u, address=u.address.replace("\x1b[0m", ""))
        for u in dropped.updates
    ]
    faulty.reissue(dropped_hash, fixed)
    net.pub_nodes[origin].notify()
    await converge(net)
    assert_same_content(net, ["centre-a", "centre-b", "national"])
    for centre in centres:
        assert centre.store.halted() == {}
    record = net.tier("national").store.get(garbled[0].juminhyo_code)
    assert record is not None and "\x1b" not in record.address


async def test_publisher_restarted_mid_stream_loses_and_repeats_nothing(net: Network) -> None:
    origin = YAMAGUCHI_CITY
    net.submit(batch(0, 10, (origin,)))  # type: ignore[arg-type]
    await converge(net)
    # The broker goes away; the publisher keeps accepting, then crashes with bundles
    # sealed but unconfirmed and updates not yet bundled.
    net.broker.available = False
    net.submit(batch(10, 13, (origin,)))  # type: ignore[arg-type]
    publisher = net.publishers[origin]
    assert publisher.unconfirmed_count() > 0 and publisher.open_count > 0
    await net.pub_nodes[origin].stop(graceful=False)
    publisher.close()
    net.broker.available = True

    del net.publishers[origin]
    await net.start_publisher(origin)
    restarted = net.publishers[origin]
    assert restarted.next_seq == 24  # nothing lost, no sequence number given twice
    net.submit(batch(23, 7, (origin,)))  # type: ignore[arg-type]
    await converge(net)
    assert restarted.head.last_seq == 30
    assert_same_content(net, ["centre-a", "centre-b", "national"])
    national = net.tier("national").store
    codes = [update(origin, n).juminhyo_code for n in range(30)]
    records = national.get_many(codes)
    assert all(r is not None and r.origin == origin for r in records)
    assert sorted(r.seq for r in records if r is not None) == list(range(1, 31))


async def test_a_centre_stopped_mid_stream_is_not_needed(net: Network) -> None:
    net.submit(batch(0, 10))  # type: ignore[arg-type]
    await converge(net)
    await net.stop_tier("centre-a", graceful=False)
    net.submit(batch(10, 20))  # type: ignore[arg-type]
    await converge(net)  # running tiers: centre-b and national
    assert_same_content(net, ["centre-b", "national"])
    stopped = net.report(net.tier("centre-a"))
    assert not stopped.heads_equal  # it really missed the second half
    assert net.report(net.tier("national")).updates_applied == 30 * len(ORIGINS)


async def test_a_crashed_centre_catches_up_from_its_queue_after_restart(net: Network) -> None:
    net.submit(batch(0, 10))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # some of it in flight when the centre dies
    await net.stop_tier("centre-a", graceful=False)
    net.submit(batch(10, 10))  # type: ignore[arg-type]
    await converge(net)  # without centre-a
    assert net.broker.depth(queue_name(net.configs["centre-a"])) > 0  # its queue kept everything
    await net.restart_tier("centre-a")
    await converge(net)
    assert_same_content(net, ["centre-a", "centre-b", "national"])
    assert net.broker.depth(queue_name(net.configs["centre-a"])) == 0


async def test_graceful_stop_leaves_nothing_half_done(net: Network) -> None:
    net.submit(batch(0, 20))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    await net.stop_tier("centre-a")
    stats = net.tier("centre-a").store.stats()
    assert stats["forward_backlog"] == 0  # what it applied, it also forwarded
    applied = sum(seq for seq, _ in net.tier("centre-a").store.chain_heads().values())
    assert applied == stats["applied_updates"]
    await converge(net)
    assert_same_content(net, ["centre-b", "national"])


async def test_national_refuses_a_bundle_no_centre_attested(net: Network) -> None:
    hagi = net.publishers[HAGI]
    direct = signed(HAGI, net, next_body(hagi, [update(HAGI, 1)]))
    # Signed by the origin itself, but sent straight to the national exchange.
    await net.broker.transport("bypass").publish_forward(HAGI, direct)
    national = net.tier("national")
    assert await net.until(lambda: national.stats.security_events == 1, TIMEOUT)
    [entry] = national.store.quarantine()
    assert entry.kind == "security" and "attestation" in entry.reason
    assert national.store.chain_head(HAGI) is None
    net.submit(batch(0, 5))  # type: ignore[arg-type]
    await converge(net)  # the genuine, attested stream of 萩市 is applied


async def test_a_lost_bundle_is_resent_on_request(net: Network) -> None:
    origin = CHIYODA
    publisher = net.publishers[origin]
    await net.pub_nodes[origin].stop()
    publisher.add_many([update(origin, n) for n in range(5)])
    lost = publisher.unconfirmed()
    publisher.confirm(lost)  # "confirmed", yet it never reached any queue
    await net.start_publisher(origin)
    net.submit([(origin, update(origin, n)) for n in range(5, 10)])
    await converge(net)
    assert_same_content(net, ["centre-a", "centre-b", "national"])
    for name in ("centre-a", "centre-b"):
        assert net.tier(name).stats.resend_requests >= 1
        assert net.tier(name).stats.gaps >= 1
    assert net.pub_nodes[origin].resent >= 1


def test_updates_are_dated_in_order() -> None:
    # The conflict rule orders by changed_on first: the kit's updates share one date,
    # so later ones win through recorded_at, which must therefore increase.
    a, b = update(HAGI, 1), update(HAGI, 2)
    assert a.changed_on == b.changed_on == dt.date(2024, 4, 1)
    assert a.recorded_at <= b.recorded_at
