"""Stage score: per-component scores of the base model (`prune.score`: saliency or
fidelity) from collect's statistics (`modhifi_core.operations.score`), the first-round
ranking of the prune stage, and a per-layer quantile table for DVC plots."""

from __future__ import annotations

import csv
import io

import torch

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.operations.statistics import ModelScores, score
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_torch_save, atomic_write_text
from tasks.collect import _not_applying, load_statistics
from tasks.lm import is_language, skipped
from tasks.lm import score as language_stage
from tasks.workspace import Workspace

QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}


def run(ws: Workspace, params: Params) -> dict:
    reason = _not_applying(ws, params, "score")
    if reason is not None:
        atomic_write_text(ws.artifact("scores_csv"), summary_csv({}))
        return skipped(ws, "scores", None, reason)
    if is_language(params):
        return language_stage.run(ws, params, summary_csv)
    model = load_checkpoint(ws.artifact("base_model")).model
    scores = score(model, load_statistics(ws), params.prune.score)
    atomic_torch_save(ws.artifact("scores"), scores.to_payload())
    atomic_write_text(ws.artifact("scores_csv"), summary_csv(scores.layers))
    every = torch.cat([s.flatten() for s in scores.layers.values()])
    return {"layers": len(scores.layers), "median_score": float(every.median()), "mean_score": float(every.mean())}


def load_scores(ws: Workspace) -> ModelScores:
    """The score stage's scores (loaded with weights_only=True)."""
    return ModelScores.from_payload(torch.load(ws.artifact("scores"), map_location="cpu", weights_only=True))


def summary_csv(scores: dict[str, torch.Tensor]) -> str:
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
