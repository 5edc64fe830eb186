"""Stage evaluate: every model of the run on the real test data, side by side
(`modhifi_core.operations.evaluate`).

Base, pruned, unlearned and final models: test and per-class accuracy; for the final
model the unlearning evidence of what its metadata records as forgotten, and whether
the forgetting survives BN recalibration and a relearning attack (`evaluate.*`); the
FLOPs/params ratios and latency speed-up the prune stage measured.
"""

from __future__ import annotations

import csv
import io
import json

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.durability import RelearningAttack
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.safe_io import atomic_write_json, atomic_write_text
from modhifi_core.splits import forget_split
from tasks.image import evaluate as image_stage
from tasks.image import is_image
from tasks.params import Params
from tasks.workspace import Workspace

MODELS = ("base", "pruned", "unlearned", "final")


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        return image_stage.run(ws, params, per_class_csv)
    models = {name: load_checkpoint(ws.artifact(f"{name}_model")) for name in MODELS}
    final = read_metadata(models["final"].metadata)
    data = load_from_spec(final.data)
    split = forget_split(data.train, final.forgotten)
    e = params.evaluate
    attack = RelearningAttack(steps=e.relearn_steps, lr=e.relearn_lr, seed=params.seed)
    results = {
        name: evaluate(ckpt.model, data, split if name == "final" else None, attack) for name, ckpt in models.items()
    }
    metrics: dict = {"forget_class": final.forgotten_class, "forget": split.describe()}
    metrics.update({f"{name}_test_accuracy": r["test_accuracy"] for name, r in results.items()})
    metrics.update({k: v for k, v in results["final"].items() if k not in ("per_class_accuracy", "train_accuracy")})
    metrics["final_TA"] = metrics["TA"]
    pruned = json.loads(ws.artifact("pruned_metrics").read_text())  # measured once, by the prune stage
    metrics.update({k: pruned[k] for k in ("flops_ratio", "params_ratio", "latency_speedup")})
    metrics["model_sha256"] = {name: ckpt.sha256 for name, ckpt in models.items()}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    per_class = {name: r["per_class_accuracy"] for name, r in results.items()}
    atomic_write_text(ws.artifact("per_class"), per_class_csv(per_class))
    return metrics


def per_class_csv(per_class: dict[str, list[float]]) -> str:
    """One row per class, one column of test accuracy (%) per model."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", *per_class])
    for k, values in enumerate(zip(*per_class.values())):
        writer.writerow([k, *(f"{v:.2f}" for v in values)])
    return out.getvalue()
