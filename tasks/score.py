"""Stage score: per-component scores of the base model (`prune.score`: saliency or
fidelity) from collect's statistics (`modhifi_core.operations.score`), the first-round
ranking of the prune stage, and a per-layer quantile table for DVC plots."""

from __future__ import annotations

import torch

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.operations.statistics import ModelScores, score
from modhifi_core.safe_io import atomic_torch_save, atomic_write_text
from tasks.collect import load_statistics
from tasks.image import COLLECT_REASON, is_image, skipped
from tasks.params import Params
from tasks.records import scores_csv as summary_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        atomic_write_text(ws.artifact("scores_csv"), summary_csv({}))
        return skipped(ws, "scores", None, COLLECT_REASON)
    model = load_checkpoint(ws.artifact("base_model")).model
    scores = score(model, load_statistics(ws), params.prune.score)
    atomic_torch_save(ws.artifact("scores"), scores.to_payload())
    atomic_write_text(ws.artifact("scores_csv"), summary_csv(scores.layers))
    every = torch.cat([s.flatten() for s in scores.layers.values()])
    return {"layers": len(scores.layers), "median_score": float(every.median()), "mean_score": float(every.mean())}


def load_scores(ws: Workspace) -> ModelScores:
    """The score stage's scores (loaded with weights_only=True)."""
    return ModelScores.from_payload(torch.load(ws.artifact("scores"), map_location="cpu", weights_only=True))
