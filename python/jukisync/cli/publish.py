"""`jukisync publish --config municipality.toml FILE`: a municipal system's publisher.

Reads JSON lines of updates (the `jukisync gen` format), accepts the valid ones into
the durable outbox (numbered, bundled, signed), publishes them over RabbitMQ with
publisher confirms, serves the centres' resend requests meanwhile, and exits once
every bundle is confirmed (`--follow`: keep serving until SIGTERM).

- Invalid lines are reported on stderr as `FILE:LINE: what is wrong` and skipped; the
  valid ones are published all the same, and the exit code is then INPUT (4).
- Store-and-forward: the file is accepted into the outbox whether or not the broker
  is up; while it is down, publishing retries until it returns (`--timeout` bounds
  the wait: exit UNAVAILABLE, the outbox keeps everything for the next run).
- Crash-safe input: how far the file got is recorded in the outbox with the updates
  it accepted, in the same transaction. Run the same file again after a crash and
  it goes on after the last accepted line: nothing is lost, nothing is numbered
  twice. An empty file (or `/dev/null`) only delivers what the outbox holds.
- `--supersedes HASH`: after an operator dropped a halting bundle at the centres
  (`jukisync quarantine drop` prints its hash), the updates of FILE replace it in the
  chain (`Publisher.reissue`) and the origin resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from jukisync import config as node_config
from jukisync import lockfile
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.publisher.bundling import BundlePolicy
from jukisync.publisher.input import BadLine, read_updates
from jukisync.publisher.node import PublisherFailed, PublisherNode
from jukisync.publisher.origin import Publisher, PublisherError
from jukisync.publisher.outbox import OutboxError
from jukisync.transport.amqp import AccessRefused, AmqpTransport, TopologyError
from jukisync.transport.base import TransportClosed
from jukisync.trust import keys
from jukisync.wire.messages import Update

__all__ = ["ATTESTATION_ROOM", "command"]

_NAME = "publish"
_CHUNK = 1000  # updates accepted per outbox transaction
_MAX_REPORTED = 1000  # invalid lines listed one by one; the rest are only counted
LOCK_FILE = "publisher.lock"
# Bytes kept free under the limits for what the centres add to a bundle on its way
# (one attestation is about 250 bytes).
ATTESTATION_ROOM = 1024

log = logging.getLogger("jukisync.publish")


@dataclass
class Summary:
    origin: str
    file: str
    accepted: int = 0
    invalid: int = 0
    skipped_other_origins: int = 0
    resumed_after_line: int = 0
    reissued: int = 0  # bundles re-issued with --supersedes
    published_bundles: int = 0
    published_updates: int = 0
    head_seq: int = 0
    unconfirmed: int = 0
    delivered: bool = False
    invalid_lines: list[int] = field(default_factory=list)


def _die(code: ExitCode, message: str) -> NoReturn:
    fail(_NAME, code, message)


def _lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from sys.stdin.buffer
        return
    with open(path, "rb") as f:
        yield from f


def _file_key(path: str) -> bytes | None:
    """The key under which the outbox records how far this file's content got (None
    for stdin: a stream cannot be recognised when it comes again)."""
    if path == "-":
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return b"file:" + digest.digest()


class _Reader:
    """The valid updates of a file, for this origin, in chunks; bad lines reported."""

    def __init__(
        self, path: str, publisher: Publisher, skip_others: bool, summary: Summary, start: int
    ) -> None:
        self.path = path
        self.publisher = publisher
        self.skip_others = skip_others
        self.summary = summary
        self.start = start
        self.last_line = start

    def _bad(self, bad: BadLine) -> None:
        summary = self.summary
        summary.invalid += 1
        if summary.invalid <= _MAX_REPORTED:
            summary.invalid_lines.append(bad.line_no)
            click.echo(f"jukisync {_NAME}: {self.path}:{bad.line_no}: {bad.error}", err=True)
        elif summary.invalid == _MAX_REPORTED + 1:
            click.echo(
                f"jukisync {_NAME}: {self.path}: more invalid lines; only counted from here",
                err=True,
            )

    def chunks(self) -> Iterator[tuple[list[Update], int]]:
        """(valid updates, last line number read) per chunk of at most _CHUNK updates."""
        origin = self.publisher.origin
        lines = itertools.islice(_lines(self.path), self.start, None)
        batch: list[Update] = []
        for item in read_updates(lines, self.publisher.validate):
            if isinstance(item, BadLine):
                item = BadLine(item.line_no + self.start, item.error)
                self.last_line = item.line_no
                self._bad(item)
                continue
            line_no, update = item[0] + self.start, item[1]
            self.last_line = line_no
            if update.municipality != origin:
                if self.skip_others:
                    self.summary.skipped_other_origins += 1
                else:
                    self._bad(
                        BadLine(
                            line_no,
                            f"municipality {update.municipality} is not this publisher's "
                            f"origin {origin} (--skip-others to skip such lines)",
                        )
                    )
                continue
            batch.append(update)
            if len(batch) >= _CHUNK:
                yield batch, line_no
                batch = []
        yield batch, self.last_line


def _open_publisher(loaded: node_config.MunicipalityConfig) -> Publisher:
    try:
        pair = keys.load(loaded.signing_key)
    except keys.KeyFileError as exc:
        _die(ExitCode.CONFIG, f"signing_key: {exc}")
    if pair.owner != loaded.origin:
        _die(
            ExitCode.CONFIG,
            f"signing_key: {loaded.signing_key} belongs to {pair.owner!r}, "
            f"not to origin {loaded.origin}",
        )
    limit = min(loaded.max_bundle_bytes, loaded.broker.max_message_bytes) - ATTESTATION_ROOM
    try:
        policy = BundlePolicy(loaded.max_updates, loaded.linger_s, max_bytes=limit)
    except ValueError as exc:
        _die(ExitCode.CONFIG, f"max_bundle_bytes / broker.max_message_bytes: {exc}")
    try:
        return Publisher(
            loaded.origin,
            pair.secret,
            pair.key_id,
            loaded.outbox,
            policy=policy,
            retain_confirmed=loaded.retain_confirmed,
        )
    except (OutboxError, OSError) as exc:
        _die(ExitCode.CONFIG, f"outbox: {exc}")


def _reissue(publisher: Publisher, reader: _Reader, dropped: bytes, summary: Summary) -> None:
    """All valid lines of the file make the replacement; any invalid one refuses it."""
    updates = [u for chunk, _ in reader.chunks() for u in chunk]
    summary.accepted = len(updates)
    if summary.invalid:
        _die(ExitCode.INPUT, f"{summary.invalid} invalid lines: nothing re-issued")
    try:
        entries = publisher.reissue(dropped, updates)
    except PublisherError as exc:
        _die(ExitCode.NOT_FOUND, str(exc))
    summary.reissued = len(entries)
    click.echo(
        f"jukisync {_NAME}: {publisher.origin}: re-issued seq {entries[0].first_seq}-"
        f"{entries[-1].last_seq} in {len(entries)} bundle(s), superseding {dropped.hex()}",
        err=True,
    )


async def _publish(
    loaded: node_config.MunicipalityConfig,
    publisher: Publisher,
    reader: _Reader | None,
    key: bytes | None,
    summary: Summary,
    *,
    follow: bool,
    timeout: float | None,
) -> int:
    """Feed the file (if any) into the outbox while publishing; until all is confirmed
    (and with `follow` until a signal). Returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int) -> None:
        if stopped_by:
            sys.stderr.write(f"jukisync {_NAME}: signal again: exiting at once\n")
            sys.stderr.flush()
            os._exit(128 + signum)  # the outbox keeps what was not confirmed
        stopped_by.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    broker = loaded.broker
    transport = AmqpTransport(
        broker.url, name=f"jukisync publisher {loaded.origin} pid {os.getpid()}", options=broker
    )
    node = PublisherNode(publisher, transport)  # it knows the transport's message limit
    # A refused login or vhost (or topology) needs the operator, not a retry for ever.
    refused = asyncio.ensure_future(_refusal(transport))
    try:
        await node.start()
        for updates, last_line in reader.chunks() if reader is not None else ():
            if stop.is_set():
                break
            publisher.add_many(updates, progress=None if key is None else (key, last_line))
            summary.accepted += len(updates)
            node.notify()
            await asyncio.sleep(0)  # let the pump publish while the file is read
        summary.delivered = await _until_delivered(node, stop, timeout, refused)
        if summary.delivered and follow and not stop.is_set():
            click.echo(
                f"jukisync {_NAME}: {publisher.origin}: all confirmed; serving resend "
                "requests until SIGTERM",
                err=True,
            )
            await stop.wait()
    except PublisherFailed as exc:
        click.echo(f"jukisync {_NAME}: {exc}", err=True)
        return int(ExitCode.FAILURE)
    except AccessRefused as exc:
        click.echo(f"jukisync {_NAME}: broker: {exc} (the outbox keeps the updates)", err=True)
        return int(ExitCode.CONFIG)
    finally:
        refused.cancel()
        await node.stop(graceful=node.failure is None)
        await transport.close()
        summary.published_bundles = node.published
        summary.published_updates = node.published_updates
    if summary.delivered:
        return int(ExitCode.OK)
    if stopped_by:
        return 128 + stopped_by[0]
    return int(ExitCode.UNAVAILABLE)


