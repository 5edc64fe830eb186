"""report on an image classifier's run: its results table, the kept channels (or MLP
neurons) per layer, per-class accuracy of each model, the unlearning evidence, and the
stages that do not apply to the kind with their reasons (`kind.skipped`)."""

from __future__ import annotations

from typing import Any

from tasks.rendering import ImageResults, image_report
from tasks.reports import read_json, write_report
from tasks.tables import read_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    skipped = {}
    for reason in dict.fromkeys(kind.skipped.values()):  # the stages of one reason on one line
        skipped[", ".join(s for s, r in kind.skipped.items() if r == reason)] = reason
    preview = ws.artifact("synthetic") / "preview.png"
    results = ImageResults(
        params=params,
        evaluation=read_json(ws.artifact("evaluation")),
        pruned=read_json(ws.artifact("pruned_metrics")),
        unlearned=read_json(ws.artifact("unlearned_metrics")),
        layers=read_csv(ws.artifact("pruned_layers")),
        per_class=read_csv(ws.artifact("per_class")),
        skipped=skipped,
        images={"synthetic_preview.png": preview.read_bytes()} if preview.exists() else {},
    )
    return write_report(ws, image_report(results))
