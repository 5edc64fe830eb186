"""Stage collect: streaming activation statistics of the base model on the calibration set
(`modhifi_core.operations.collect_statistics`), for the score and prune stages; on a
Dask cluster when `cluster.address` is set."""

from __future__ import annotations

import torch

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.statistics import ModelStatistics, collect_statistics
from modhifi_core.safe_io import atomic_torch_save
from modhifi_core.sharding import worker_count
from tasks.calibration import stage_calibration
from tasks.cluster import open_executor
from tasks.image import COLLECT_REASON, is_image, skipped
from tasks.params import Params
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        return skipped(ws, "statistics", None, COLLECT_REASON)
    base = load_checkpoint(ws.artifact("base_model"))
    data = load_from_spec(read_metadata(base.metadata).data)
    calibration = stage_calibration(ws, params, base, data)
    with open_executor(params.cluster.address, params.cluster.workers) as executor:
        stats = collect_statistics(base.model, calibration, batch_size=params.collect.batch_size, executor=executor)
        workers = worker_count(executor) if executor is not None else 1
    atomic_torch_save(ws.artifact("statistics"), stats.to_payload())
    return {"layers": len(stats.layers), "samples": stats.samples, "workers": workers}  # the address is a param


def load_statistics(ws: Workspace) -> ModelStatistics:
    """The collect stage's statistics (loaded with weights_only=True)."""
    return ModelStatistics.from_payload(torch.load(ws.artifact("statistics"), map_location="cpu", weights_only=True))