async def _refusal(transport: AmqpTransport) -> None:
    """Raises AccessRefused once the broker refuses this publisher's login or vhost;
    otherwise waits until cancelled (a topology conflict is, to a publisher, as good
    as no broker: the outbox keeps everything)."""
    with contextlib.suppress(TransportClosed):
        try:
            await transport.connect(timeout=None)
        except AccessRefused:
            raise
        except TopologyError:
            pass
    await asyncio.Event().wait()


async def _until_delivered(
    node: PublisherNode,
    stop: asyncio.Event,
    timeout: float | None,
    refused: asyncio.Future[None],
) -> bool:
    """Whether every bundle was confirmed before `stop` or the timeout; raises
    PublisherFailed if publishing stopped for good, AccessRefused if the broker
    refuses this publisher's login or vhost."""
    drain = asyncio.ensure_future(node.drain())
    waiter = asyncio.ensure_future(stop.wait())
    try:
        watched: list[asyncio.Future[Any]] = [drain, waiter, refused]
        done, _ = await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if refused in done:
            refused.result()  # AccessRefused
    finally:
        waiter.cancel()
        if not drain.done():
            drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    if drain not in done:
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        return False
    drain.result()  # PublisherFailed
    return True


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync publish --config config/municipality.toml changes.jsonl
  jukisync gen --residents 1000 --changes 500 --out all.jsonl
  jukisync publish --config config/municipality.toml --skip-others all.jsonl
  jukisync publish --config config/municipality.toml /dev/null   # deliver the outbox
  jukisync publish --config config/municipality.toml --supersedes 3fa2...e9 fixed.jsonl

