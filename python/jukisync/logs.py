"""Diagnostics of the long-running commands (`run`, `publish`), on stderr.

Two formats, both with timestamps carrying their UTC offset (ISO 8601, local zone,
milliseconds), so lines from machines in different zones sort and compare:
- ``text``: `2026-12-01T21:45:03.120+09:00 INFO jukisync.node: ...`;
- ``json``: one object per line for log shippers: `time`, `level`, `logger`,
  `message`, and `exception` when there is a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Final, Literal

__all__ = ["FORMATS", "LogFormat", "configure"]

LogFormat = Literal["text", "json"]
FORMATS: Final = ("text", "json")


def _timestamp(record: logging.LogRecord) -> str:
    return (
        dt.datetime.fromtimestamp(record.created, dt.UTC)
        .astimezone()
        .isoformat(timespec="milliseconds")
    )


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: LogFormat = "text") -> None:
    """Root logging to stderr in `fmt`; the AMQP libraries quiet (the transport
    reports connection losses itself)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    logging.getLogger("aio_pika").setLevel(logging.CRITICAL)
