"""The calibration set of a pipeline run: the same samples for the collect and prune
stages (`collect.*` params), so prune can use collect's statistics for its first round."""

from __future__ import annotations

from modhifi_core.calibration import calibration_set
from modhifi_core.checkpoint import Checkpoint
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.synthesis.artifact import load_synthetic, samples_digest
from tasks.params import Params
from tasks.workspace import Workspace


def stage_calibration(ws: Workspace, params: Params, base: Checkpoint, data: DatasetSplits) -> ArrayDataset:
    """`collect.samples` samples of `collect.calibration`: the synthesize stage's output,
    the training images or gaussian noise (seeded by `seed`)."""
    source = params.collect.calibration
    synthetic = load_synthetic(ws.artifact("synthetic"), data.num_classes) if source == "synthetic" else None
    return calibration_set(source, base.model, data, params.collect.samples, params.seed, synthetic)


def synthetic_parent(ws: Workspace, used: bool) -> dict[str, str]:
    """`{"synthetic": digest}` of the synthesize stage's samples when a stage used them."""
    return {"synthetic": samples_digest(ws.artifact("synthetic"))} if used else {}