\b
Exit codes:
  0    every update accepted and every bundle confirmed by the broker
  1    publishing stopped: a bundle too large for the broker (kept in the outbox)
  3    bad config or key file, an outbox of another origin, or the broker refused
       the login or vhost of broker.url (at once; the outbox keeps the updates)
  4    some lines were invalid (the valid ones were published); or --supersedes
       refused because of invalid lines
  5    --supersedes names no bundle of the outbox
  7    not all confirmed within --timeout (kept in the outbox), or the outbox is in
       use by another publisher
  130  (SIGINT) / 143 (SIGTERM) before everything was confirmed (kept in the outbox)
""",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Municipality config (role = "municipality").',
)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option(
    "--skip-others",
    is_flag=True,
    help="Skip (and count) lines of other municipalities instead of reporting them as "
    "invalid, so one generated file can feed every municipality's publisher.",
)
@click.option("--follow", is_flag=True, help="After delivering, keep serving resend requests.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Give up waiting for the broker's confirms after this many seconds (exit 7; "
    "the outbox keeps the rest). Default: wait as long as it takes.",
)
@click.option(
    "--supersedes",
    metavar="HASH",
    help="Re-issue the dropped bundle with this body hash (hex) with the updates of FILE.",
)
@click.option(
    "--no-resume",
    is_flag=True,
    help="Accept every line of FILE even if the outbox recorded it as accepted before.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as one JSON object.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def command(
    config_path: Path,
    file: str,
    skip_others: bool,
    follow: bool,
    timeout: float | None,
    supersedes: str | None,
    no_resume: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Publish the updates of a JSON-lines FILE ('-' for stdin) as this municipality.

    Every valid line is accepted into the durable outbox, then published with
    publisher confirms; resend requests of the centres are served while it runs. It
    exits when every bundle is confirmed.
    """
    try:
        loaded = node_config.load(config_path)
    except node_config.ConfigError as exc:
        _die(ExitCode.CONFIG, str(exc))
    if not isinstance(loaded, node_config.MunicipalityConfig):
        _die(
            ExitCode.CONFIG,
            f"{config_path}: role is {type(loaded).__name__.removesuffix('Config').lower()}; "
            "publish needs a municipality config",
        )
    dropped: bytes | None = None
    if supersedes is not None:
        try:
            dropped = bytes.fromhex(supersedes)
        except ValueError:
            dropped = b""
        if len(dropped) != 32:
            raise click.BadParameter("a bundle hash is 64 hex digits", param_hint="--supersedes")
    if file != "-" and (not Path(file).exists() or Path(file).is_dir()):
        _die(ExitCode.NOT_FOUND, f"{file}: no such file")
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # the transport reports losses
    logging.getLogger("aio_pika").setLevel(logging.CRITICAL)

    try:
        lock = lockfile.hold(loaded.outbox, LOCK_FILE, "outbox")
    except lockfile.LockHeld as exc:
        _die(ExitCode.UNAVAILABLE, str(exc))
    except OSError as exc:
        _die(ExitCode.CONFIG, f"outbox: {loaded.outbox}: {exc.strerror or exc}")
    with lock:
        code = _run(loaded, file, skip_others, follow, timeout, dropped, no_resume, as_json)
    sys.exit(code)


