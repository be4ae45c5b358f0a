"""Streaming publish and the embedding entry point, against RabbitMQ (issue 11, items
4 and 5): a pipe fed at a steady rate is confirmed while it is still open, a followed
file publishes appended lines, and the README's embedding example runs as written."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

import jukisync
from daemonkit import (
    YAMAGUCHI_CITY,
    Net,
    Nets,
    close_connections,
    synthetic_updates,
    until,
    write_updates,
)
from externaltools import require_rabbitmqctl
from jukisync import lockfile
from jukisync.publisher.outbox import Outbox

pytestmark = pytest.mark.broker

README = Path(__file__).resolve().parent.parent / "README.md"


def _head(net: Net, centre: str) -> int:
    found = net.store(centre).chain_head(YAMAGUCHI_CITY)
    return found[0] if found else 0


def _lines(count: int, seed: int) -> list[bytes]:
    updates = synthetic_updates(count, 0, seed=seed, origins=[YAMAGUCHI_CITY])[:count]
    return [msgspec.json.encode(u) + b"\n" for u in updates]


def test_a_pipe_at_a_steady_rate_is_confirmed_while_it_is_open(make_net: Nets) -> None:
    net = make_net(origins=[YAMAGUCHI_CITY], max_updates=50, linger_s=0.05)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    lines = _lines(300, seed=7)
    proc = net.publish(YAMAGUCHI_CITY, "-", "--follow", stdin=subprocess.PIPE)
    pipe = proc.popen.stdin
    assert pipe is not None
    # A steady trickle (about 200 lines/s, far below a chunk of the reader): each
    # part must reach the centre while the input stays open and silent.
    sent = 0
    for part in (100, 200):
        while sent < part:
            pipe.write(lines[sent])
            pipe.flush()
            sent += 1
            time.sleep(0.005)  # the input's pace, not a synchronisation

        def reached(n: int = sent) -> bool:
            return _head(net, centre) >= n or not proc.alive()

        assert until(reached, 60), proc.output()
        assert proc.alive() and _head(net, centre) == sent, proc.output()
    pipe.writelines(lines[sent:])
    pipe.close()  # end of the stream: the publisher delivers the rest and exits
    assert proc.wait() == 0, proc.output()
    assert until(lambda: _head(net, centre) == len(lines))


def test_a_stream_rides_out_a_cut_connection_while_its_input_is_silent(
    make_net: Nets,
) -> None:
    require_rabbitmqctl()
    net = make_net(origins=[YAMAGUCHI_CITY], max_updates=50, linger_s=0.05)
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    lines = _lines(90, seed=11)
    proc = net.publish(YAMAGUCHI_CITY, "-", "--follow", stdin=subprocess.PIPE)
    pipe = proc.popen.stdin
    assert pipe is not None
    for part in (lines[:30], lines[30:60], lines[60:]):
        pipe.writelines(part)
        pipe.flush()
        done = lines.index(part[-1]) + 1

        def reached(n: int = done) -> bool:
            return _head(net, centre) >= n or not proc.alive()

        assert until(reached), proc.output()
        # The input falls silent; the broker drops the publisher meanwhile.
        assert close_connections([proc.pid]) >= 1
    pipe.close()
    assert proc.wait() == 0, proc.output()
    assert _head(net, centre) == len(lines)


def test_a_followed_file_publishes_appended_lines(make_net: Nets, tmp_path: Path) -> None:
    net = make_net(origins=[YAMAGUCHI_CITY])
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    lines = _lines(120, seed=8)
    data = tmp_path / "changes.jsonl"
    data.write_bytes(b"".join(lines[:40]))
    proc = net.publish(YAMAGUCHI_CITY, data, "--follow")
    assert until(lambda: _head(net, centre) >= 40 or not proc.alive()), proc.output()
    with data.open("ab") as f:
        f.write(b"".join(lines[40:100]) + lines[100][:30])  # a half-written last line
    assert until(lambda: _head(net, centre) >= 100 or not proc.alive()), proc.output()
    with data.open("ab") as f:
        f.write(lines[100][30:] + b"".join(lines[101:]))
    assert until(lambda: _head(net, centre) >= 120 or not proc.alive()), proc.output()
    assert net.kill(f"publish {YAMAGUCHI_CITY}", signal.SIGTERM) == 0, proc.output()
    assert _head(net, centre) == 120
    again = net.publish(YAMAGUCHI_CITY, data)  # nothing new: nothing published again
    assert again.wait() == 0, again.output()
    assert "lines 1-120 were accepted before" in again.output()
    assert Outbox(net.outbox_dir(YAMAGUCHI_CITY), YAMAGUCHI_CITY).next_seq() == 121


def _readme_embedding_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Publishing from a municipal system")[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section has one embedding example"
    return str(blocks[0])


def _municipality_config(net: Net, at: Path, **overrides: str) -> Path:
    """The test network's municipality config at `at`, with absolute paths."""
    text = net.configs[YAMAGUCHI_CITY].read_text()
    text = text.replace('"keys/', f'"{net.root}/keys/').replace('"data/', f'"{net.root}/data/')
    for key, value in overrides.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    at.parent.mkdir(parents=True, exist_ok=True)
    at.write_text(text)
    return at


