"""The DVC side of a run: which stages changed, and reproducing one stage.

DVC runs every stage (`dvc repro --single-item`), so `dvc.lock` — the lineage record —
is always written by DVC itself, and `modhifi run` and `dvc repro` cannot disagree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modhifi_core.errors import InputError


class StageFailed(RuntimeError):
    """A stage's command failed; `bad_input` when it exited 2 (not worth retrying)."""

    def __init__(self, stage: str, code: int, tail: str) -> None:
        self.stage, self.code, self.bad_input = stage, code, code == 2
        super().__init__(f"stage {stage} failed (exit {code}): {tail.removeprefix('error: ')}")


def dvc(root: Path, *args: str, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run DVC in `root`. This interpreter's bin folder leads PATH, so the stages' `modhifi`
    command is the one installed beside it even when the venv is not activated."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, **(env or {})},
        timeout=timeout,
    )


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


def reproduce(root: Path, stage: str, env: dict, force: bool = False) -> bool:
    """`dvc repro --single-item STAGE` (`--force`: even if unchanged); returns whether
    DVC executed the stage's command."""
    result = dvc(root, "repro", "--single-item", *(["--force"] if force else []), stage, env=env)
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
    """The line that says what went wrong: DVC's ERROR line, the stage's `error:` line,
    else the first line DVC printed."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    for prefix in ("error:", "ERROR"):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1] if prefix == "error:" else found[0]
    return lines[0] if lines else "no output"