def _run(
    loaded: node_config.MunicipalityConfig,
    file: str,
    skip_others: bool,
    follow: bool,
    timeout: float | None,
    dropped: bytes | None,
    no_resume: bool,
    as_json: bool,
) -> int:
    import uvloop

    publisher = _open_publisher(loaded)
    summary = Summary(origin=loaded.origin, file=file)
    try:
        key = None if dropped is not None else _file_key(file)
        start = 0 if key is None or no_resume else publisher.progress(key)
        if start:
            summary.resumed_after_line = start
            click.echo(
                f"jukisync {_NAME}: {file}: lines 1-{start} were accepted before "
                "(same content); going on after them",
                err=True,
            )
        reader: _Reader | None = _Reader(file, publisher, skip_others, summary, start)
        if dropped is not None:
            assert reader is not None
            _reissue(publisher, reader, dropped, summary)
            reader = None
        code = uvloop.run(
            _publish(loaded, publisher, reader, key, summary, follow=follow, timeout=timeout)
        )
        summary.head_seq = publisher.head.last_seq
        summary.unconfirmed = publisher.unconfirmed_count()
    except OSError as exc:
        _die(ExitCode.INPUT, f"{file}: {exc.strerror or exc}")
    finally:
        publisher.close()
    _report(summary, as_json)
    if code == ExitCode.OK and summary.invalid:
        return int(ExitCode.INPUT)
    return code


def _report(summary: Summary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(summary), ensure_ascii=False))
    parts = [f"{summary.accepted} updates accepted"]
    if summary.invalid:
        parts.append(f"{summary.invalid} invalid lines")
    if summary.skipped_other_origins:
        parts.append(f"{summary.skipped_other_origins} of other municipalities skipped")
    outcome = (
        "all confirmed"
        if summary.delivered
        else f"{summary.unconfirmed} bundles kept in the outbox for the next run"
    )
    click.echo(
        f"jukisync {_NAME}: {summary.origin}: {', '.join(parts)}; published "
        f"{summary.published_bundles} bundles ({summary.published_updates} updates); "
        f"head seq {summary.head_seq}; {outcome}",
        err=True,
    )
