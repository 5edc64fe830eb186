"""train_base on an image classifier: the source (its weights' path and sha256, the
adapter's load options, the input shape) recorded as the base artifact, not trained
(`kind.skipped` says so in the report). The model is loaded once here, so weights that do
not fit it are refused now, not three stages later; every later stage reopens it through
`kind.load_base`, which re-checks the weights' sha256."""

from __future__ import annotations

from typing import Any

from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    record, loaded = kind.record_base(ws, params)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    return {k: v for k, v in record.items() if k != "record"} | {"parameters": parameters}
