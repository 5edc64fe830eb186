"""`modhifi init DIR --model SOURCE`: a workspace of its own for a user's model, anywhere.

The folder becomes a git repository with DVC initialised, holding the `params.yaml` of
the source's kind (its sections only, every default written out with its comment:
`tasks.params.render_params`), that kind's `dvc.yaml` (`tasks.dag.write_dvc_yaml`; outside
the modhifi checkout a stage's code dependency is modhifi's version and code hash,
`tasks.dag.code_records`) and a `.gitignore` of the run's local state. `modhifi run`,
`lineage`, `sweep` and `serve` then work inside it with the installed modhifi; nothing is
written to the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from modhifi_core.errors import InputError

# The run's local state (Prefect, MLflow, the run lock); DVC ignores its outputs itself.
GITIGNORE = (
    "# modhifi's local state: commit params.yaml, dvc.yaml, dvc.lock and inputs/\n"
    "/.prefect/\n/mlflow.db\n/mlruns/\n/mlartifacts/\n/.modhifi/\n/.modhifi-run.lock\n/.modhifi-run.lock.pid\n"
)


def parse_settings(assignments: list[str]) -> dict:
    """`["language.length=32"]` -> `{"language.length": 32}` (values read as YAML)."""
    settings = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InputError(f"setting {text!r} must look like section.key=value")
        settings[key] = yaml.safe_load(value)
    return settings


def create_workspace(directory: Path, source: str | None, settings: dict | None = None) -> Path:
    """Make `directory` (absent or empty) a modhifi workspace for `source` (None: the zoo's
    default model, trained on digits), `settings` (`{"section.key": value}`) written into
    its params.yaml; returns its absolute path. Everything is checked before anything is
    written; a failure afterwards removes what was made."""
    from kinds import kind_of
    from tasks.dag import CODE_ROOT
    from tasks.params import render_params

    root = directory.expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(f"{directory} already exists and is not an empty folder; give a new or empty one")
    if root == CODE_ROOT or CODE_ROOT in root.parents:
        raise InputError(
            f"{directory} lies inside modhifi's own code folder {CODE_ROOT} (the checkout is a workspace "
            "itself: its outputs are under its git and DVC); give a folder outside it"
        )
    parent = next(p for p in root.parents if p.exists())
    if not parent.is_dir():
        raise InputError(f"{directory}: cannot create it, {parent} is a file, not a folder")
    kind = kind_of(source)  # a source of no known kind, a missing or unreadable folder: one line
    kind.check()
    text = render_params(kind, kind.model_section(), settings)
    existed = root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        _populate(root, kind, text)
    except BaseException:
        for path in [root] if not existed else list(root.iterdir()):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise
    return root


def _populate(root: Path, kind: object, params_text: str) -> None:
    from flows.dvc import ensure_dvc_project
    from modhifi_core.safe_io import atomic_write_text
    from tasks.dag import write_dvc_yaml

    _git(root, "init", "-q")
    ensure_dvc_project(root)
    atomic_write_text(root / "params.yaml", params_text)
    atomic_write_text(root / ".gitignore", GITIGNORE)
    write_dvc_yaml(root, kind)


def _git(root: Path, *args: str) -> None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise InputError(f"modhifi init needs git: {exc}") from None
    if result.returncode != 0:
        raise InputError(f"git {' '.join(args)} failed in {root}: {result.stderr.strip().splitlines()[-1:]}")
