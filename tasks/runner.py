"""Run one stage in this process: validated params, an MLflow run, timing, metrics.

`modhifi stage NAME` (the `cmd` of every dvc.yaml stage) calls `run_stage`.
"""

from __future__ import annotations

import importlib
import time

from modhifi_core.errors import InputError
from tasks import tracking
from tasks.dag import read_stages
from tasks.workspace import Workspace

STAGE_MODULES = {
    "train_base": "tasks.train_base",
    "synthesize": "tasks.synthesize",
    "collect": "tasks.collect",
    "score": "tasks.score",
    "prune": "tasks.prune",
    "unlearn": "tasks.unlearn",
    "finetune": "tasks.finetune",
    "evaluate": "tasks.evaluate",
    "report": "tasks.report",
}


def run_stage(name: str, ws: Workspace) -> dict:
    """Run stage `name` of the workspace's dvc.yaml; returns its metrics (+ `seconds`)."""
    if name not in STAGE_MODULES:
        raise InputError(f"unknown stage {name!r}; stages are {', '.join(STAGE_MODULES)}")
    params = ws.params()  # validated before anything runs
    stage = read_stages(ws.root / "dvc.yaml").get(name)
    if stage is None:
        raise InputError(f"stage {name!r} is not in {ws.root / 'dvc.yaml'}")
    module = importlib.import_module(STAGE_MODULES[name])
    dumped = params.model_dump()
    logged = {key: _lookup(dumped, key) for key in stage.params}
    with tracking.stage_run(ws, name, logged) as run:
        start = time.perf_counter()
        metrics = module.run(ws, params, run)
        metrics = {**metrics, "seconds": time.perf_counter() - start}
        tracking.log_metrics(metrics)
        tracking.tag_outputs(ws, stage.outs)
    return metrics


def _lookup(tree: dict, dotted: str) -> object:
    for part in dotted.split("."):
        tree = tree[part]
    return tree
