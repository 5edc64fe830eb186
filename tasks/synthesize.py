"""Stage synthesize: calibration samples made from the base model itself (data-free): a
zoo checkpoint or a Hugging Face image classifier (DeepInversion matches BatchNorm
statistics; a LayerNorm ViT/Swin has none: class cross-entropy and image priors only).

Writes the synthetic-data artifact folder (samples.npz, preview.png, synthesis.json
with the quality figures) that collect, prune, unlearn and finetune read.
"""

from __future__ import annotations

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.params import Params
from modhifi_core.safe_io import sha256_file
from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
from modhifi_core.vision.sources import classifier, input_shape
from tasks.image import is_image
from tasks.image import load_base as load_image_base
from tasks.lm import is_language
from tasks.lm import synthesize as language_stage
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        loaded = load_image_base(ws)  # an HF image classifier: the same synthesis on its logits
        model, shape, parent = classifier(loaded), input_shape(loaded), sha256_file(ws.artifact("base_model"))
    elif is_language(params):
        return language_stage.run(ws, params)
    else:
        base = load_checkpoint(ws.artifact("base_model"))
        model, shape, parent = (
            base.model,
            (base.config.in_channels, base.config.image_size, base.config.image_size),
            base.sha256,
        )
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
