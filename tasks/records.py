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
- `read_json`, `read_csv`: a metrics file, a plot table;
- `record_source`: train_base of an open-weight model: its files recorded, not trained;
- `scores_csv`: the score stage's per-layer quantile table (`dvc plots`);
- `write_report`: a rendered report (`report.md`, `report.html`, its figures) into the
  report folder.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from modhifi_core.safe_io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text
from tasks.inputs import checked_input
from tasks.workspace import Workspace

QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}
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


def read_json(path: Path) -> dict:
    """A stage's JSON metrics file."""
    return json.loads(Path(path).read_text())


def read_csv(path: Path) -> list[dict]:
    """A stage's CSV table, one dict per row."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def scores_csv(scores: dict[str, torch.Tensor]) -> str:
    """One row per layer: index, name, shape, quantiles and mean of its scores."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["layer_index", "layer", "c_out", "c_in", *QUANTILES, "mean"], lineterminator="\n")
    writer.writeheader()
    levels = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    for index, (name, s) in enumerate(scores.items()):
        q = torch.quantile(s.flatten().double(), levels).tolist()
        row = {
            "layer_index": index,
            "layer": name,
            "c_out": s.shape[0],
            "c_in": s.shape[1],
            "mean": f"{float(s.mean()):.6f}",
        }
        writer.writerow(row | {k: f"{v:.6f}" for k, v in zip(QUANTILES, q)})
    return out.getvalue()


def write_report(ws: Workspace, rendered: object) -> dict:
    """The figures, report.md and report.html of `rendered` (`.figures`: name -> PNG
    bytes, `.markdown`, `.html`) into the report folder."""
    out = ws.artifact("report")
    for name, png in rendered.figures.items():
        atomic_write_bytes(out / name, png)
    atomic_write_text(out / "report.md", rendered.markdown)
    atomic_write_text(out / "report.html", rendered.html)
    return {"figures": len(rendered.figures)}
