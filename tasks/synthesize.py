"""Stage synthesize: calibration samples made from the base model itself (data-free).

Writes the synthetic-data artifact folder (samples.npz, preview.png, synthesis.json
with the quality figures) that collect, prune, unlearn and finetune read.
"""

from __future__ import annotations

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.params import Params
from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
from tasks.lm import is_language
from tasks.lm import synthesize as language_stage
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_language(params):
        return language_stage.run(ws, params)
    base = load_checkpoint(ws.artifact("base_model"))
    s = params.synthesize
    knobs = s.model_dump(exclude={"method", "per_class", "source"})
    result = synthesize(
        base.model,
        s.per_class,
        image_shape=(base.config.in_channels, base.config.image_size, base.config.image_size),
        method=s.method,
        config=InversionConfig(**knobs),
        seed=params.seed,
        source=s.source,
    )
    manifest = save_synthetic(result, ws.artifact("synthetic"), parents={"base_model": base.sha256})
    quality = manifest["quality"]
    return {
        "samples": manifest["samples"],
        "agreement": quality["agreement"],
        "diversity": quality["diversity"],
        "synthesis_seconds": result.seconds,
    }
