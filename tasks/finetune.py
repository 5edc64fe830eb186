"""Stage finetune: recover the unlearned model by distillation from the base model
(`modhifi_core.operations.finetune_checkpoint`).

Data-free by default: the student learns the base model's softened predictions on the
synthetic samples of the retained classes only, BatchNorm frozen, so the forgotten
class (read from the unlearned model's metadata) is never taught back.
`finetune.data: real` uses cross-entropy on the real retained training data instead.
"""

from __future__ import annotations

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.finetune import finetune_checkpoint
from modhifi_core.safe_io import atomic_write_json
from modhifi_core.synthesis import load_synthetic
from tasks.calibration import synthetic_parent
from tasks.image import FINETUNE_REASON, is_image, skipped
from tasks.params import Params
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        return skipped(ws, "final_model", "final_metrics", FINETUNE_REASON)
    student = load_checkpoint(ws.artifact("unlearned_model"))
    teacher = load_checkpoint(ws.artifact("base_model"))
    data = load_from_spec(read_metadata(student.metadata).data)
    synthetic = params.finetune.data == "synthetic"
    samples = load_synthetic(ws.artifact("synthetic"), student.config.num_classes) if synthetic else None
    outcome = finetune_checkpoint(
        student,
        teacher,
        data,
        params.finetune,
        samples=samples,
        seed=params.seed,
        parents=synthetic_parent(ws, synthetic),
    )
    outcome.save(ws.artifact("final_model"))
    atomic_write_json(ws.artifact("final_metrics"), outcome.metrics)
    return outcome.metrics
