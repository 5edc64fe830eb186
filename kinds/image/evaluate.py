"""evaluate on an open-weight image classifier (a Hugging Face folder, a torchvision/timm
network): the base, pruned and unlearned models on `data.dataset` at the model's input size
(`modhifi_core.operations.evaluate`), side by side; for the unlearned model the evidence of
forgetting the class its record names (UA, RA, TA, MIA), whether it survives BN
recalibration and a relearning attack (`evaluate.*`), and where it lives (the feature probe
and forget-data relearning against the pruned model it was unlearned from)."""

from __future__ import annotations

import json
from typing import Any

from kinds.image import FOLDERS
from kinds.image.data import evaluation_data
from modhifi_core.durability import ForgetRelearning, RelearningAttack
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.safe_io import atomic_write_json, atomic_write_text, sha256_file
from modhifi_core.splits import class_split
from tasks.records import read_record
from tasks.tables import per_class_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    """Accuracy of each model (%), the unlearned model's UA/RA/TA/MIA and audit, the prune
    stage's ratios and speed-up; the per-class test accuracy table."""
    models = {"base": kind.load_base(ws)}
    models |= {name: kind.load_output(ws, name) for name in ("pruned", "unlearned")}
    data = evaluation_data(params, models["base"].input_shape)
    forgotten = int(read_record(ws.artifact("unlearned_model"))["forgotten_class"])
    split = class_split(data.train, forgotten)
    e = params.evaluate
    attack = RelearningAttack(steps=e.relearn_steps, lr=e.relearn_lr, seed=params.seed)
    relearning = ForgetRelearning(max_steps=e.relearn_forget_max_steps, seed=params.seed)
    original = kind.classifier(models["pruned"])
    audited = {"split": split, "attack": attack, "original": original, "relearning": relearning}
    results = {
        name: evaluate(kind.classifier(m), data, **(audited if name == "unlearned" else {}))
        for name, m in models.items()
    }
    metrics: dict = {"dataset": data.name, "forget_class": forgotten, "forget": split.describe()}
    metrics |= {f"{name}_test_accuracy": r["test_accuracy"] for name, r in results.items()}
    metrics |= {k: v for k, v in results["unlearned"].items() if k not in ("per_class_accuracy", "train_accuracy")}
    pruned = json.loads(ws.artifact("pruned_metrics").read_text())  # measured once, by the prune stage
    metrics |= {k: pruned[k] for k in ("components", "flops_ratio", "params_ratio", "latency_speedup") if k in pruned}
    metrics["prune_method"] = pruned["method"]
    metrics["model_sha256"] = {"base": sha256_file(ws.artifact("base_model")), **_weights(ws)}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    atomic_write_text(ws.artifact("per_class"), per_class_csv({n: r["per_class_accuracy"] for n, r in results.items()}))
    return metrics


def _weights(ws: Workspace) -> dict[str, str]:
    """sha256 of each written folder's weight files, as `pruned/<file>`, `unlearned/<file>`."""
    return {
        f"{model}/{path.name}": sha256_file(path)
        for model, artifact in FOLDERS.items()
        for path in sorted(ws.artifact(artifact).glob("*.safetensors"))
    }
