"""Stage finetune of a zoo run: recover the unlearned checkpoint by distillation from the
base checkpoint (`modhifi_core.operations.finetune.finetune_checkpoint`).

Data-free by default: the student learns the base model's softened predictions on the
synthetic samples of the retained classes only, BatchNorm frozen, so the forgotten
class (read from the unlearned model's metadata) is never taught back.
`finetune.data: real` uses cross-entropy on the real retained training data instead.
"""

from __future__ import annotations

from modhifi_core.data import load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.finetune import finetune_checkpoint
from modhifi_core.safe_io import atomic_write_json
from modhifi_core.synthesis import load_synthetic
from tasks.calibration import synthetic_parent
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    student = kind.load(ws.artifact("unlearned_model"))
    teacher = kind.load(ws.artifact("base_model"))
    data = load_from_spec(read_metadata(student.metadata).data)
    settings = params.finetune.model_dump()
    settings["finetune_data"] = settings.pop("data")
    synthetic = settings["finetune_data"] == "synthetic"
    samples = load_synthetic(ws.artifact("synthetic"), student.config.num_classes) if synthetic else None
    outcome = finetune_checkpoint(
        student, teacher, data, **settings, samples=samples, seed=params.seed, parents=synthetic_parent(ws, synthetic)
    )
    kind.save(student, outcome.model, ws.artifact("final_model"), outcome.metadata.to_dict(), outcome.extra)
    atomic_write_json(ws.artifact("final_metrics"), outcome.metrics)
    return outcome.metrics
