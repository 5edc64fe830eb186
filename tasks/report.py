"""Stage report: the run's Markdown/HTML report with its plots (`modhifi_core.operations.report`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from modhifi_core.operations.report import LanguageResults, RunResults, report
from modhifi_core.operations.report import language_report as render_language
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_text
from tasks.lm import is_language
from tasks.workspace import Workspace

SKIPPABLE = {"train_base": "base", "unlearn": "unlearned", "finetune": "final"}  # stage -> its metrics artifact


def run(ws: Workspace, params: Params) -> dict:
    if is_language(params):
        return language_report(ws, params)
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


def language_report(ws: Workspace, params: Params) -> dict:
    """The report of a language-model run (`model.source: hf:DIR`)."""
    stages = {stage: _json(ws.artifact(f"{out}_metrics")) for stage, out in SKIPPABLE.items()}
    results = LanguageResults(
        params=params,
        evaluation=_json(ws.artifact("evaluation")),
        pruned=_json(ws.artifact("pruned_metrics")),
        layers=_csv(ws.artifact("pruned_layers")),
        scores=torch.load(ws.artifact("scores"), weights_only=True)["layers"],
        windows=_csv(ws.artifact("per_class")),
        skipped={name: m["skipped"] for name, m in stages.items() if "skipped" in m},
    )
    return write_report(ws, render_language(results))


def write_report(ws: Workspace, rendered: object) -> dict:
    """The figures, report.md and report.html into the report folder."""
    out = ws.artifact("report")
    for name, png in rendered.figures.items():
        atomic_write_bytes(out / name, png)
    atomic_write_text(out / "report.md", rendered.markdown)
    atomic_write_text(out / "report.html", rendered.html)
    return {"figures": len(rendered.figures)}


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
