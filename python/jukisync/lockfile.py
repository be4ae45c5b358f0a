"""One process at a time per store or outbox: an advisory lock file in its directory.

LMDB lets several processes write one environment, but a daemon (or a publisher)
keeps state in memory that assumes it is the only writer: two publishers on one
outbox would give out the same sequence numbers. `hold` takes an exclusive `flock`
on `<directory>/<name>`; the kernel releases it when the process ends, however it
ends (SIGKILL included), so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["DirectoryLock", "LockHeld", "hold"]


class LockHeld(Exception):
    """Another process holds the lock; names it (pid) when it can."""


class DirectoryLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def hold(directory: str | os.PathLike[str], name: str, what: str) -> DirectoryLock:
    """Lock `directory` for this process (created if missing); raises `LockHeld`
    naming `what` and the holder's pid if another process has it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = os.pread(fd, 32, 0).decode().strip()
        os.close(fd)
        if holder == str(os.getpid()):
            raise LockHeld(f"{what} {directory} is already open in this process") from None
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise LockHeld(f"{what} {directory} is in use by another process{who}") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DirectoryLock(path, fd)
