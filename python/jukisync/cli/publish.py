"""`jukisync publish --config municipality.toml FILE`: a municipal system's publisher.

Reads JSON lines of updates (the `jukisync gen` format), accepts the valid ones into
the durable outbox (numbered, bundled, signed), publishes them over RabbitMQ with
publisher confirms, serves the centres' resend requests meanwhile, and exits once
every bundle is confirmed. `--follow` streams: FILE is watched for appended lines,
stdin ('-') is read until it closes, and resend requests are served until SIGTERM.
The input is read off the event loop (`jukisync.publisher.feed`), so publishing,
confirms and reconnects go on while it waits for lines; linger cuts the bundles.

- Invalid lines are reported on stderr as `FILE:LINE: what is wrong` and skipped; the
  valid ones are published all the same, and the exit code is then INPUT (4).
- Store-and-forward: the file is accepted into the outbox whether or not the broker
  is up; while it is down, publishing retries until it returns (`--timeout` bounds
  the wait: exit UNAVAILABLE, the outbox keeps everything for the next run).
- Crash-safe, append-only input: how far the file got (byte offset, line, hash of
  the bytes consumed) is recorded in the outbox with the updates it accepted, in the
  same transaction. Run the same file again after a crash, or after lines were
  appended, and it goes on after the last accepted line: nothing is lost, nothing is
  numbered twice. A file whose beginning changed is refused (exit 4). An empty file
  (or `/dev/null`) only delivers what the outbox holds.
- `--supersedes HASH`: after an operator dropped a halting bundle at the centres
  (`jukisync quarantine drop` prints its hash), the updates of FILE replace it in the
  chain (`Publisher.reissue`) and the origin resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from jukisync import config as node_config
from jukisync import lockfile, logs
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.publisher.configured import (
    PublisherConfigError,
    load_config,
    open_configured,
    transport_for,
)
from jukisync.publisher.feed import STDIN, Feed, FeedError, FeedReport
from jukisync.publisher.input import BadLine, input_schema
from jukisync.publisher.node import PublisherFailed, PublisherNode
from jukisync.publisher.origin import Publisher, PublisherError
from jukisync.transport.amqp import AccessRefused, AmqpTransport, TopologyError
from jukisync.transport.base import TransportClosed

__all__ = ["command"]

_NAME = "publish"
_MAX_REPORTED = 1000  # invalid lines listed one by one; the rest are only counted

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

    def take(self, report: FeedReport) -> None:
        self.accepted = report.accepted
        self.invalid = report.invalid
        self.skipped_other_origins = report.skipped_other_origins
        self.resumed_after_line = report.resumed_after_line


def _die(code: ExitCode, message: str) -> NoReturn:
    fail(_NAME, code, message)


class _BadLines:
    """Reports invalid lines as `FILE:LINE: reason` on stderr (the first
    `_MAX_REPORTED`; then only counts them)."""

    def __init__(self, path: str, summary: Summary) -> None:
        self.path = path
        self.summary = summary
        self.seen = 0

    def __call__(self, bad: BadLine) -> None:
        self.seen += 1
        if self.seen <= _MAX_REPORTED:
            self.summary.invalid_lines.append(bad.line_no)
            click.echo(f"jukisync {_NAME}: {self.path}:{bad.line_no}: {bad.error}", err=True)
        elif self.seen == _MAX_REPORTED + 1:
            click.echo(
                f"jukisync {_NAME}: {self.path}: more invalid lines; only counted from here",
                err=True,
            )


def _reissue(publisher: Publisher, feed: Feed, dropped: bytes, summary: Summary) -> None:
    """All valid lines of the file make the replacement; any invalid one refuses it."""
    updates, bad = feed.updates()
    summary.accepted = len(updates)
    summary.invalid = len(bad)
    if bad:
        _die(ExitCode.INPUT, f"{len(bad)} invalid lines: nothing re-issued")
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
    feed: Feed | None,
    summary: Summary,
    *,
    follow: bool,
    timeout: float | None,
) -> int:
    """Feed the input (if any) into the outbox while publishing; until all is
    confirmed (and with `follow` until a signal). Returns the exit code."""
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

    transport = transport_for(loaded)
    # It knows the transport's message limit.
    node = PublisherNode(publisher, transport, announce_s=loaded.announce_interval_s)
    # A refused login or vhost needs the operator, not a retry for ever.
    refused = asyncio.ensure_future(_refusal(transport))
    try:
        await node.start()
        if feed is not None:
            try:
                # The input is read in a thread: the pump publishes, confirms and
                # reconnects while the feed waits for lines.
                summary.take(await feed.run(node.notify, stop))
            except FeedError as exc:
                summary.take(feed.report)
                click.echo(f"jukisync {_NAME}: {exc}", err=True)
                return int(ExitCode.INPUT)
        summary.delivered = await _until_delivered(node, stop, timeout, refused)
        # A followed file has no end but a signal; a stream ends when it closes.
        if summary.delivered and follow and summary.file != STDIN and not stop.is_set():
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
        if follow and not publisher.unconfirmed_count() and not publisher.open_count:
            return int(ExitCode.OK)  # a followed input ends with a signal
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


def _print_schema(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(json.dumps(input_schema(), ensure_ascii=False, indent=2))
        ctx.exit(0)


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync publish --config config/municipality.toml changes.jsonl
  jukisync gen --residents 1000 --changes 500 --out all.jsonl
  jukisync publish --config config/municipality.toml --skip-others all.jsonl
  jukisync publish --config config/municipality.toml /dev/null   # deliver the outbox
  jukisync publish --config config/municipality.toml --supersedes 3fa2...e9 fixed.jsonl
  tail -F /var/log/cs/changes.jsonl | jukisync publish --config m.toml --follow -
  jukisync publish --config config/municipality.toml --follow changes.jsonl  # appended lines

\b
Input: one JSON object per line, fields as in docs/update.schema.json (`seq` is
ignored: the publisher numbers updates). A line that is not UTF-8, not JSON or not a
valid update is reported as FILE:LINE: reason and skipped.

\b
Exit codes:
  0    every update accepted and every bundle confirmed by the broker
  1    publishing stopped: a bundle too large for the broker (kept in the outbox)
  3    bad config or key file, an outbox of another origin, or the broker refused
       the login or vhost of broker.url (at once; the outbox keeps the updates)
  4    some lines were invalid (the valid ones were published); FILE was rewritten
       since it was published (not appended to); or --supersedes refused because
       of invalid lines
  5    --supersedes names no bundle of the outbox
  7    not all confirmed within --timeout (kept in the outbox), or the outbox is in
       use by another publisher
  130  (SIGINT) / 143 (SIGTERM) before everything was confirmed (kept in the outbox);
       with --follow a signal is the normal end: 0 once everything is confirmed
""",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Municipality config (role = "municipality").',
)
@click.option(
    "--print-schema",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_print_schema,
    help="Print the JSON Schema of an input line (docs/update.schema.json) and exit.",
)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option(
    "--skip-others",
    is_flag=True,
    help="Skip (and count) lines of other municipalities instead of reporting them as "
    "invalid, so one generated file can feed every municipality's publisher.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Stream: publish lines as they come. FILE: lines appended to it, serving resend "
    "requests, until SIGTERM/SIGINT; '-': stdin until it closes (then deliver and exit).",
)
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
        loaded = load_config(config_path)
    except PublisherConfigError as exc:
        _die(ExitCode.CONFIG, str(exc))
    dropped: bytes | None = None
    if supersedes is not None:
        try:
            dropped = bytes.fromhex(supersedes)
        except ValueError:
            dropped = b""
        if len(dropped) != 32:
            raise click.BadParameter("a bundle hash is 64 hex digits", param_hint="--supersedes")
        if follow:
            raise click.BadParameter("not with --follow", param_hint="--supersedes")
    if file != STDIN and (not Path(file).exists() or Path(file).is_dir()):
        _die(ExitCode.NOT_FOUND, f"{file}: no such file")
    logs.configure(log_level)

    try:
        publisher = open_configured(loaded)
    except PublisherConfigError as exc:
        _die(ExitCode.CONFIG, str(exc))
    except lockfile.LockHeld as exc:
        _die(ExitCode.UNAVAILABLE, str(exc))
    try:
        code = _run(
            loaded, publisher, file, skip_others, follow, timeout, dropped, no_resume, as_json
        )
    finally:
        publisher.close()
    sys.exit(code)


