"""Run the test suite at other wall clocks: the suite must pass at any hour and year.

`make test-clocks` runs this. Each run fakes the test process's wall clock (not the
monotonic one) with libfaketime, pinned as a dev dependency (`libfaketime` on PyPI ships
the library), started at one of the instants below and running on from there. External
tools that talk to the real broker are run on the real clock (tests/externaltools.py).

    python tests/run_at_clocks.py [PYTEST ARGS...]
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

# (label, UTC instant the faked clock starts at)
CLOCKS = (
    ("02:30 JST (late night in Japan)", "2026-11-30 17:30:00"),
    ("23:59:59 JST on 31 March (the fiscal year turns)", "2027-03-31 14:59:59"),
    ("June 2032 (after the example keys' first rotation)", "2032-06-15 03:00:00"),
)


def faketime_library() -> Path:
    import libfaketime  # type: ignore[import-untyped]  # the dev extra installs it

    ok, env = libfaketime.get_reload_information()
    if not ok:
        sys.exit("libfaketime does not support this platform")
    return Path(str(env["LD_LIBRARY_PATH"])) / str(env["LD_PRELOAD"]).split(":", 1)[0]


def _utc(instant: str) -> float:
    return dt.datetime.fromisoformat(instant).replace(tzinfo=dt.UTC).timestamp()


def main(argv: list[str]) -> int:
    library = faketime_library()
    failed = []
    for label, instant in CLOCKS:
        print(f"== pytest with the clock at {instant} UTC: {label}", flush=True)
        offset = int(_utc(instant) - time.time())  # clock ok: the real clock, on purpose
        env = dict(
            os.environ,
            TZ="UTC",
            LD_PRELOAD=str(library),
            FAKETIME=f"{offset:+d}",
            DONT_FAKE_MONOTONIC="1",
            FAKETIME_NO_CACHE="1",
        )
        done = subprocess.run([sys.executable, "-m", "pytest", "tests", "-q", *argv], env=env)
        if done.returncode != 0:
            failed.append(label)
    if failed:
        print("failed at: " + "; ".join(failed), flush=True)
        return 1
    print(f"passed at all {len(CLOCKS)} clocks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
