"""Stage finetune: recover the unlearned model by distillation from the base model.

Data-free by default: the student (the pruned, unlearned model) learns the teacher's
(the base model's) softened predictions on the synthetic samples of the retained
classes only, so the forgotten class is never taught back. `finetune.data: real` uses
cross-entropy on the real retained training data instead.
"""

from __future__ import annotations

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.distillation import finetune
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_json
from modhifi_core.synthesis import load_synthetic
from modhifi_core.training import accuracy
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    student = load_checkpoint(ws.artifact("unlearned_model"))
    teacher = load_checkpoint(ws.artifact("base_model"))
    spec = student.metadata["data"]
    f = params.finetune
    num_classes = student.config.num_classes
    retain = [k for k in range(num_classes) if k != params.unlearn.forget_class]
    data = load_from_spec(spec)
    if f.data == "synthetic":
        samples, mentor = load_synthetic(ws.artifact("synthetic"), num_classes), teacher.model
    else:
        samples, mentor = data.train, None
    log = finetune(
        student.model,
        mentor,
        samples,
        f.epochs,
        lr=f.lr,
        temperature=f.temperature,
        batch_size=f.batch_size,
        classes=retain,
        seed=params.seed,
        batchnorm="frozen",  # recalibrating on retained classes only would give the forgotten class back
    )
    retained_test = data.test.of_classes(retain)
    forgotten_test = data.test.of_classes([params.unlearn.forget_class])
    metrics = {
        "retained_test_accuracy": accuracy(student.model, retained_test),
        "forgotten_test_accuracy": accuracy(student.model, forgotten_test),
        "final_loss": log["final_loss"],
        "samples": log["samples"],
        "finetune_seconds": log["seconds"],
    }
    save_checkpoint(
        ws.artifact("final_model"),
        student.model,
        student.config,
        metadata={
            "stage": "finetune",
            "data": spec,
            "parents": {"unlearned_model": student.sha256, "teacher": teacher.sha256},
            "params": f.model_dump() | {"retained_classes": retain, "batchnorm": "frozen"},
            "metrics": metrics,
        },
    )
    atomic_write_json(ws.artifact("final_metrics"), metrics)
    return metrics
