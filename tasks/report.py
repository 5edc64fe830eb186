"""Stage report: the run's Markdown/HTML report with its plots (`modhifi_core.operations.report`)."""

from __future__ import annotations

import torch

from modhifi_core.operations.report import ImageResults, RunResults, image_report, report
from tasks.image import COLLECT_REASON, is_image
from tasks.params import Params
from tasks.records import read_csv as _csv
from tasks.records import read_json as _json
from tasks.records import write_report
from tasks.workspace import Workspace

SKIPPABLE = {"train_base": "base", "unlearn": "unlearned", "finetune": "final"}  # stage -> its metrics artifact


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        return image_classifier_report(ws, params)
    preview = ws.artifact("synthetic") / "preview.png"
    results = RunResults(
        params=params,
        evaluation=_json(ws.artifact("evaluation")),
        pruned=_json(ws.artifact("pruned_metrics")),
        layers=_csv(ws.artifact("pruned_layers")),
        scores=torch.load(ws.artifact("scores"), weights_only=True)["layers"],  # the score stage's ModelScores payload
        per_class=_csv(ws.artifact("per_class")),
        unlearned=_json(ws.artifact("unlearned_metrics")),
        images={"synthetic_preview.png": preview.read_bytes()} if preview.exists() else {},
    )
    return write_report(ws, report(results))


def image_classifier_report(ws: Workspace, params: Params) -> dict:
    """The report of an open-weight image classifier's run (`model.source: hf:DIR`)."""
    stages = {stage: _json(ws.artifact(f"{out}_metrics")) for stage, out in SKIPPABLE.items()}
    skipped = {name: m["skipped"] for name, m in stages.items() if "skipped" in m}
    preview = ws.artifact("synthetic") / "preview.png"
    results = ImageResults(
        params=params,
        evaluation=_json(ws.artifact("evaluation")),
        pruned=_json(ws.artifact("pruned_metrics")),
        unlearned=stages["unlearn"],
        layers=_csv(ws.artifact("pruned_layers")),
        per_class=_csv(ws.artifact("per_class")),
        skipped={"collect, score": COLLECT_REASON, **skipped},
        images={"synthetic_preview.png": preview.read_bytes()} if preview.exists() else {},
    )
    return write_report(ws, image_report(results))
