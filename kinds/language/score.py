"""score on a Hugging Face language model: each FFN neuron's score, for the report and plots."""

from __future__ import annotations

import torch

from kinds.language import LanguageKind
from kinds.language.collect import load_statistics
from kinds.language.train_base import load_base
from modhifi_core.operations.prune_language_model import METHODS
from modhifi_core.pruning.ffn import ffn_scores, find_ffn_blocks
from modhifi_core.safe_io import atomic_torch_save, atomic_write_text
from tasks.tables import summary_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """Each FFN neuron's score under `language.method`'s score, from collect's statistics,
    and the per-layer quantile table."""
    model = load_base(ws, kind).model
    stats = load_statistics(ws)
    name = METHODS[params.language.method][0]
    # greedy: the whole removal order (keep=None), whose first removals are any target's
    layers = {b.name: ffn_scores(model, b, stats[b.name], name, params.seed) for b in find_ffn_blocks(model)}
    atomic_torch_save(ws.artifact("scores"), {"record": "ffn-scores", "score": name, "layers": layers})
    atomic_write_text(ws.artifact("scores_csv"), summary_csv({k: v.view(-1, 1) for k, v in layers.items()}))
    every = torch.cat(list(layers.values()))
    return {"layers": len(layers), "median_score": float(every.median()), "mean_score": float(every.mean())}
