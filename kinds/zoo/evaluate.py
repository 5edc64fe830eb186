"""Stage evaluate of a zoo run: every model of the run on the real test data, side by side
(`modhifi_core.operations.evaluate`).

Base, pruned, unlearned and final models: test and per-class accuracy; for the final
model the unlearning evidence of what its metadata records as forgotten, whether the
forgetting survives BN recalibration and a relearning attack (`evaluate.*`), and where
it lives (the feature probe and forget-data relearning against the pruned model, the one
the unlearn stage started from, and its head-reset reference); the
FLOPs/params ratios and latency speed-up the prune stage measured.
"""

from __future__ import annotations

from modhifi_core.data import load_from_spec
from modhifi_core.durability import ForgetRelearning, RelearningAttack
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.safe_io import atomic_write_json, atomic_write_text
from modhifi_core.splits import forget_split
from tasks.reports import read_json
from tasks.tables import per_class_csv
from tasks.workspace import Workspace

MODELS = ("base", "pruned", "unlearned", "final")


def run(ws: Workspace, params: object, kind: object) -> dict:
    models = {name: kind.load(ws.artifact(f"{name}_model")) for name in MODELS}
    final = read_metadata(models["final"].metadata)
    data = load_from_spec(final.data)
    split = forget_split(data.train, final.forgotten)
    e = params.evaluate
    attack = RelearningAttack(steps=e.relearn_steps, lr=e.relearn_lr, seed=params.seed)
    relearning = ForgetRelearning(max_steps=e.relearn_forget_max_steps, seed=params.seed)
    audited = {"split": split, "attack": attack, "original": models["pruned"].model, "relearning": relearning}
    results = {
        name: evaluate(ckpt.model, data, **(audited if name == "final" else {})) for name, ckpt in models.items()
    }
    metrics: dict = {"forget_class": final.forgotten_class, "forget": split.describe()}
    metrics.update({f"{name}_test_accuracy": r["test_accuracy"] for name, r in results.items()})
    metrics.update({k: v for k, v in results["final"].items() if k not in ("per_class_accuracy", "train_accuracy")})
    metrics["final_TA"] = metrics["TA"]
    pruned = read_json(ws.artifact("pruned_metrics"))  # measured once, by the prune stage
    metrics.update({k: pruned[k] for k in ("flops_ratio", "params_ratio", "latency_speedup")})
    metrics["model_sha256"] = {name: ckpt.sha256 for name, ckpt in models.items()}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    per_class = {name: r["per_class_accuracy"] for name, r in results.items()}
    atomic_write_text(ws.artifact("per_class"), per_class_csv(per_class))
    return metrics
