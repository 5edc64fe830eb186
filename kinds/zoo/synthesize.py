"""Stage synthesize of a zoo run: calibration samples made from the base checkpoint itself
(data-free: DeepInversion matches its BatchNorm statistics; `tasks.calibration.synthesize_stage`)
for collect, prune, unlearn and finetune."""

from __future__ import annotations

from tasks.calibration import synthesize_stage
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    base = kind.load(ws.artifact("base_model"))
    shape = (base.config.in_channels, base.config.image_size, base.config.image_size)
    return synthesize_stage(ws, params, base.model, shape)
