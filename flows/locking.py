"""One pipeline run per workspace at a time: an advisory file lock (`filelock`), plus a
sidecar file naming the holder's pid so a refused run can say who holds it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from modhifi_core.errors import InputError


@contextmanager
def workspace_lock(path: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `path` while the block runs.

    Waits up to `wait_seconds` for a running pipeline to finish, then refuses with a
    message naming the holder's pid (read from `<path>.pid`). The lock is an OS lock
    (flock), so it is released when the process dies and a killed run never leaves the
    workspace locked; a stale pid file left by a killed holder is overwritten.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, poll_interval=0.5)
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout:
        raise InputError(
            f"another modhifi run (pid {_holder(path)}) is using this workspace; wait for it or pass --wait SECONDS"
        ) from None
    pid_file = pid_file_of(path)
    try:
        pid_file.write_text(str(os.getpid()))
        yield
    finally:
        with suppress(OSError):  # removed while still locked, so it never deletes the next holder's pid
            pid_file.unlink()
        lock.release()


def pid_file_of(lock_path: Path) -> Path:
    """The sidecar that names the lock holder."""
    return lock_path.with_name(lock_path.name + ".pid")


def _holder(lock_path: Path) -> str:
    try:
        return pid_file_of(lock_path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"
