"""Stage collect: streaming activation statistics of the base model on the calibration set.

Writes one float64 `LayerStatistics` (as a dict of tensors) per consumer layer of a
prunable channel group; the score stage turns them into fidelity scores.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.models import classifier_name
from modhifi_core.params import Params
from modhifi_core.pruning.coupling import Coupling
from modhifi_core.safe_io import atomic_torch_save
from modhifi_core.statistics import LayerStatistics, collect_statistics
from tasks.calibration import calibration_set
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    ckpt = load_checkpoint(ws.artifact("base_model"))
    data = calibration_set(ws, params.collect.calibration, ckpt.metadata["data"], ckpt.config.num_classes, params.seed)
    coupling = Coupling(ckpt.model, data.images[:1], [classifier_name(ckpt.model)])
    layers = coupling.consumer_layers()
    stats = collect_statistics(ckpt.model, data.images.split(params.collect.batch_size), layers)
    payload = {
        "layers": {name: asdict(s) for name, s in stats.items()},
        "centered": {name: coupling.feeds_batchnorm(name) for name in layers},
        "calibration": params.collect.calibration,
        "samples": len(data),
    }
    atomic_torch_save(ws.artifact("statistics"), payload)
    return {"layers": len(layers), "samples": len(data)}


def load_statistics(path: object) -> tuple[dict[str, LayerStatistics], dict[str, bool]]:
    """The collect stage's statistics and, per layer, whether fidelity is centred (feeds a BN)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return {name: LayerStatistics(**s) for name, s in payload["layers"].items()}, payload["centered"]
