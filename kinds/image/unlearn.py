"""unlearn on an image classifier: `unlearn_image_classifier` forgets
`unlearn.forget_class` from the pruned model (prune-then-unlearn) — data-free on the
synthesize stage's samples by default — with UA/RA/TA/MIA before and after on
`data.dataset`; written back in the source's format (`kind.save`) with its lineage."""

from __future__ import annotations

from typing import Any

from kinds.image.data import evaluation_data
from modhifi_core.errors import InputError
from modhifi_core.metadata import modification_record
from modhifi_core.operations.unlearn_image_classifier import unlearn_image_classifier
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, sha256_file
from modhifi_core.synthesis import load_synthetic
from tasks.calibration import synthetic_parent
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    """Forget the class from `outputs/pruned/hf/`; writes `outputs/unlearned/hf/`, its
    record (with the forgotten class, what evaluate measures) and the metrics."""
    u = params.unlearn
    kind.check_forget(u.forget_class, u.forget_random)
    if u.prune is not None:
        raise InputError("unlearn.prune: prune-then-unlearn of an image classifier uses the prune stage; set null")
    loaded = kind.load_output(ws, "pruned")
    data = evaluation_data(params, loaded.input_shape)
    synthetic = u.data == "synthetic"
    samples = load_synthetic(ws.artifact("synthetic"), data.num_classes) if synthetic else None
    result = unlearn_image_classifier(
        loaded.model,
        data,
        u.forget_class,
        method=u.method,
        forget_data=u.data,
        hyperparameters=u.hyperparameters,
        seed=params.seed,
        samples=samples,
    )
    pruned = sha256_file(ws.artifact("pruned_model"))
    parents = {"pruned_model": pruned, "model": loaded.weights, **synthetic_parent(ws, synthetic)}
    used = {"unlearn": u.model_dump(), "seed": params.seed, "data": {"dataset": params.data.dataset}}
    lineage = modification_record("unlearn", parents, {**used, "log": result.log}, result.metrics)
    folder = kind.save(loaded, result.model, ws.artifact("unlearned_hf"), lineage)
    record = kind.output_record(ws, "unlearned", pruned, loaded, {"forgotten_class": u.forget_class})
    atomic_torch_save(ws.artifact("unlearned_model"), record)
    metrics = {**result.metrics, "lineage": f"{folder.relative_to(ws.root)}/modhifi.json"}
    atomic_write_json(ws.artifact("unlearned_metrics"), metrics)
    return metrics