def _run(
    loaded: node_config.MunicipalityConfig,
    publisher: Publisher,
    file: str,
    skip_others: bool,
    follow: bool,
    timeout: float | None,
    dropped: bytes | None,
    no_resume: bool,
    as_json: bool,
) -> int:
    import uvloop

    summary = Summary(origin=loaded.origin, file=file)
    on_bad = _BadLines(file, summary)
    try:
        feed: Feed | None = Feed(
            publisher,
            file,
            follow=follow,
            skip_others=skip_others,
            resume=not no_resume and dropped is None,
            on_bad=on_bad,
        )
    except FeedError as exc:
        _die(ExitCode.INPUT, str(exc))
    assert feed is not None
    if feed.report.resumed_after_line:
        summary.resumed_after_line = feed.report.resumed_after_line
        click.echo(
            f"jukisync {_NAME}: {file}: lines 1-{feed.report.resumed_after_line} were "
            "accepted before; going on after them",
            err=True,
        )
    try:
        if dropped is not None:
            _reissue(publisher, feed, dropped, summary)
            feed = None
        code = uvloop.run(
            _publish(loaded, publisher, feed, summary, follow=follow, timeout=timeout)
        )
        summary.head_seq = publisher.head.last_seq
        summary.unconfirmed = publisher.unconfirmed_count()
    except OSError as exc:
        _die(ExitCode.INPUT, f"{file}: {exc.strerror or exc}")
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
