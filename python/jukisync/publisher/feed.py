"""Feeding a JSON-lines file or a stream of updates into a `Publisher`.

- **Resume by position.** A file is taken as append-only: how far it got (byte
  offset, line number and the SHA-256 of the bytes consumed so far) is recorded in
  the outbox in the same transaction as the updates of those lines. Fed again (grown,
  or after a crash), it goes on after the last accepted line, so old lines are never
  numbered twice. A file whose consumed prefix changed (rewritten, truncated) is
  refused (`FeedError`) rather than guessed at. Streams (stdin) are not resumed.
- **Follow.** With `follow`, a file is watched for appended lines and stdin is read
  until it closes; a last line without its newline waits for the rest.
- **Off the event loop.** `Feed.run` reads, decodes and validates in a thread and
  hands updates to the publisher on the loop in batches, so publishing, confirms and
  reconnects go on while the input is idle (a pipe that sends a line now and then).
- **Bad lines** are reported (`BadLine`: line number and reason) and skipped; the
  lines after them are fed all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec

from jukisync.publisher.input import BadLine, LineError, parse_line
from jukisync.publisher.origin import Checked, Publisher
from jukisync.wire import codes
from jukisync.wire.messages import Update

__all__ = ["STDIN", "Feed", "FeedError", "FeedPosition", "FeedReport", "Skipped"]

STDIN = "-"
_CHUNK = 1000  # updates accepted per outbox transaction, at most
_POLL_S = 0.1  # how often a followed file is checked for growth


class FeedError(Exception):
    """The input cannot be fed as asked (a rewritten file, an unreadable one)."""


class FeedPosition(msgspec.Struct, frozen=True):
    """How far a file was consumed: the bytes and lines before the next one to read,
    and the SHA-256 of those bytes (to recognise the same file when it comes again)."""

    offset: int = 0
    line: int = 0
    prefix_sha256: bytes = hashlib.sha256().digest()


@dataclass(slots=True)
class FeedReport:
    accepted: int = 0
    invalid: int = 0
    skipped_other_origins: int = 0
    resumed_after_line: int = 0
    last_line: int = 0


class Skipped(enum.Enum):
    """A line with no update that is no error either."""

    BLANK = "blank"
    OTHER_ORIGIN = "another municipality's (--skip-others)"


@dataclass(frozen=True, slots=True)
class _Line:
    """One line read: its update (or why it has none) and the position after it."""

    line_no: int
    item: Checked | BadLine | Skipped
    position: FeedPosition | None  # None for streams (not resumable)


@dataclass(slots=True)
class _Failed:
    error: Exception


_END = object()


@dataclass(slots=True)
class Feed:
    """The updates of `path` ('-' for stdin) for `publisher`'s origin.

    `skip_others`: lines of other municipalities are counted instead of reported as
    bad. `resume`: go on after what the outbox recorded for this file (checked).
    `on_bad` hears each bad line as it is found.
    """

    publisher: Publisher
    path: str
    follow: bool = False
    skip_others: bool = False
    resume: bool = True
    on_bad: Callable[[BadLine], None] | None = None
    chunk: int = _CHUNK
    poll_s: float = _POLL_S
    report: FeedReport = field(default_factory=FeedReport)
    _start: FeedPosition = field(default_factory=FeedPosition)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.path != STDIN and self.resume:
            recorded = self.publisher.progress(self.key)
            if recorded is not None:
                self._start = msgspec.msgpack.decode(recorded, type=FeedPosition)
                self._check_prefix(self._start)
            else:
                self._start = self._legacy_position() or self._start
            self.report.resumed_after_line = self._start.line
        self.report.last_line = self._start.line

    @property
    def key(self) -> bytes:
        """Where the outbox keeps this file's position: its real path."""
        return b"feed:" + os.fsencode(os.path.realpath(self.path))

    @property
    def resumable(self) -> bool:
        return self.path != STDIN

    def _legacy_position(self) -> FeedPosition | None:
        """Where an older `publish` left this very content: it recorded the count of
        lines accepted under the SHA-256 of the whole file (`file:<digest>`, u64)."""
        digest = hashlib.sha256()
        try:
            with open(self.path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            recorded = self.publisher.progress(b"file:" + digest.digest())
            if recorded is None:
                return None
            lines = int.from_bytes(recorded, "big")
            prefix = hashlib.sha256()
            offset = 0
            with open(self.path, "rb") as f:
                for _ in range(lines):
                    raw = f.readline()
                    prefix.update(raw)
                    offset += len(raw)
        except OSError as exc:
            raise FeedError(f"{self.path}: {exc.strerror or exc}") from None
        return FeedPosition(offset, lines, prefix.digest())

    def _check_prefix(self, position: FeedPosition) -> None:
        digest = hashlib.sha256()
        left = position.offset
        try:
            with open(self.path, "rb") as f:
                while left and (block := f.read(min(left, 1 << 20))):
                    digest.update(block)
                    left -= len(block)
        except OSError as exc:
            raise FeedError(f"{self.path}: {exc.strerror or exc}") from None
        if left or digest.digest() != position.prefix_sha256:
            raise FeedError(
                f"{self.path}: lines 1-{position.line} ({position.offset:,} bytes) were "
                "published from this path before, and its beginning has changed since: "
                "the file was rewritten, not appended to. Publishing it could send those "
                "lines again under new sequence numbers; move the new content to a new "
                "file, or use --no-resume if every line of it is new"
            )

    # --- reading (any thread) ---------------------------------------------------------
    def _raw_lines(self) -> Iterator[tuple[bytes, int]]:
        """(line with its newline if it has one, offset after it), from the start
        position. Only the last line of a file that is not followed may lack it."""
        if self.path == STDIN:
            yield from self._lines_of(sys.stdin.buffer, 0, stream=True)
            return
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed below, across yields)
        except OSError as exc:
            raise FeedError(f"{self.path}: {exc.strerror or exc}") from None
        with f:
            f.seek(self._start.offset)
            yield from self._lines_of(f, self._start.offset, stream=False)

    def _lines_of(self, f: BinaryIO, offset: int, *, stream: bool) -> Iterator[tuple[bytes, int]]:
        partial = b""
        while not self._stop.is_set():
            raw = f.readline()
            if raw.endswith(b"\n"):
                offset += len(partial) + len(raw)
                yield partial + raw, offset
                partial = b""
                continue
            partial += raw
            if stream or not self.follow:  # the end of the input
                if partial:
                    yield partial, offset + len(partial)
                return
            # A followed file: wait for more (a half-written line waits for its end).
            offset_now = offset + len(partial)
            if os.fstat(f.fileno()).st_size < offset_now:
                raise FeedError(f"{self.path}: truncated while followed (not append-only)")
            self._stop.wait(self.poll_s)

    def lines(self) -> Iterator[_Line]:
        origin = self.publisher.origin
        line_no = self._start.line
        digest = hashlib.sha256() if self.resumable else None
        if digest is not None and self._start.offset:
            with open(self.path, "rb") as f:  # checked in __post_init__: re-hash it
                left = self._start.offset
                while left and (block := f.read(min(left, 1 << 20))):
                    digest.update(block)
                    left -= len(block)
        for raw, offset in self._raw_lines():
            line_no += 1
            position = None
            if digest is not None and not raw.endswith(b"\n"):
                # The last line of the file, without its newline: complete JSON is a
                # line like any other; anything else may be a line still being written,
                # so it is left unconsumed for the next run instead of being lost.
                item = self._parse(line_no, raw.strip(), origin)
                if isinstance(item, BadLine) and item.error.startswith("not valid JSON"):
                    yield _Line(
                        line_no,
                        BadLine(
                            line_no,
                            f"{item.error}; the last line has no newline: left unread, it is "
                            "read again once the file has grown",
                        ),
                        None,
                    )
                    return
            if digest is not None:
                digest.update(raw)
                position = FeedPosition(offset, line_no, digest.copy().digest())
            text = raw.strip()
            if not text:
                yield _Line(line_no, Skipped.BLANK, position)
                continue
            yield _Line(line_no, self._parse(line_no, text, origin), position)

    def _parse(self, line_no: int, text: bytes, origin: str) -> Checked | BadLine | Skipped:
        try:
            update = parse_line(text)
            if update.municipality != origin:
                if self.skip_others and codes.is_valid_local_government_code(update.municipality):
                    return Skipped.OTHER_ORIGIN
                raise codes.CodeError(
                    "municipality",
                    update.municipality,
                    f"not this publisher's origin {origin}"
                    + ("" if self.skip_others else " (--skip-others to skip such lines)"),
                )
            # Checked once, here (in the reader thread); `add_many` takes it as it is.
            return self.publisher.check(update)
        except (LineError, codes.CodeError) as exc:
            return BadLine(line_no, str(exc))

    # --- accepting -----------------------------------------------------------------------
    def _accept(self, lines: list[_Line]) -> None:
        batch: list[Checked] = []
        position: FeedPosition | None = None
        for line in lines:
            self.report.last_line = line.line_no
            position = line.position or position
            if isinstance(line.item, BadLine):
                self.report.invalid += 1
                if self.on_bad is not None:
                    self.on_bad(line.item)
            elif line.item is Skipped.OTHER_ORIGIN:
                self.report.skipped_other_origins += 1
            elif isinstance(line.item, Checked):
                batch.append(line.item)
        progress = None
        if position is not None:
            progress = (self.key, msgspec.msgpack.encode(position))
        if batch or progress is not None:
            self.publisher.add_many(batch, progress=progress)
        self.report.accepted += len(batch)

    def batches(self) -> Iterator[list[Update]]:
        """Feed synchronously (no event loop): accept each chunk, yield its updates."""
        pending: list[_Line] = []
        for line in self.lines():
            pending.append(line)
            if len(pending) >= self.chunk:
                self._accept(pending)
                yield [ln.item.update for ln in pending if isinstance(ln.item, Checked)]
                pending = []
        if pending:
            self._accept(pending)
            yield [ln.item.update for ln in pending if isinstance(ln.item, Checked)]

    def updates(self) -> tuple[list[Update], list[BadLine]]:
        """Every update and bad line of the input, accepting nothing (`reissue`)."""
        updates: list[Update] = []
        bad: list[BadLine] = []
        for line in self.lines():
            if isinstance(line.item, Checked):
                updates.append(line.item.update)
            elif isinstance(line.item, BadLine):
                bad.append(line.item)
                if self.on_bad is not None:
                    self.on_bad(line.item)
        return updates, bad

    async def run(self, on_accepted: Callable[[], None], stop: asyncio.Event) -> FeedReport:
        """Feed until the input ends (or `stop`): read in a thread, accept on the loop
        in batches of what has arrived (at most `chunk` lines), calling `on_accepted`
        after each (e.g. `PublisherNode.notify`). Raises `FeedError`."""
        lines: queue.Queue[object] = queue.Queue(maxsize=4 * self.chunk)

        def put(item: object) -> bool:
            while not self._stop.is_set():
                with contextlib.suppress(queue.Full):
                    lines.put(item, timeout=0.2)
                    return True
            return False

        def read() -> None:
            try:
                for line in self.lines():
                    if not put(line):
                        return
            except Exception as exc:  # handed to the loop, raised there
                put(_Failed(exc))
                return
            put(_END)

        # A daemon thread: one blocked reading a silent stdin must not keep the
        # process alive once the loop is done with it.
        reader = threading.Thread(target=read, name=f"feed {self.path}", daemon=True)
        reader.start()
        try:
            while not stop.is_set():
                try:
                    first = await asyncio.to_thread(lines.get, True, 0.2)
                except queue.Empty:
                    continue
                got = [first]
                while len(got) < self.chunk:
                    try:
                        got.append(lines.get_nowait())
                    except queue.Empty:
                        break
                ended = got[-1] is _END or isinstance(got[-1], _Failed)
                read_lines = [g for g in got if isinstance(g, _Line)]
                if read_lines:
                    self._accept(read_lines)
                    on_accepted()
                if isinstance(got[-1], _Failed):
                    error = got[-1].error
                    if isinstance(error, FeedError):
                        raise error
                    raise FeedError(f"{self.path}: {error}") from error
                if ended:
                    return self.report
            # Stopped: what was already read (from a pipe it cannot be read again) is
            # accepted before returning; the reader reads nothing more.
            self._stop.set()
            left = []
            while True:
                try:
                    item = lines.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Line):
                    left.append(item)
            if left:
                self._accept(left)
                on_accepted()
        finally:
            self._stop.set()
        return self.report
