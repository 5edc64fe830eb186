"""train_base on an image classifier: the source (its weights' path and sha256, the
adapter's load options, the input shape) recorded as the base artifact, not trained. The
model is loaded once here, so weights that do not fit it are refused now, not three
stages later; every later stage reopens it through `kind.load_base`, which re-checks the
weights' sha256."""

from __future__ import annotations

from typing import Any

from modhifi_core.safe_io import atomic_torch_save, atomic_write_json
from tasks.inputs import checked_input
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    source = checked_input(ws, params, "model_source")
    record, loaded = kind.base_record(params, ws.root, source)
    atomic_torch_save(ws.artifact("base_model"), record)
    from kinds.image import TRAIN_REASON

    parameters = sum(p.numel() for p in loaded.model.parameters())
    metrics = {"skipped": TRAIN_REASON, "kind": kind.name, "source": kind.source, "parameters": parameters, **source}
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics
