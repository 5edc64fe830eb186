"""Reading and writing the small records stages leave in the workspace, for every kind.

- `read_record`: a stage's torch record (a plain dict naming its `record` kind: a source
  model's files, a folder written, token windows, statistics, scores), read with
  `weights_only=True`;
- `read_json`, `read_csv`: a metrics file, a plot table;
- `record_hf_source`: train_base of a Hugging Face folder (a language model or an image
  classifier): the folder's files recorded, not trained;
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
HF_SOURCE = "hf-source"  # the record kind of a Hugging Face folder train_base recorded


def read_record(path: object) -> dict:
    """A record (or statistics, scores, windows) a stage saved with torch (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def record_hf_source(ws: Workspace, params: object, kind: str) -> dict:
    """train_base of a Hugging Face folder (`model.source: hf:DIR`) of `kind`: its path,
    kind, weights format and the sha256 of its config, weight and tokenizer files as the
    base artifact (the run's lineage starts at the open-weight files; nothing is trained).
    Returns the stage's metrics (the same fields)."""
    from modhifi_core.sources import check_folder

    source = checked_input(ws, params, "model_source")
    _, _, weights_format = check_folder(source["path"])
    record = {"record": HF_SOURCE, "kind": kind, "weights_format": weights_format, **source}
    atomic_torch_save(ws.artifact("base_model"), record)
    metrics = {"kind": kind, "weights_format": weights_format, **source}
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics


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
