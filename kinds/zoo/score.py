"""Stage score of a zoo run: per-component scores of the base checkpoint (`prune.score`:
saliency or fidelity) from collect's statistics (`modhifi_core.operations.score`), the
first-round ranking of the prune stage, and a per-layer quantile table for DVC plots."""

from __future__ import annotations

import torch

from kinds.zoo.artifacts import load_statistics
from modhifi_core.operations.statistics import score
from modhifi_core.safe_io import atomic_torch_save, atomic_write_text
from tasks.tables import summary_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    model = kind.load(ws.artifact("base_model")).model
    scores = score(model, load_statistics(ws), params.prune.score)
    atomic_torch_save(ws.artifact("scores"), scores.to_payload())
    atomic_write_text(ws.artifact("scores_csv"), summary_csv(scores.layers))
    every = torch.cat([s.flatten() for s in scores.layers.values()])
    return {"layers": len(scores.layers), "median_score": float(every.median()), "mean_score": float(every.mean())}
