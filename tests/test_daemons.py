"""The daemons as an operator runs them: `jukisync run` and `jukisync publish` as
processes on the real broker, killed, cut off and fed garbage (DESIGN.md §3, §10).

Each test has its own namespace on the broker and its own directory of keys,
configs and stores. The final check is always the same: every store holds exactly
what the publishers' outboxes hold, applied once (`assert_matches_reference`: chain
heads, per-prefecture digests and the applied-updates counter of `jukisync status
--json`, against a store that applied every outbox chain once in this process).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from daemonkit import (
    ORIGINS,
    UBE,
    YAMAGUCHI_CITY,
    Net,
    Nets,
    assert_matches_reference,
    close_connections,
    free_port,
    sign_garbled,
    synthetic_updates,
    until,
    write_updates,
)
from externaltools import require_rabbitmqctl
from jukisync import _core
from jukisync.publisher.feed import FeedPosition
from jukisync.publisher.outbox import Outbox
from jukisync.trust import keys
from jukisync.wire.messages import BundleBody, Envelope, Update, encode

pytestmark = [pytest.mark.broker, pytest.mark.check_stores]


def decode_position(recorded: bytes) -> FeedPosition:
    return msgspec.msgpack.decode(recorded, type=FeedPosition)


def test_three_roles_converge(make_net: Nets, tmp_path: Path) -> None:
    net = make_net()
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    updates = synthetic_updates(400, 400, seed=1)
    lines = msgspec.json.Encoder().encode_lines(updates).splitlines(keepends=True)
    # Two bad lines among the good ones: not JSON, and a 個人番号 with a wrong check digit.
    wrong = msgspec.structs.replace(updates[5], kojin_bango=_wrong_check_digit(updates[5]))
    lines.insert(2, b"{not json\n")
    lines.insert(9, msgspec.json.encode(wrong) + b"\n")
    data = tmp_path / "changes.jsonl"
    data.write_bytes(b"".join(lines))
    publishers = [net.publish(o, data, "--skip-others", "--json") for o in ORIGINS]
    for origin, proc in zip(ORIGINS, publishers, strict=True):
        assert proc.wait() == 4, proc.output()  # INPUT: some lines were invalid...
        output = proc.output()
        assert f"{data}:3: not valid JSON" in output
        # The wrong 個人番号 is its municipality's to report; the others skip the line.
        owner = origin == wrong.municipality
        assert (f"{data}:10: kojin_bango" in output) == owner
        summary = json.loads(next(x for x in output.splitlines() if x.startswith("{")))
        assert summary["invalid_lines"] == ([3, 10] if owner else [3]) and summary["delivered"]
    mine = sum(u.municipality == YAMAGUCHI_CITY for u in updates)
    assert net.expected_heads()[YAMAGUCHI_CITY][0] == mine  # ...the valid ones went out
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    assert net.kill(centre, signal.SIGTERM) == 0
    assert net.kill(net.national, signal.SIGTERM) == 0


def _wrong_check_digit(update: Update) -> str:
    number = update.kojin_bango
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def test_sigkill_at_random_points_loses_and_doubles_nothing(
    make_net: Nets, tmp_path: Path, rng: random.Random
) -> None:
    net = make_net(max_updates=5)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    updates = synthetic_updates(1500, 1500, seed=2)
    data = write_updates(tmp_path / "changes.jsonl", updates)
    total = len(updates)
    publishers = [net.publish(o, data, "--skip-others") for o in ORIGINS]
    mid_stream = 0
    for victims, watched in (
        ([centre], centre),
        ([net.national], net.national),
        ([centre, net.national], centre),
    ):
        target = min(total, net.applied(watched) + int(total * rng.uniform(0.05, 0.3)))
        assert until(lambda w=watched, t=target: net.applied(w) >= t)  # type: ignore[misc]
        for victim in victims:
            assert net.kill(victim) == -signal.SIGKILL
        mid_stream += net.applied(watched) < total
        for victim in victims:
            net.start(victim)
    for proc in publishers:
        assert proc.wait() == 0, proc.output()
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    # How many kills landed mid-stream depends on the machine's speed: reported, not
    # asserted (whatever the count, nothing may be lost or doubled).
    print(f"{mid_stream} of 3 kills mid-stream")


def test_connections_cut_mid_stream(make_net: Nets, tmp_path: Path) -> None:
    require_rabbitmqctl()
    net = make_net(max_updates=2)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    updates = synthetic_updates(1500, 1500, seed=3)
    data = write_updates(tmp_path / "changes.jsonl", updates)
    publishers = [net.publish(o, data, "--skip-others") for o in ORIGINS]
    daemons = [net.procs[centre], net.procs[net.national]]
    total = len(updates)
    assert until(lambda: net.applied(net.national) > 0)
    cuts = rounds = 0
    while rounds < 4 and (before := net.applied(net.national)) < total:
        # Mid-stream: every connection of every process at once, then again as soon
        # as national made progress (so they reconnected and resumed meanwhile).
        cuts += close_connections(p.pid for p in [*daemons, *publishers] if p.alive())
        rounds += 1
        assert until(lambda b=before: net.applied(net.national) > b)  # type: ignore[misc]
    # At least one cut landed mid-stream (more when the machine is slower).
    assert rounds >= 1 and cuts >= len(daemons), (rounds, cuts)
    for proc in publishers:
        assert proc.wait() == 0, proc.output()
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    for daemon in daemons:  # they rode it out: reconnected, did not exit
        assert daemon.alive(), daemon.output()
        assert "reconnecting" in daemon.output()


def test_publisher_killed_mid_stream_resumes_from_its_outbox(
    make_net: Nets, tmp_path: Path, rng: random.Random
) -> None:
    net = make_net(max_updates=2, origins=[YAMAGUCHI_CITY])
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    updates = synthetic_updates(2500, 500, seed=4, origins=[YAMAGUCHI_CITY])
    data = write_updates(tmp_path / "changes.jsonl", updates)
    publisher = net.publish(YAMAGUCHI_CITY, data)
    point = rng.randrange(20, 400)

    def head() -> int:
        found = net.store(centre).chain_head(YAMAGUCHI_CITY)
        return found[0] if found else 0

    assert until(lambda: head() >= point or not publisher.alive())
    # On a fast machine the publisher may have finished before the kill (exit 0):
    # every point, the end included, must resume to the same result.
    ended = net.kill(f"publish {YAMAGUCHI_CITY}")
    assert ended in (0, -signal.SIGKILL), publisher.output()
    outbox = Outbox(net.outbox_dir(YAMAGUCHI_CITY), YAMAGUCHI_CITY)
    try:  # what the crash left: the restart must carry on from exactly there
        recorded = outbox.progress(b"feed:" + os.fsencode(os.path.realpath(data)))
        accepted_lines = 0 if recorded is None else decode_position(recorded).line
        unconfirmed = outbox.unconfirmed_count()
        numbered = outbox.next_seq() - 1
    finally:
        outbox.close()
    # Where the kill lands depends on the machine's speed; every point must resume to
    # the same end (a kill after the last confirm leaves nothing to do).
    print(f"killed with {accepted_lines} lines accepted, {unconfirmed} unconfirmed")
    assert 0 < numbered <= len(updates)
    restarted = net.publish(YAMAGUCHI_CITY, data)
    assert restarted.wait() == 0, restarted.output()
    if accepted_lines:
        assert f"lines 1-{accepted_lines} were accepted before" in restarted.output()
    net.wait_converged([centre, net.national])
    reference = net.reference()
    assert_matches_reference(net, [centre, net.national], reference)
    # Every line of the file exactly once, numbered 1..n without a gap or a repeat.
    assert net.expected_heads()[YAMAGUCHI_CITY][0] == len(updates)
    assert reference.stats()["applied_updates"] == len(updates)


async def _publish_raw(net: Net, routing_key: str, bodies: list[bytes]) -> None:
    """Straight to the updates exchange, as anyone with broker access could."""
    connection = await aio_pika.connect(
        net.url, client_properties={"connection_name": f"pytest intruder {net.namespace}"}
    )
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{net.namespace}jukisync.updates")
        for body in bodies:
            await exchange.publish(aio_pika.Message(body), routing_key=routing_key)
    finally:
        await connection.close()


def _forged(origin: str, head: tuple[int, bytes], update: Update) -> bytes:
    """The next bundle of `origin`, signed with a key the registry does not know."""
    seq = head[0] + 1
    body = encode(
        BundleBody(
            origin=origin,
            first_seq=seq,
            last_seq=seq,
            prev_hash=head[1],
            created_at=keys.now_us(),
            updates=[msgspec.structs.replace(update, seq=seq, name="偽　物")],
        )
    )
    rogue = _core.generate_signing_key()
    return encode(Envelope(body=body, key_id="rogue-1", sig=_core.sign(rogue, body)))


def _quarantine(net: Net, name: str, *extra: str) -> dict[str, Any]:
    listing: dict[str, Any] = json.loads(
        net.cli("quarantine", "list", "--store", str(net.store_dir(name)), "--json", *extra).stdout
    )
    return listing


def test_bad_input_is_quarantined_and_a_halt_is_resolved_by_an_operator(
    make_net: Nets, tmp_path: Path
) -> None:
    net = make_net(max_bundle_bytes=64 * 1024)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    updates = synthetic_updates(300, 300, seed=5)
    half = len(updates) // 2
    net.publish_all(write_updates(tmp_path / "first.jsonl", updates[:half]))
    net.wait_converged([centre, net.national])

    # Garbage, a forged bundle and an oversized message, straight to the exchange.
    heads = net.expected_heads()
    victim = next(u for u in updates[half:] if u.municipality == YAMAGUCHI_CITY)
    forged = _forged(YAMAGUCHI_CITY, heads[YAMAGUCHI_CITY], victim)
    garbage = b"\xc1\x00 not msgpack \xff"
    oversized = b"\x00" * (64 * 1024 + 1)
    asyncio.run(_publish_raw(net, f"upd.35.{YAMAGUCHI_CITY}", [garbage, forged, oversized]))
    assert until(lambda: len(net.store(centre).quarantine()) == 3)
    listing = _quarantine(net, centre)
    assert listing["halted"] == {}  # a forgery halts nothing
    entries = {e["size"]: e for e in listing["entries"]}
    assert {e["kind"] for e in entries.values()} == {"security"}
    assert "oversized" in entries[len(oversized)]["reason"]
    assert "unknown key" in entries[len(forged)]["reason"]
    assert entries[len(forged)]["origin"] == YAMAGUCHI_CITY
    assert entries[len(garbage)]["reason"]

    # 宇部市's CS signs a garbled update (its validation is broken): the next bundle of
    # its chain, validly signed, halts 宇部市 alone at the centre.
    garbled_source = next(u for u in updates[half:] if u.municipality == UBE)
    halted_at = sign_garbled(net, UBE, garbled_source)
    rest = [u for u in updates[half:] if u is not garbled_source]
    net.publish_all(write_updates(tmp_path / "second.jsonl", rest))
    assert until(lambda: UBE in net.store(centre).halted())
    others = {o: h for o, h in net.expected_heads().items() if o != UBE}
    assert until(
        lambda: all(
            {o: h for o, h in net.store(n).chain_heads().items() if o != UBE} == others
            for n in (centre, net.national)
        )
    ), "the other origins must keep flowing"
    assert net.store(centre).chain_head(UBE)[0] == halted_at  # type: ignore[index]
    assert until(lambda: bool(net.store(centre).pending(UBE)))  # its later bundles wait
    assert net.store(net.national).chain_head(UBE)[0] == halted_at  # type: ignore[index]
    [halt] = [e for e in _quarantine(net, centre)["entries"] if e["kind"] == "halt"]
    assert (halt["origin"], halt["first_seq"]) == (UBE, halted_at + 1)
    assert "U+FFFD" in halt["reason"]

    # The operator drops it; the municipality re-issues that range, corrected.
    dropped = net.cli(
        "quarantine",
        "drop",
        "--config",
        str(net.configs[centre]),
        "--operator",
        "op-1",
        "--reason",
        "garbled names",
        str(halt["id"]),
    )
    assert halt["hash"] in dropped.stdout
    fixed = write_updates(tmp_path / "fixed.jsonl", [garbled_source])
    reissue = net.publish(UBE, fixed, "--supersedes", halt["hash"])
    assert reissue.wait() == 0, reissue.output()
    net.wait_converged([centre, net.national])
    assert_matches_reference(net, [centre, net.national], net.reference())
    record = net.store(net.national).get(garbled_source.juminhyo_code)
    assert record is not None and "\ufffd" not in record.name
    closed = {e["id"]: e["state"] for e in _quarantine(net, centre, "--all")["entries"]}
    assert closed[halt["id"]] == "dropped"
    assert _quarantine(net, net.national)["entries"] == []


def test_one_centre_down_for_the_whole_run(make_net: Nets, tmp_path: Path) -> None:
    """相互補完: two centres serve the same prefectures; one is down throughout (its
    queue exists and fills). National converges through the other; the one that was
    down catches up from its queue later, and national applies nothing twice."""
    net = make_net(centres=("east", "west"))
    east, west = net.centres
    net.declare_centre_queue(west)
    net.start_and_wait(net.national, east)
    net.publish_all(write_updates(tmp_path / "changes.jsonl", synthetic_updates(300, 300, seed=6)))
    net.wait_converged([east, net.national])
    reference = net.reference()
    assert_matches_reference(net, [east, net.national], reference)
    national_stats = net.store(net.national).stats()
    assert national_stats["duplicates"] == 0  # only one centre forwarded anything

    net.start_and_wait(west)
    net.wait_converged([west, east, net.national])
    assert_matches_reference(net, [west, east, net.national], reference)
    after = net.store(net.national).stats()
    assert after["applied_bundles"] == national_stats["applied_bundles"]
    assert after["duplicates"] == national_stats["applied_bundles"]  # west's, each once


def _get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_health_metrics_and_graceful_sigterm(make_net: Nets, tmp_path: Path) -> None:
    net = make_net(http=True, max_updates=2)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    for name in (centre, net.national):
        # Degraded until a round of head announcements had time to come in, then ok.
        assert until(lambda: _get(net.ports[name], "/healthz")[0] == 200)  # noqa: B023
        status, content_type, body = _get(net.ports[name], "/healthz")
        assert (status, content_type) == (200, "application/json"), body
        health = json.loads(body)
        assert health["status"] == "ok" and health["connected"] and health["consuming"]
    updates = synthetic_updates(1000, 1000, seed=7)
    data = write_updates(tmp_path / "changes.jsonl", updates)
    publishers = [net.publish(o, data, "--skip-others") for o in ORIGINS]

    # SIGTERM mid-stream: the batch in hand is committed and forwarded, exit 0.
    assert until(lambda: net.applied(centre) > 0)
    assert net.kill(centre, signal.SIGTERM) == 0, net.procs[centre].output()
    stats = net.store(centre).stats()
    assert stats["forward_backlog"] == 0  # what it applied, it also forwarded
    assert stats["applied_updates"] == net.applied(centre) < len(updates)  # mid-stream
    net.start_and_wait(centre)
    for proc in publishers:
        assert proc.wait() == 0, proc.output()
    net.wait_converged([centre, net.national])

    status, content_type, text = _get(net.ports[centre], "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    heads = net.store(centre).chain_heads()
    for origin, (seq, _) in heads.items():
        assert _metric(text, "jukisync_origin_head_seq", origin=origin) == seq
    # Counted since this process started: what it applied after the restart.
    applied = sum(_metric(text, "jukisync_applied_updates_total", origin=o) for o in ORIGINS)
    assert 0 < applied <= len(updates)
    assert _metric(text, "jukisync_forward_backlog") == 0
    assert _metric(text, "jukisync_batch_seconds_count") > 0
    assert _metric(text, "jukisync_store_applied_updates_total") == len(updates)
    assert _metric(text, "jukisync_connected") == 1
    national = _get(net.ports[net.national], "/metrics")[2]
    assert _metric(national, "jukisync_node_info", role="national", node=net.national) == 1

    assert net.kill(net.national, signal.SIGTERM) == 0
    assert net.kill(centre, signal.SIGINT) == 0
    assert "stopped in" in net.procs[centre].output()
    assert_matches_reference(net, [centre, net.national], net.reference())


def test_startup_failures_exit_with_their_code_and_one_line(make_net: Nets) -> None:
    net = make_net(http=True)
    [centre] = net.centres
    # A config the loader refuses: exit 3, naming the field.
    bad = net.root / "bad.toml"
    bad.write_text(net.configs[centre].read_text().replace("prefetch = 64", "prefetch = -1"))
    done = net.cli("run", "--config", str(bad), check=False)
    assert done.returncode == 3 and "prefetch" in done.stderr
    # No broker there (nothing listens on the port): exit 7 after the bounded wait...
    unreachable = net.root / "unreachable.toml"
    port = free_port()
    text = net.configs[net.national].read_text()
    unreachable.write_text(
        text.replace(net.url, f"amqp://guest:guest@127.0.0.1:{port}/").replace(
            "connect_timeout_s = 5.0", "connect_timeout_s = 0.5"
        )
    )
    done = net.cli("run", "--config", str(unreachable), check=False)
    assert done.returncode == 7, done.stderr
    [reason] = [line for line in done.stderr.splitlines() if line.startswith("jukisync run:")]
    assert "broker unreachable" in reason
    # ...while with --wait it waits, saying 503 meanwhile, and SIGTERM ends it cleanly.
    waiting = net._spawn("waiting", ["run", "--config", str(unreachable), "--wait"])
    http_port = net.ports[net.national]
    assert until(lambda: _reachable(http_port), 30)
    status, _, body = _get(http_port, "/healthz")
    assert status == 503 and json.loads(body)["connected"] is False
    assert net.kill("waiting", signal.SIGTERM) == 0, waiting.output()
    # One daemon per store: a second one on the same store is refused.
    net.start_and_wait(centre)
    done = net.cli("run", "--config", str(net.configs[centre]), check=False)
    assert done.returncode == 7 and "in use by another process" in done.stderr
    # The broker refuses the topology (the queue exists as another type): exit 3.
    net.declare_centre_queue(net.national, queue_type="classic")
    done = net.cli("run", "--config", str(net.configs[net.national]), check=False)
    assert done.returncode == 3 and "other arguments" in done.stderr, done.stderr
    # A publisher with a centre's config is refused with the config exit code.
    done = net.cli("publish", "--config", str(net.configs[centre]), "/dev/null", check=False)
    assert done.returncode == 3 and "municipality" in done.stderr
    # A query policy that does not load: exit 3, naming the field.
    no_policy = net.root / "no-policy.toml"
    no_policy.write_text(
        net.configs[centre].read_text() + f'\n[query]\npolicy = "{net.root / "absent.toml"}"\n'
    )
    net.kill(centre, signal.SIGTERM)
    done = net.cli("run", "--config", str(no_policy), check=False)
    assert done.returncode == 3 and "query.policy" in done.stderr, done.stderr


def _reachable(port: int) -> bool:
    try:
        _get(port, "/healthz")
    except OSError:
        return False
    return True


async def test_the_national_daemon_answers_queries_over_rpc(
    make_net: Nets, tmp_path: Path, broker_url: str
) -> None:

    from jukisync.query.rpc import QueryClient
    from jukisync.query.service import ByCode, Denied, Found
    from querykit import CATALOGUE, POLICY, write_policy

    user = URL(broker_url).user or "guest"
    policy = write_policy(tmp_path / "policy", CATALOGUE, POLICY.replace('"agency-a"', f'"{user}"'))
    net = make_net(query_policy=policy)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    updates = synthetic_updates(50, 0, seed=4)
    data = write_updates(tmp_path / "changes.jsonl", updates)
    for proc in [net.publish(o, data, "--skip-others") for o in ORIGINS]:
        assert proc.wait() == 0, proc.output()
    net.wait_converged([centre, net.national])
    mine = next(u for u in updates if u.municipality in ORIGINS)
    node_users = {net.national: user}  # the node logs in as the test broker's user
    async with QueryClient(broker_url, namespace=net.namespace, node_users=node_users) as client:
        found = await client.ask(ByCode(task="T-ADDR", code=mine.juminhyo_code), node=net.national)
        refused = await client.ask(ByCode(task="T-NUM", code=mine.juminhyo_code), node=net.national)
    assert isinstance(found, Found), found
    assert found.records[0]["address"] == mine.address
    assert isinstance(refused, Denied) and "T-NUM" in refused.reason
    assert net.kill(net.national, signal.SIGTERM) == 0
    requesters = {(e.requester, e.allowed) for e in net.store(net.national).audit_entries()}
    assert requesters == {(user, True), (user, False)}


@pytest.mark.parametrize("wait", [False, True])
def test_refused_login_or_vhost_is_a_config_error_at_once(
    make_net: Nets, broker_url: str, wait: bool
) -> None:
    """Exit 3 with one line naming the user or vhost, never the password, with or
    without --wait (which would otherwise retry for ever)."""
    net = make_net()
    text = net.configs[net.national].read_text()
    base = URL(net.url)
    secret = "S3cret-never-shown"
    for case, url in (
        ("login", base.with_password(secret)),
        ("vhost", base.with_path("/no-such-vhost-jukisync")),
    ):
        config = net.root / f"refused-{case}.toml"
        config.write_text(text.replace(net.url, str(url)))
        done = net.cli("run", "--config", str(config), *(["--wait"] if wait else []), check=False)
        assert done.returncode == 3, done.stderr
        [reason] = [line for line in done.stderr.splitlines() if line.startswith("jukisync run:")]
        assert case in reason, reason
        assert secret not in done.stderr and f":{base.password}@" not in done.stderr
    # A publisher too (it would retry for ever without --timeout): exit 3, lines kept.
    if wait:
        return
    origin = ORIGINS[0]
    text = net.configs[origin].read_text()
    config = net.root / "refused-publisher.toml"
    config.write_text(text.replace(net.url, str(base.with_password(secret))))
    data = write_updates(net.root / "refused.jsonl", synthetic_updates(5, 0, seed=9))
    done = net.cli("publish", "--config", str(config), "--skip-others", str(data), check=False)
    assert done.returncode == 3, done.stderr
    assert "login" in done.stderr and secret not in done.stderr
