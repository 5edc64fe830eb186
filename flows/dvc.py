"""The DVC side of a run: which stages changed, and reproducing one stage.

DVC runs every stage (`dvc repro --single-item`), so `dvc.lock` — the lineage record —
is always written by DVC itself, and `modhifi run` and `dvc repro` cannot disagree.
A stage's output (its progress bars included) is streamed while it runs: `reproduce`
hands each line, and each carriage-return progress update, to a callback.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from modhifi_core.errors import InputError


class StageFailed(RuntimeError):
    """A stage's command failed: `bad_input` when it exited 2, `signal` when a signal killed
    it (SIGKILL: the kernel's out-of-memory killer or `kill -9`). Neither is worth retrying."""

    def __init__(self, stage: str, code: int, tail: str, signal: int | None = None) -> None:
        self.stage, self.code, self.bad_input, self.signal = stage, code, code == 2, signal
        if signal is not None:
            name = _signal_name(signal)
            why = " (out of memory, or kill -9)" if name == "SIGKILL" else ""
            super().__init__(f"stage {stage} was killed by {name}{why}; its previous outputs are back in place")
        else:
            super().__init__(f"stage {stage} failed (exit {code}): {tail.removeprefix('error: ')}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# Called with (text, complete): complete lines, and (complete=False) what a progress bar
# shows now, i.e. the text after its last carriage return.
OnOutput = Callable[[str, bool], None]

# What DVC itself says around a stage's command; `bookkeeping` tells a viewer to hide it.
# The stage's own `{...}` result line is hidden too: its seconds are reported at the end.
_BOOKKEEPING = re.compile(
    r"^(Running stage '|> |(Updating|Generating) lock file|To track the changes with git|git add "
    r"|To enable auto staging|dvc config core\.autostage|Use `dvc push`|Stage '.*' didn't change"
    r"|Data and pipelines are up to date|\{)"
)


def dvc(root: Path, *args: str, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run DVC in `root` and capture its output."""
    return subprocess.run(_dvc_argv(args), cwd=root, capture_output=True, text=True, env=_dvc_env(env), timeout=timeout)


def _dvc_argv(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def _dvc_env(env: dict | None) -> dict:
    """This interpreter's bin folder leads PATH, so the stages' `modhifi` command is the one
    installed beside it even when the venv is not activated. DVC's analytics are off (its
    daemon would send a report over the network after every command), as Prefect's and
    MLflow's are: modhifi connects to nothing beyond this machine unless asked."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    quiet = {"DVC_NO_ANALYTICS": os.environ.get("DVC_NO_ANALYTICS") or "1"}
    return {**os.environ, **quiet, "PATH": path, **(env or {})}


def bookkeeping(line: str) -> bool:
    """Whether `line` is DVC's own chatter around a stage (or the stage's JSON result)."""
    return bool(_BOOKKEEPING.match(line.strip()))


class OutputSplitter:
    """Splits a process's output, fed in arbitrary pieces, the way a terminal shows it.

    A line ends at `\\n` (`\\r\\n` too); within a line each `\\r` starts over (tqdm redraws its
    bar so), so a line's text is what follows its last `\\r`. Complete lines go to
    `on_output(text, True)` and are kept in `lines`. A line being redrawn (one with a `\\r`)
    goes to `on_output(text, False)` whenever its visible text changes (an empty text: the
    bar was cleared); an unfinished line without one is only passed on once complete.
    """

    def __init__(self, on_output: OnOutput | None = None) -> None:
        self.on_output = on_output or (lambda text, complete: None)
        self.lines: list[str] = []
        self._pending = ""
        self._shown = ""

    def feed(self, text: str) -> None:
        *complete, self._pending = (self._pending + text).split("\n")
        for raw in complete:
            line = _visible(raw)
            self.lines.append(line)
            self._shown = ""
            self.on_output(line, True)
        if "\r" not in self._pending:  # a line still being written, not a bar: wait for its end
            return
        # Keep only what is still visible, so a long run of bar updates stays small.
        self._pending = "\r" + _visible(self._pending) + ("\r" if self._pending.endswith("\r") else "")
        shown = _visible(self._pending)
        if shown != self._shown:
            self._shown = shown
            self.on_output(shown.strip() and shown, False)

    def close(self) -> None:
        """End of output: an unfinished line that still shows text counts as a line."""
        rest, self._pending = _visible(self._pending), ""
        if rest.strip():
            self.lines.append(rest)
            self.on_output(rest, True)


def _visible(raw: str) -> str:
    """What a terminal shows of one line: the text after its last carriage return (a
    trailing one, as in `\\r\\n` or a bar about to be redrawn, does not blank it)."""
    return raw.rstrip("\r").rsplit("\r", 1)[-1]


def run_streaming(
    argv: list[str], cwd: Path, env: dict, on_output: OnOutput | None = None
) -> subprocess.CompletedProcess:
    """Run `argv` with stderr merged into stdout, passing its output to `on_output` as it
    arrives; returns the complete lines as `stdout` (and an empty `stderr`)."""
    splitter = OutputSplitter(on_output)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        try:
            for chunk in iter(lambda: process.stdout.read1(65536), b""):
                splitter.feed(decoder.decode(chunk))
        except KeyboardInterrupt:  # a Ctrl-C reached this process (perhaps not the child): stop it too
            with uninterrupted():
                stop(process)
            raise
        splitter.feed(decoder.decode(b"", final=True))
        splitter.close()
        code = process.wait()
    return subprocess.CompletedProcess(argv, code, "\n".join(splitter.lines) + "\n", "")


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """Interrupt `process` (SIGINT, as a Ctrl-C would: DVC then stops its stage) and wait
    `grace` seconds for it to end, then kill it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C inside the block (a repair must not itself be cut short); outside the
    main thread, where signals cannot be set, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def ensure_dvc_project(root: Path) -> None:
    """`dvc init` the workspace if needed (without git when it is not a git repository)."""
    if (root / ".dvc").is_dir():
        return
    args = ["init", "-q"] if (root / ".git").exists() else ["init", "-q", "--no-scm"]
    result = dvc(root, *args)
    if result.returncode != 0:
        raise InputError(f"dvc init failed in {root}: {_last_line(result)}")


@dataclass(frozen=True)
class Status:
    """What `dvc status` says of a workspace.

    `changed`: stages whose deps, params, code or outs differ from dvc.lock (or that never
    ran). `damaged`: per stage, the outputs dvc.lock records that are now `deleted` (a run
    killed after DVC removed them) or `modified` (tampered with, or edited by hand).
    """

    changed: set[str]
    damaged: dict[str, dict[str, str]]


def status(root: Path) -> Status:
    """`dvc status --json` of `root`, parsed."""
    result = dvc(root, "status", "--json")
    if result.returncode != 0:
        raise InputError(f"dvc status failed: {_last_line(result)}")
    text = result.stdout.strip()
    raw = json.loads(text[text.index("{") :]) if "{" in text else {}
    recorded = locked_outs(root)
    damaged: dict[str, dict[str, str]] = {}
    for key, entries in raw.items():
        stage = key.split(":")[-1]
        for entry in entries if isinstance(entries, list) else []:
            outs = entry.get("changed outs", {}) if isinstance(entry, dict) else {}
            # A stage that never ran has its outputs "deleted" too: only what dvc.lock records is damage.
            locked = recorded.get(stage, set())
            bad = {path: s for path, s in outs.items() if s in ("deleted", "modified") and path in locked}
            if bad:
                damaged.setdefault(stage, {}).update(bad)
    return Status({key.split(":")[-1] for key in raw}, damaged)


def locked_outs(root: Path) -> dict[str, set[str]]:
    """The output paths dvc.lock records, by stage (empty when there is no dvc.lock)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {name: {out["path"] for out in entry.get("outs", [])} for name, entry in stages.items()}


def restore_outputs(root: Path, outs: dict[str, tuple[str, ...]]) -> set[str]:
    """Put back the outputs dvc.lock records for the stages of `outs` (stage name -> its
    output paths) from DVC's cache (`dvc checkout --force`), after removing the temporary
    files an interrupted atomic write left beside them. Returns the stages DVC could not
    restore (their outputs are not in its cache: the stage must run again)."""
    for paths in outs.values():
        for out in paths:
            remove_partial_writes(root / out)
    unrestored = set()
    for stage in outs:
        if dvc(root, "checkout", "--force", stage).returncode != 0:
            unrestored.add(stage)
    return unrestored


def remove_partial_writes(output: Path) -> list[Path]:
    """Delete what a killed atomic write of `output` left behind (`modhifi_core.safe_io`
    writes a file, or a folder, as `.NAME.*.tmp` beside it, then renames it into place;
    a replaced folder is retired as `.NAME.*.old` before removal): those siblings, and
    `.*.tmp` files inside `output` when it is a folder. Call it only while holding the
    workspace lock (no other run is writing there)."""
    siblings = (f".{output.name}.*.tmp", f".{output.name}.*.old")
    found = [path for pattern in siblings for path in output.parent.glob(pattern)] if output.parent.is_dir() else []
    if output.is_dir():
        found += [path for path in output.rglob(".*.tmp") if path.is_file()]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def reproduce(
    root: Path,
    stage: str,
    env: dict,
    force: bool = False,
    on_output: OnOutput | None = None,
    outs: tuple[str, ...] = (),
) -> bool:
    """`dvc repro --single-item STAGE` (`--force`: even if unchanged); returns whether
    DVC executed the stage's command. Its output, the stage's included, streams to
    `on_output` (see `OutputSplitter`); Python in the stage writes unbuffered so it does so
    live. When the stage fails (or is killed) its outputs are restored from DVC's cache
    and partial writes beside them (`outs`: the stage's output paths) are removed before
    `StageFailed` is raised."""
    args = ("repro", "--single-item", *(["--force"] if force else []), stage)
    try:
        result = run_streaming(_dvc_argv(args), root, _dvc_env({"PYTHONUNBUFFERED": "1", **env}), on_output)
    except KeyboardInterrupt:  # Ctrl-C: DVC had deleted the outputs; put them back before stopping
        with uninterrupted():
            restore_outputs(root, {stage: outs})
        raise
    if result.returncode != 0:
        # DVC deletes a stage's outputs before running it; put back the ones dvc.lock
        # records (from the cache) so a failed run leaves the previous artifacts in place.
        restore_outputs(root, {stage: outs})
        code, killed_by = _stage_exit(result)
        raise StageFailed(stage, code, _last_line(result), killed_by)
    return "didn't change, skipping" not in result.stdout + result.stderr


def _stage_exit(result: subprocess.CompletedProcess) -> tuple[int, int | None]:
    """The stage command's exit code, and the signal that killed it (or None), from DVC's
    `failed to run: CMD, exited with N` (N < 0: killed by signal -N; a shell reports 128+N)."""
    found = re.findall(r"exited with (-?\d+)", result.stdout + result.stderr)
    if not found:  # DVC itself was killed
        return result.returncode, -result.returncode if result.returncode < 0 else None
    code = int(found[-1])
    if code < 0:
        return code, -code
    if code in (128 + signal.SIGKILL, 128 + signal.SIGTERM):
        return code, code - 128
    return code, None


def _last_line(result: subprocess.CompletedProcess) -> str:
    """The line that says what went wrong: the stage's `error:` line, DVC's ERROR line,
    else the last line that is not DVC's bookkeeping (a traceback's exception)."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    for prefix in ("error:", "ERROR:"):
        # A bar the stage left unfinished shares the line that follows it: start at the prefix.
        found = [line[line.index(prefix) :] for line in lines if re.search(rf"(^|\s|\]){prefix}", line)]
        if found:
            return found[-1] if prefix == "error:" else found[0]
    said = [line for line in lines if not bookkeeping(line)]
    return said[-1] if said else lines[0] if lines else "no output"
