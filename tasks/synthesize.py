"""Stage synthesize: calibration samples made from the base model itself (data-free): a
zoo checkpoint or a Hugging Face image classifier (DeepInversion matches BatchNorm
statistics; a LayerNorm ViT/Swin has none: class cross-entropy and image priors only).

Writes the synthetic-data artifact folder (samples.npz, preview.png, synthesis.json
with the quality figures) that collect, prune, unlearn and finetune read.
"""

from __future__ import annotations

from torch import nn

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.safe_io import sha256_file
from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
from modhifi_core.vision.sources import classifier, input_shape
from tasks.image import is_image
from tasks.image import load_base as load_image_base
from tasks.params import Params
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    model, shape, parent = image_base(ws) if is_image(ws, params) else checkpoint_base(ws)
    s = params.synthesize
    knobs = s.model_dump(exclude={"method", "per_class", "source"})
    result = synthesize(
        model,
        s.per_class,
        image_shape=shape,
        method=s.method,
        config=InversionConfig(**knobs),
        seed=params.seed,
        source=s.source,
    )
    manifest = save_synthetic(result, ws.artifact("synthetic"), parents={"base_model": parent})
    quality = manifest["quality"]
    return {
        "samples": manifest["samples"],
        "agreement": quality["agreement"],
        "diversity": quality["diversity"],
        "synthesis_seconds": result.seconds,
    }


def checkpoint_base(ws: Workspace) -> tuple[nn.Module, tuple[int, int, int], str]:
    """The zoo base checkpoint: its model, input shape `(C, H, W)` and sha256."""
    base = load_checkpoint(ws.artifact("base_model"))
    shape = (base.config.in_channels, base.config.image_size, base.config.image_size)
    return base.model, shape, base.sha256


def image_base(ws: Workspace) -> tuple[nn.Module, tuple[int, int, int], str]:
    """An HF image classifier (its logits), its input shape and the sha256 of train_base's record."""
    loaded = load_image_base(ws)
    return classifier(loaded), input_shape(loaded), sha256_file(ws.artifact("base_model"))
