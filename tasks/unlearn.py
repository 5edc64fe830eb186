"""Stage unlearn: forget `unlearn.forget_class` from the pruned model (prune-then-unlearn).

Data-free by default: the method sees only the synthetic samples (`unlearn.data:
synthetic`); `real` uses the training set. The evidence — UA, RA, TA, MIA-Efficacy on
the real data, before and after — is measured here and stored with the checkpoint.
"""

from __future__ import annotations

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_json
from modhifi_core.splits import class_split
from modhifi_core.synthesis import load_synthetic
from modhifi_core.unlearning.api import unlearn
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    source = load_checkpoint(ws.artifact("pruned_model"))
    spec = source.metadata["data"]
    u = params.unlearn
    data = load_from_spec(spec)
    real_split = class_split(data.train, u.forget_class)
    if u.data == "synthetic":
        samples = load_synthetic(ws.artifact("synthetic"), source.config.num_classes)
        method_split = class_split(samples, u.forget_class)
    else:
        method_split = real_split
    result = unlearn(source.model, method_split, method=u.method, **u.hyperparameters)
    before = unlearning_metrics(source.model, real_split, data.test)
    after = unlearning_metrics(result.model, real_split, data.test)
    metrics = {
        "forget_class": u.forget_class,
        "method": u.method,
        "data": u.data,
        "seconds": result.seconds,
        **after,
        **{f"before_{k}": v for k, v in before.items()},
    }
    save_checkpoint(
        ws.artifact("unlearned_model"),
        result.model,
        source.config,
        metadata={
            "stage": "unlearn",
            "data": spec,
            "parents": {"pruned_model": source.sha256, **source.metadata.get("parents", {})},
            "params": u.model_dump(),
            "metrics": metrics,
            "unlearning_log": result.log,
        },
    )
    atomic_write_json(ws.artifact("unlearned_metrics"), metrics)
    if mlflow_run is not None:
        from tasks.tracking import register_model

        register_model(ws, "unlearned_model", mlflow_run, source.sha256)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
