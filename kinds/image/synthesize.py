"""synthesize on an image classifier: calibration samples made from the base model itself
(data-free; `modhifi_core.synthesis`): DeepInversion matches a BatchNorm network's
statistics; a LayerNorm ViT/Swin has none, so class cross-entropy and image priors only.
Writes the synthetic-data artifact folder (samples.npz, preview.png, synthesis.json)."""

from __future__ import annotations

from typing import Any

from modhifi_core.safe_io import sha256_file
from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    loaded = kind.load_base(ws)
    s = params.synthesize
    knobs = s.model_dump(exclude={"method", "per_class", "source"})
    result = synthesize(
        kind.classifier(loaded),
        s.per_class,
        image_shape=loaded.input_shape,
        method=s.method,
        config=InversionConfig(**knobs),
        seed=params.seed,
        source=s.source,
    )
    parent = sha256_file(ws.artifact("base_model"))
    manifest = save_synthetic(result, ws.artifact("synthetic"), parents={"base_model": parent})
    quality = manifest["quality"]
    return {
        "samples": manifest["samples"],
        "agreement": quality["agreement"],
        "diversity": quality["diversity"],
        "synthesis_seconds": result.seconds,
    }
