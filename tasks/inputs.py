"""The external inputs of a run as DVC deps.

An open-weight model's files (`model.source: hf:DIR`, or the weights of a
torchvision/timm/python model) and the texts a language model reads lie outside the
workspace, and a dvc.yaml dep must be a path in it. So `modhifi run` writes each input's
content hashes to a fixed file under `inputs/` before DVC decides what changed
(`refresh_inputs`); the kind's dvc.yaml lists those files as deps of the stages that read
the inputs, so an edited text or a new weight file re-runs them. A stage reading an input
checks that it still hashes as recorded (`checked_input`). Which inputs a run has, and
which files of a model source count, the kind's adapter says (`ModelKind.inputs`,
`ModelKind.source_files`); an input a run does not use records `{"path": null}`.
"""

from __future__ import annotations

import json
from pathlib import Path

from kinds import ModelKind, kind_of
from modhifi_core.errors import InputError
from modhifi_core.safe_io import atomic_write_json, sha256_file
from tasks.workspace import Workspace

INPUTS = {
    "model_source": "inputs/model-source.json",
    "model_code": "inputs/model-code.json",  # a user's own module (python:PACKAGE.MODULE:FACTORY)
    "calibration_text": "inputs/calibration-text.json",
    "eval_text": "inputs/eval-text.json",
}


def digest(kind: ModelKind, name: str, path: Path | None) -> dict:
    """`{"path", "files": {relative path: sha256}}` of input `name` at `path` (a model
    source: the files `kind.source_files` names; a text: every file under it)."""
    if path is None:
        return {"path": None}
    if name == "model_source":
        files = kind.source_files(path)
    else:  # a text, or code: every file under it but Python's byte-code caches
        every = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files = [f for f in every if "__pycache__" not in f.parts]
    base = path if path.is_dir() else path.parent
    return {"path": str(path), "files": {f.relative_to(base).as_posix(): sha256_file(f) for f in files}}


def refresh_inputs(ws: Workspace, params: object) -> ModelKind:
    """The run's kind, after its checks of the params (`check_run`), with each input's
    digest written to its `inputs/` file (rewritten only when it changed)."""
    kind = kind_of(params.model.source, ws.root)
    kind.check_run(params, ws.root)
    used = kind.inputs(params, ws.root)
    for name, file in INPUTS.items():
        target = ws.root / file
        record = digest(kind, name, used.get(name))
        if not target.is_file() or json.loads(target.read_text()) != record:
            atomic_write_json(target, record)
    return kind


def checked_input(ws: Workspace, params: object, name: str, kind: ModelKind) -> dict:
    """The digest of input `name` now; InputError when it differs from what `inputs/`
    records (the input changed after `modhifi run` hashed it). Without a record (a stage
    run alone) it is written now."""
    record = digest(kind, name, kind.input(name, params, ws.root))
    target = ws.root / INPUTS[name]
    if not target.is_file():
        atomic_write_json(target, record)
    elif json.loads(target.read_text()) != record:
        raise InputError(f"{record['path']} changed after {INPUTS[name]} recorded it; run `modhifi run` again")
    return record
