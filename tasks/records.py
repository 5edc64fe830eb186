"""Reading and writing the small records stages leave in the workspace, for every kind.

One record shape per purpose, whatever the kind (so lineage reads them without knowing
kinds): a *source* record (train_base of an open-weight model: `{"record": "source",
"kind", "source", "path", "files": {name: sha256}, ...}`, the run's lineage starts at those
files) and a *folder* record (prune/unlearn of an open-weight model: `{"record": "folder",
"folder": <relative to the workspace>, "metadata": {"parents": {...}}, ...}`, the model
lying in that folder in its source's format with modhifi.json beside it).

- `read_record`: a stage's torch record (a plain dict naming its `record` shape: a source
  model's files, a folder written, token windows, statistics, scores), read with
  `weights_only=True`; `source_file`: where a file of a source record lies;
- `record_source`: train_base of an open-weight model: its files recorded, not trained;
"""

from __future__ import annotations

from pathlib import Path

import torch

from modhifi_core.safe_io import atomic_torch_save, atomic_write_json
from tasks.inputs import checked_input
from tasks.workspace import Workspace

SOURCE, FOLDER = "source", "folder"  # the record shapes


def read_record(path: object) -> dict:
    """A record (or statistics, scores, windows) a stage saved with torch (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def source_file(record: dict, name: str) -> Path:
    """Where file `name` of a source record lies: in the source folder, or the file itself."""
    path = Path(record["path"])
    return path if path.name == name and not path.is_dir() else path / name


def record_source(ws: Workspace, params: object, kind: object, **extra: object) -> dict:
    """train_base of an open-weight model (`kind`, a `ModelKind`): its source, path and the
    sha256 of its files (`kind.source_files`) as the base artifact, a source record with
    `extra` (what the adapter needs to reload it); the run's lineage starts at those files,
    nothing is trained. Returns the stage's metrics (the same fields)."""
    source = checked_input(ws, params, "model_source", kind)
    record = {"record": SOURCE, "kind": kind.name, "source": params.model.source, **extra, **source}
    atomic_torch_save(ws.artifact("base_model"), record)
    atomic_write_json(ws.artifact("base_metrics"), {k: v for k, v in record.items() if k != "record"})
    return record