def test_the_readme_embedding_example_runs(
    make_net: Nets,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    net = make_net(origins=[YAMAGUCHI_CITY])
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    workdir = tmp_path / "cs"
    _municipality_config(net, workdir / "config" / "municipality.toml")
    monkeypatch.chdir(workdir)
    exec(compile(_readme_embedding_example(), "README.md", "exec"), {})
    assert "accepted as seq 1" in capsys.readouterr().out
    # Leaving the block drained: the centre applies it without anyone else running.
    assert until(lambda: _head(net, centre) == 1)
    record = net.store(centre).get("35203900033")
    assert record is not None and record.name == "山口 花子"


def test_embedding_with_the_broker_down_keeps_everything(make_net: Nets, tmp_path: Path) -> None:
    net = make_net(origins=[YAMAGUCHI_CITY])
    config = _municipality_config(
        net, tmp_path / "down.toml", url='"amqp://guest:guest@127.0.0.1:1/"'
    )
    updates = synthetic_updates(30, 0, seed=9, origins=[YAMAGUCHI_CITY])[:30]
    with jukisync.open_publisher(config, drain_timeout=0.5) as publisher:
        seqs = publisher.add_many(updates)  # store-and-forward: accepted all the same
        assert seqs == list(range(1, 31))
        open_updates, unconfirmed = publisher.pending()
        assert open_updates + unconfirmed > 0  # nothing confirmed without a broker
        assert not publisher.drain(timeout=0.2)
        with pytest.raises(lockfile.LockHeld):  # one publisher per outbox
            jukisync.open_publisher(config)
    outbox = Outbox(net.outbox_dir(YAMAGUCHI_CITY), YAMAGUCHI_CITY)
    try:  # sealed on exit, kept for the next start
        assert outbox.next_seq() == 31 and outbox.unconfirmed_count() >= 1
        assert outbox.open_updates() == []
    finally:
        outbox.close()
    # The next start with the broker up delivers them.
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    data = write_updates(tmp_path / "none.jsonl", [])
    proc = net.publish(YAMAGUCHI_CITY, data)
    assert proc.wait() == 0, proc.output()
    assert until(lambda: _head(net, centre) == 30)


def test_lines_with_bad_bytes_are_reported_and_the_rest_published(
    make_net: Nets, tmp_path: Path, rng: random.Random
) -> None:
    net = make_net(origins=[YAMAGUCHI_CITY])
    [centre] = net.centres
    net.start_and_wait(net.national, centre)
    lines = _lines(40, seed=10)
    bad = sorted(rng.sample(range(40), 5))
    for i in bad:  # a byte that is no UTF-8 inside the name, as a faulty export writes
        lines[i] = lines[i].replace(b'"name":"', b'"name":"\xff', 1)
    data = tmp_path / "changes.jsonl"
    data.write_bytes(b"".join(lines))
    proc = net.publish(YAMAGUCHI_CITY, data)
    assert proc.wait() == 4, proc.output()  # INPUT: the valid ones went out all the same
    for i in bad:
        assert f"{data}:{i + 1}: not valid UTF-8: byte 0xff" in proc.output()
    assert "Traceback" not in proc.output()
    assert until(lambda: _head(net, centre) == 40 - len(bad))
