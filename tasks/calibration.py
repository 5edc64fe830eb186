"""The calibration data of a pipeline run: the synthesize stage's samples made from an image
model (`synthesize_stage`), and the calibration set, the same samples for the collect and
prune stages (`collect.*` params), so prune can use collect's statistics for its first round."""

from __future__ import annotations

from torch import nn

from modhifi_core.calibration import calibration_set
from modhifi_core.checkpoint import Checkpoint
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.safe_io import sha256_file
from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
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


def synthesize_stage(ws: Workspace, params: Params, model: nn.Module, image_shape: tuple[int, int, int]) -> dict:
    """The synthesize stage of an image model (`model(images) -> logits`, input
    `image_shape`): `synthesize.per_class` samples per class made from the model itself
    (`synthesize.method`: DeepInversion matches a BatchNorm network's statistics; a
    LayerNorm ViT/Swin has none, so class cross-entropy and image priors only), written to
    the synthetic-data folder (samples.npz, preview.png, synthesis.json) with the base
    model's sha256 as parent; returns the stage's metrics (count, quality, seconds)."""
    s = params.synthesize
    knobs = s.model_dump(exclude={"method", "per_class", "source"})
    options = {"image_shape": image_shape, "method": s.method, "seed": params.seed, "source": s.source}
    result = synthesize(model, s.per_class, config=InversionConfig(**knobs), **options)
    parent = sha256_file(ws.artifact("base_model"))
    manifest = save_synthetic(result, ws.artifact("synthetic"), parents={"base_model": parent})
    quality = manifest["quality"]
    return {
        "samples": manifest["samples"],
        "agreement": quality["agreement"],
        "diversity": quality["diversity"],
        "synthesis_seconds": result.seconds,
    }
