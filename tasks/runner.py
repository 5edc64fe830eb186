"""Run one stage in this process: validated params, timing, metrics, its MLflow record.

`modhifi stage NAME` (the `cmd` of every dvc.yaml stage) calls `run_stage`. The stage
sees only the params its dvc.yaml entry declares: reading any other key is refused, so
dvc.lock never omits a parameter that shaped an artifact.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable

import torch

from kinds.base import STAGES
from modhifi_core.errors import InputError
from tasks import tracking
from tasks.dag import read_stages
from tasks.workspace import Workspace


class DeclaredParams:
    """A read-only view of `params` that allows only the `declared` dotted keys (and
    everything below them): `DeclaredParams(p, ("seed", "prune.target_flops")).prune.method`
    raises `InputError` naming the undeclared key."""

    def __init__(self, params: object, declared: tuple[str, ...], stage: str, prefix: str = "") -> None:
        self._params, self._declared, self._stage, self._prefix = params, declared, stage, prefix

    def __getattr__(self, name: str) -> object:
        key = f"{self._prefix}{name}"
        value = getattr(self._params, name)
        if key in self._declared:
            return value
        if any(d.startswith(key + ".") for d in self._declared):
            return DeclaredParams(value, self._declared, self._stage, key + ".")
        raise InputError(f"stage {self._stage} reads params key {key!r}, which its dvc.yaml entry does not declare")


def run_stage(name: str, ws: Workspace) -> dict:
    """Run stage `name` of the workspace's dvc.yaml; returns its metrics (+ `seconds`)."""
    if name not in STAGES:
        raise InputError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    params = ws.params()  # validated before anything runs
    stage = read_stages(ws.root / "dvc.yaml").get(name)
    if stage is None:
        raise InputError(f"stage {name!r} is not in {ws.root / 'dvc.yaml'}")
    # MODHIFI_THREADS (default 1): the default models are small, and a second torch thread
    # on a shared 2-core machine mostly spins (measured up to ~30x slower).
    torch.set_num_threads(int(os.environ.get("MODHIFI_THREADS", "1")))
    run = stage_function(ws, params, name)
    dumped = params.present()
    logged = {key: _lookup(dumped, key) for key in stage.params}
    start_ms, start = int(time.time() * 1000), time.perf_counter()
    metrics = run(ws, DeclaredParams(params, stage.params, name))
    metrics = {**metrics, "seconds": time.perf_counter() - start}
    times = (start_ms, int(time.time() * 1000))
    tracking.track(ws, tracking.record_stage(ws, name, logged, metrics, stage.outs, times))
    return metrics


def stage_function(ws: Workspace, params: object, name: str) -> Callable[[Workspace, object], dict]:
    """`run(ws, params)` of stage `name` for the kind of `model.source` (`kinds.kind_of`,
    asked once): `<kind.package>.<name>.run(ws, params, kind)`. A stage the kind does not
    run (it is not in the kind's dvc.yaml) is refused with the kind's reason."""
    import kinds
    from modhifi_core.compute import resolve

    kind = kinds.kind_of(params.model.source, ws.root)
    if name not in kind.stages:
        raise InputError(f"stage {name} does not apply to a {kind.name} model: {kind.skipped[name]}")
    if "compute" in kind.stage_params(name):  # what it loads computes where params.yaml says
        kind.compute = resolve(params.compute.device, params.compute.dtype)
    module = importlib.import_module(f"{kind.package}.{name}")
    return lambda w, p: module.run(w, p, kind)


def _lookup(tree: dict, dotted: str) -> object:
    for part in dotted.split("."):
        tree = tree[part]
    return tree
