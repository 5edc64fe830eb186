"""Prefect's temporary server (the embedded default of `modhifi run` and `sweep`), started
so that it ends with its run and with nothing else.

Prefect starts it as a plain child process: in the terminal's process group, so a Ctrl-C
killed it at once and the interrupted flow then spent over a minute failing to report to
it (`ConnectError`); and alive after a `kill -9` of the run, holding ~200 MB. `guard()`
makes Prefect start it in a session of its own (a Ctrl-C reaches the run, which then
reports its end to a live server and stops it at exit) with a watcher thread inside it
that ends it once its parent process is gone (a parent-death signal would follow the
thread that started it, and Prefect starts it from whichever thread first needs it).
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

# Run as `python -c WATCHER ARGS...` in place of `python -m uvicorn ARGS...`.
WATCHER = """
import os, runpy, signal, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down on it
    time.sleep(10)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = "uvicorn"
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def guard() -> None:
    """Make Prefect's temporary server start in its own session and end with its parent
    (idempotent). Call after Prefect's settings are in the environment."""
    from prefect.server.api import server

    if isinstance(server.subprocess, SimpleNamespace):
        return
    server.subprocess = SimpleNamespace(**{**vars(subprocess), "Popen": _guarded_popen})


def _guarded_popen(args: list[str], **kwargs: object) -> subprocess.Popen:
    if list(args[1:3]) == ["-m", "uvicorn"]:
        args = [args[0], "-c", WATCHER, *args[3:]]
        kwargs["start_new_session"] = True
    return subprocess.Popen(args, **kwargs)
