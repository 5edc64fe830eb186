"""Stage score: singleton fidelity s_ci of every consumer layer of the base model.

Writes the score matrices (`(c_out, c_in)` per layer) and a per-layer summary CSV
(quantiles of s_ci) that DVC plots and the report show.
"""

from __future__ import annotations

import io

import torch

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.fidelity import scores_from_statistics
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_torch_save, atomic_write_text
from tasks.collect import load_statistics
from tasks.workspace import Workspace

QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    model = load_checkpoint(ws.artifact("base_model")).model
    stats, centered = load_statistics(ws.artifact("statistics"))
    modules = dict(model.named_modules())
    scores = {name: scores_from_statistics(s, modules[name], centered[name]).float() for name, s in stats.items()}
    atomic_torch_save(ws.artifact("scores"), scores)
    atomic_write_text(ws.artifact("scores_csv"), summary_csv(scores))
    everything = torch.cat([s.flatten() for s in scores.values()])
    return {"layers": len(scores), "median_score": float(everything.median()), "mean_score": float(everything.mean())}


def summary_csv(scores: dict[str, torch.Tensor]) -> str:
    """One row per layer: index, name, shape and quantiles of its singleton fidelities."""
    out = io.StringIO()
    out.write("layer_index,layer,c_out,c_in," + ",".join(QUANTILES) + ",mean\n")
    for index, (name, s) in enumerate(scores.items()):
        q = torch.quantile(s.flatten().double(), torch.tensor(list(QUANTILES.values()), dtype=torch.float64))
        values = ",".join(f"{v:.6f}" for v in q.tolist())
        out.write(f"{index},{name},{s.shape[0]},{s.shape[1]},{values},{float(s.mean()):.6f}\n")
    return out.getvalue()
