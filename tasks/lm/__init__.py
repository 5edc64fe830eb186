"""The pipeline's stages on a Hugging Face language model (`model.source: hf:DIR`): a
causal LM or a text encoder (BERT family), by `modhifi_core.sources.model_kind` of the
folder's config, which train_base records. One module per stage (`tasks/lm/<stage>.py`,
called by `tasks/<stage>.py`). dvc.yaml's paths are the same as for a zoo model; what each
holds here:

- train_base: `outputs/base/model.pt` records the source folder, its kind and its files'
  sha256 (not trained);
- synthesize: `outputs/synthetic/calibration.pt`, `(N, L)` token ids sampled from the model
  (`self`, data-free; causal LMs only) or windows of `text:PATH` (no special tokens);
- collect: `outputs/statistics/statistics.pt`, each FFN's down-projection input statistics;
- score: `outputs/scores/scores.pt`, each FFN neuron's score under `language.method`;
- prune: `outputs/pruned/hf/`, a stock Hugging Face folder with `modhifi.json` lineage
  (`model.pt` records it);
- unlearn, finetune: skipped (`SKIP_REASON`): a record `model.pt` and `metrics.json` with `skipped`;
- evaluate: on `language.eval_text`, dense vs pruned: a causal LM's perplexity over
  `eval_samples` windows; an encoder's mean cosine between mean-pooled sentence embeddings
  and top-`NEIGHBOURS` neighbour agreement over `eval_samples` held-out sentences; with the
  prune stage's ratios and speed-up.

The prune stage keeps the neurons the score stage's file ranks highest (one place scores;
`prune_transformer(scores=...)`), refitting on collect's statistics. Records are plain
dicts saved with torch (`record` names the kind), read with `weights_only=True`.
"""

from __future__ import annotations

import torch

from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json
from tasks.workspace import Workspace

SKIP_REASON = "class unlearning does not apply to a language model (a causal LM or a text encoder)"
NEIGHBOURS = 10  # an encoder's evaluation: agreement of each sentence's k nearest neighbours
CALIBRATION_FILE = "calibration.pt"  # in the synthesize stage's folder
HF_FOLDER = "pruned_hf"  # the workspace artifact of the pruned Hugging Face folder


def is_language(params: Params) -> bool:
    """Whether the run is on a Hugging Face model (`model.source: hf:DIR`): a language model
    unless `tasks.image.is_image` (which every stage asks first) says it is an image classifier."""
    return params.model.source is not None


def read_record(path: object) -> dict:
    """A record (or statistics, scores, windows) saved by these stages (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def skipped(ws: Workspace, model: str, metrics: str | None, reason: str = SKIP_REASON) -> dict:
    """A stage that does not apply: a record in place of its model (with `reason`) and
    `skipped` metrics (when it has a metrics file)."""
    atomic_torch_save(ws.artifact(model), {"record": "skipped", "reason": reason})
    if metrics is not None:
        atomic_write_json(ws.artifact(metrics), {"skipped": reason})
    return {"skipped": reason}


def load_windows(ws: Workspace) -> torch.Tensor:
    """The synthesize stage's calibration token ids `(N, L)`."""
    return read_record(ws.artifact("synthetic") / CALIBRATION_FILE)["input_ids"]
