"""Stage prune: ModHiFi-P (or a baseline) to `prune.target_flops` of the dense FLOPs.

Writes the physically pruned checkpoint, its metrics (FLOPs/params ratios, accuracy,
measured latency) and a per-layer channel table for DVC plots and the report.
"""

from __future__ import annotations

import io

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.params import Params
from modhifi_core.pruning import prune_model
from modhifi_core.pruning.report import latency_report
from modhifi_core.safe_io import atomic_write_json, atomic_write_text
from modhifi_core.training import accuracy
from tasks.calibration import calibration_set
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    base = load_checkpoint(ws.artifact("base_model"))
    spec = base.metadata["data"]
    p = params.prune
    calibration = calibration_set(ws, params.collect.calibration, spec, base.config.num_classes, params.seed)
    options = {
        "target_flops": p.target_flops,
        "rounds": p.rounds,
        "round_to": p.round_to,
        "batch_size": params.collect.batch_size,
    }
    if p.method == "modhifi":
        options.update(compensation=p.compensation, allocation=p.allocation, ridge=p.ridge)
    if p.method == "random":
        options["seed"] = params.seed
    result = prune_model(base.model, calibration, p.method, **options)
    data = load_from_spec(spec)
    speed = latency_report(base.model, result.model, data.image_shape, params.evaluate.latency_batch)
    metrics = {
        "method": p.method,
        "calibration": params.collect.calibration,
        "flops_ratio": result.report["flops_ratio"],
        "params_ratio": result.report["params_ratio"],
        "test_accuracy": accuracy(result.model, data.test),
        "base_test_accuracy": accuracy(base.model, data.test),
        **speed,
    }
    save_checkpoint(
        ws.artifact("pruned_model"),
        result.model,
        base.config,
        metadata={
            "stage": "prune",
            "data": spec,
            "parents": {"base_model": base.sha256},
            "params": params.prune.model_dump() | {"calibration": params.collect.calibration},
            "metrics": metrics,
            "pruning_report": result.report,
        },
    )
    atomic_write_json(ws.artifact("pruned_metrics"), metrics)
    atomic_write_text(ws.artifact("pruned_layers"), layers_csv(result.report["layers"]))
    if mlflow_run is not None:
        from tasks.tracking import register_model

        register_model(ws, "pruned_model", mlflow_run, base.sha256)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def layers_csv(layers: dict) -> str:
    """One row per conv/linear: output channels and FLOPs before and after pruning."""
    out = io.StringIO()
    out.write("layer,channels_before,channels_after,flops_before,flops_after\n")
    for name, row in layers.items():
        out.write(f"{name},{row['out_channels'][0]},{row['out_channels'][1]},{row['flops'][0]},{row['flops'][1]}\n")
    return out.getvalue()
