"""report of a Hugging Face language model's run: the language section, the prune and
evaluate stages' results, figures, and the stages that do not apply (`kind.skipped`)."""

from __future__ import annotations

import torch

from kinds.language import LanguageKind
from modhifi_core.operations.report import LanguageResults, language_report
from tasks.reports import read_json, write_report
from tasks.tables import read_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """report.md, report.html and the figures of the run into the report folder."""
    results = LanguageResults(
        params=params,
        evaluation=read_json(ws.artifact("evaluation")),
        pruned=read_json(ws.artifact("pruned_metrics")),
        layers=read_csv(ws.artifact("pruned_layers")),
        scores=torch.load(ws.artifact("scores"), weights_only=True)["layers"],
        windows=read_csv(ws.artifact("per_class")),
        skipped=dict(kind.skipped),
    )
    return write_report(ws, language_report(results))
