"""synthesize on an image classifier: calibration samples made from the base model itself
(data-free; `tasks.calibration.synthesize_stage`)."""

from __future__ import annotations

from typing import Any

from tasks.calibration import synthesize_stage
from tasks.workspace import Workspace


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    loaded = kind.load_base(ws)
    return synthesize_stage(ws, params, kind.classifier(loaded), loaded.input_shape)
