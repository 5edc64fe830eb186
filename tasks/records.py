"""The small records a pipeline stage writes in place of a model it does not hold itself,
one shape for every kind (so lineage reads them without knowing kinds):

- a *source* record (train_base of an open-weight model): `{"record": "source", "kind",
  "source", "path", "files": {name: sha256}, ...}` — the run's lineage starts at those files;
- a *folder* record (prune/unlearn of an open-weight model): `{"record": "folder",
  "folder": <relative to the workspace>, "metadata": {"parents": {...}}, ...}` — the model
  lies in that folder in its source's format, with modhifi.json beside it.

Records are plain dicts saved with torch, read with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path

import torch

SOURCE, FOLDER = "source", "folder"


def read_record(path: str | Path) -> dict:
    """A record (or statistics, scores, windows) saved by a stage (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def source_file(record: dict, name: str) -> Path:
    """Where file `name` of a source record lies: in the source folder, or the file itself."""
    path = Path(record["path"])
    return path if path.name == name and not path.is_dir() else path / name
