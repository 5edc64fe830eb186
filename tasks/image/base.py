"""train_base on a torchvision/timm network (`model.source: torchvision:ARCH` / `timm:ARCH`
with `model.weights`): the weights loaded once into the architecture (so weights that do
not fit it are refused here, not three stages later) and recorded, not trained."""

from __future__ import annotations

from modhifi_core.safe_io import atomic_torch_save, atomic_write_json
from modhifi_core.vision.sources import load_image_model
from tasks.image import KIND, ZOO_SOURCE
from tasks.inputs import check_model_fits, checked_input
from tasks.params import Params
from tasks.workspace import Workspace

TRAIN_REASON = "an open-weight model is not trained here: the stage records its files' sha256"


def run(ws: Workspace, params: Params) -> dict:
    """Record the source (architecture, the weights' path and sha256 — a file, or a folder
    modhifi wrote —, the constructor arguments, the input size) as the base artifact: the
    run's lineage starts at the open-weight file, which `tasks.image.load_base` re-checks."""
    m = params.model
    check_model_fits(ws, params, keys=())
    weights = checked_input(ws, params, "model_source")
    loaded = load_image_model(m.source, weights["path"], m.num_classes)
    record = {
        "record": ZOO_SOURCE,
        "kind": KIND,
        "source": m.source,
        "num_classes": m.num_classes,
        "build_kwargs": loaded.build_kwargs,
        "image_size": m.image_size,
        **weights,
    }
    atomic_torch_save(ws.artifact("base_model"), record)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    metrics = {"skipped": TRAIN_REASON, "kind": KIND, "source": m.source, "parameters": parameters, **weights}
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics
