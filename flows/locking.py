"""One pipeline run per workspace at a time: an advisory file lock (fcntl.flock)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modhifi_core.errors import InputError


@contextmanager
def workspace_lock(path: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `path` while the block runs.

    Waits up to `wait_seconds` for a running pipeline to finish, then refuses with a
    message naming the holder's pid. The lock is released when the process dies, so a
    killed run never leaves the workspace locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise InputError(
                        f"another modhifi run (pid {holder}) is using this workspace; "
                        "wait for it or pass --wait SECONDS"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
