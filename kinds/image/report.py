"""report on an image classifier's run: its results table, the kept channels (or MLP
neurons) per layer, per-class accuracy of each model, the unlearning evidence, and the
stages that do not apply to the kind with their reasons (`kind.skipped`)."""

from __future__ import annotations

from typing import Any

from modhifi_core.operations.report import ImageResults, image_report
from tasks.report import _csv, _json, write_report
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    skipped: dict[str, str] = {}
    base = _json(ws.artifact("base_metrics"))
    if "skipped" in base:
        skipped["train_base"] = base["skipped"]
    for reason in dict.fromkeys(kind.skipped.values()):  # stages with one reason on one line
        skipped[", ".join(s for s, r in kind.skipped.items() if r == reason)] = reason
    preview = ws.artifact("synthetic") / "preview.png"
    results = ImageResults(
        params=params,
        evaluation=_json(ws.artifact("evaluation")),
        pruned=_json(ws.artifact("pruned_metrics")),
        unlearned=_json(ws.artifact("unlearned_metrics")),
        layers=_csv(ws.artifact("pruned_layers")),
        per_class=_csv(ws.artifact("per_class")),
        skipped=skipped,
        images={"synthetic_preview.png": preview.read_bytes()} if preview.exists() else {},
    )
    return write_report(ws, image_report(results))
