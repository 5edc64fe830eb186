"""Stage synthesize of a zoo run: calibration samples made from the base checkpoint itself
(data-free: DeepInversion matches its BatchNorm statistics).

Writes the synthetic-data artifact folder (samples.npz, preview.png, synthesis.json
with the quality figures) that collect, prune, unlearn and finetune read.
"""

from __future__ import annotations

from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    base = kind.load(ws.artifact("base_model"))
    shape = (base.config.in_channels, base.config.image_size, base.config.image_size)
    s = params.synthesize
    knobs = s.model_dump(exclude={"method", "per_class", "source"})
    result = synthesize(
        base.model,
        s.per_class,
        image_shape=shape,
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
