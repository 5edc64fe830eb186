"""score on a Hugging Face language model: each FFN neuron's score, for the report and plots."""

from __future__ import annotations

from collections.abc import Callable

import torch

from modhifi_core.operations.prune_language_model import METHODS
from modhifi_core.params import Params
from modhifi_core.pruning.ffn import ffn_scores, find_ffn_blocks
from modhifi_core.safe_io import atomic_torch_save, atomic_write_text
from tasks.lm.base import load_base
from tasks.lm.collect import load_statistics
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params, summary_csv: Callable[[dict], str]) -> dict:
    """Each FFN neuron's score under `language.method`'s score, from collect's statistics;
    `summary_csv`: the score stage's per-layer quantile table."""
    model = load_base(ws).model
    stats = load_statistics(ws)
    name = METHODS[params.language.method][0]
    # greedy: the whole removal order (keep=None), whose first removals are any target's
    layers = {b.name: ffn_scores(model, b, stats[b.name], name, params.seed) for b in find_ffn_blocks(model)}
    atomic_torch_save(ws.artifact("scores"), {"record": "ffn-scores", "score": name, "layers": layers})
    atomic_write_text(ws.artifact("scores_csv"), summary_csv({k: v.view(-1, 1) for k, v in layers.items()}))
    every = torch.cat(list(layers.values()))
    return {"layers": len(layers), "median_score": float(every.median()), "mean_score": float(every.mean())}
