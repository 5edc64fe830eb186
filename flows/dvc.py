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
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from modhifi_core.errors import InputError


class StageFailed(RuntimeError):
    """A stage's command failed; `bad_input` when it exited 2 (not worth retrying)."""

    def __init__(self, stage: str, code: int, tail: str) -> None:
        self.stage, self.code, self.bad_input = stage, code, code == 2
        super().__init__(f"stage {stage} failed (exit {code}): {tail.removeprefix('error: ')}")


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
    installed beside it even when the venv is not activated."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, **(env or {})}


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
        for chunk in iter(lambda: process.stdout.read1(65536), b""):
            splitter.feed(decoder.decode(chunk))
        splitter.feed(decoder.decode(b"", final=True))
        splitter.close()
        code = process.wait()
    return subprocess.CompletedProcess(argv, code, "\n".join(splitter.lines) + "\n", "")


def ensure_dvc_project(root: Path) -> None:
    """`dvc init` the workspace if needed (without git when it is not a git repository)."""
    if (root / ".dvc").is_dir():
        return
    args = ["init", "-q"] if (root / ".git").exists() else ["init", "-q", "--no-scm"]
    result = dvc(root, *args)
    if result.returncode != 0:
        raise InputError(f"dvc init failed in {root}: {_last_line(result)}")


def changed_stages(root: Path) -> set[str]:
    """Stages whose deps, params, code or outs differ from dvc.lock (or that never ran)."""
    result = dvc(root, "status", "--json")
    if result.returncode != 0:
        raise InputError(f"dvc status failed: {_last_line(result)}")
    text = result.stdout.strip()
    status = json.loads(text[text.index("{") :]) if "{" in text else {}
    return {key.split(":")[-1] for key in status}


def reproduce(root: Path, stage: str, env: dict, force: bool = False, on_output: OnOutput | None = None) -> bool:
    """`dvc repro --single-item STAGE` (`--force`: even if unchanged); returns whether
    DVC executed the stage's command. Its output, the stage's included, streams to
    `on_output` (see `OutputSplitter`); Python in the stage writes unbuffered so it does so
    live."""
    args = ("repro", "--single-item", *(["--force"] if force else []), stage)
    result = run_streaming(_dvc_argv(args), root, _dvc_env({"PYTHONUNBUFFERED": "1", **env}), on_output)
    if result.returncode != 0:
        # DVC deletes a stage's outputs before running it; put back the ones dvc.lock
        # records (from the cache) so a failed run leaves the previous artifacts in place.
        dvc(root, "checkout", "--force", stage)
        raise StageFailed(stage, _stage_exit_code(result), _last_line(result))
    return "didn't change, skipping" not in result.stdout + result.stderr


def _stage_exit_code(result: subprocess.CompletedProcess) -> int:
    text = result.stdout + result.stderr
    marker = "failed to reproduce" if "failed to reproduce" in text else ""
    if marker and "exited with 2" in text:
        return 2
    return result.returncode


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
