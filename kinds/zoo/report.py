"""Stage report of a zoo run: the run's Markdown/HTML report with its plots
(`modhifi_core.operations.report.report`)."""

from __future__ import annotations

import torch

from modhifi_core.operations.report import RunResults, report
from tasks.reports import read_json, write_report
from tasks.tables import read_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    preview = ws.artifact("synthetic") / "preview.png"
    results = RunResults(
        params=params,
        evaluation=read_json(ws.artifact("evaluation")),
        pruned=read_json(ws.artifact("pruned_metrics")),
        layers=read_csv(ws.artifact("pruned_layers")),
        scores=torch.load(ws.artifact("scores"), weights_only=True)["layers"],  # the score stage's ModelScores payload
        per_class=read_csv(ws.artifact("per_class")),
        unlearned=read_json(ws.artifact("unlearned_metrics")),
        images={"synthetic_preview.png": preview.read_bytes()} if preview.exists() else {},
    )
    return write_report(ws, report(results))
