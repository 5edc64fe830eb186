"""unlearn on an open-weight image classifier: `unlearn_image_classifier` forgets
`unlearn.forget_class` from the pruned model (prune-then-unlearn) — data-free on the
synthesize stage's samples by default — with UA/RA/TA/MIA before and after on
`data.dataset`; written back in the source's format (`save_image_model`) with its lineage."""

from __future__ import annotations

from modhifi_core.errors import InputError
from modhifi_core.metadata import modification_record
from modhifi_core.operations.unlearn_image_classifier import unlearn_image_classifier
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, sha256_file
from modhifi_core.synthesis import load_synthetic
from modhifi_core.vision.sources import save_image_model
from tasks.calibration import synthetic_parent
from tasks.image import evaluation_data, folder_record, load_output
from tasks.inputs import check_model_fits
from tasks.params import Params
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    """Forget the class from `outputs/pruned/hf/`; writes `outputs/unlearned/hf/`, its
    record (with the forgotten class, what evaluate measures) and the metrics."""
    u = params.unlearn
    check_model_fits(ws, params, keys=("forget",))
    if u.prune is not None:
        raise InputError("unlearn.prune: prune-then-unlearn of an image classifier uses the prune stage; set null")
    loaded = load_output(ws, "pruned")
    data = evaluation_data(params, loaded)
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
    folder = save_image_model(result.model, loaded, ws.artifact("unlearned_hf"), lineage)
    record = folder_record(ws, "unlearned", pruned, loaded, {"forgotten_class": u.forget_class})
    atomic_torch_save(ws.artifact("unlearned_model"), record)
    metrics = {**result.metrics, "lineage": f"{folder.relative_to(ws.root)}/modhifi.json"}
    atomic_write_json(ws.artifact("unlearned_metrics"), metrics)
    return metrics
