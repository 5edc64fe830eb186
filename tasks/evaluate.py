"""Stage evaluate: every model of the run on the real test data, side by side.

Base, pruned, unlearned and final models: test accuracy, per-class accuracy, the
unlearning metrics for the forgotten class, and the FLOPs/params ratios and latency
speed-up the prune stage measured.
"""

from __future__ import annotations

import copy
import io
import json

import torch

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_json, atomic_write_text
from modhifi_core.splits import ForgetSplit, class_split
from modhifi_core.training import accuracy, per_class_accuracy
from tasks.workspace import Workspace

MODELS = ("base", "pruned", "unlearned", "final")


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    models = {name: load_checkpoint(ws.artifact(f"{name}_model")) for name in MODELS}
    base = models["base"]
    data = load_from_spec(base.metadata["data"])
    split = class_split(data.train, params.unlearn.forget_class)
    metrics: dict = {"forget_class": params.unlearn.forget_class}
    for name, ckpt in models.items():
        metrics[f"{name}_test_accuracy"] = accuracy(ckpt.model, data.test)
    final = models["final"].model
    metrics.update(unlearning_metrics(final, split, data.test))
    metrics["final_TA"] = metrics["TA"]
    metrics["UA_after_bn_recalibration"] = forgetting_after_recalibration(final, split)
    pruned = json.loads(ws.artifact("pruned_metrics").read_text())  # measured once, by the prune stage
    metrics.update({k: pruned[k] for k in ("flops_ratio", "params_ratio", "latency_speedup")})
    metrics["model_sha256"] = {name: ckpt.sha256 for name, ckpt in models.items()}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    per_class = {name: per_class_accuracy(ckpt.model, data.test) for name, ckpt in models.items()}
    atomic_write_text(ws.artifact("per_class"), per_class_csv(per_class))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def forgetting_after_recalibration(model: torch.nn.Module, split: ForgetSplit) -> float:
    """UA after re-estimating the BN statistics on the retained training data: an audit of
    whether the forgetting lives in the weights or only in stale BN statistics (for
    ModHiFi-U's zeroing it is the latter: digits, UA 100 -> 0 after recalibration)."""
    probe = copy.deepcopy(model)
    recalibrate_batchnorm(probe, split.retain.images.split(256))
    return 100.0 - accuracy(probe, split.forget)


def per_class_csv(per_class: dict[str, list[float]]) -> str:
    out = io.StringIO()
    out.write("class," + ",".join(per_class) + "\n")
    for k in range(len(next(iter(per_class.values())))):
        out.write(f"{k}," + ",".join(f"{values[k]:.2f}" for values in per_class.values()) + "\n")
    return out.getvalue()
