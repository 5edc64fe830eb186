"""Stage prune of a zoo run: ModHiFi-P (or a baseline) of the base checkpoint to
`prune.target_flops` (`modhifi_core.operations.prune.prune_checkpoint`). ModHiFi's first
round ranks by the score stage's scores, made from collect's statistics on the same
calibration set (both recorded as parents with their sha256); later rounds of an
aggressive target re-collect and re-score on the pruned model; those passes (and the
compensation's kept-set Grams) run on the Dask cluster when `cluster.address` is set.

Writes the pruned checkpoint, its metrics (FLOPs/params ratios, accuracy, CPU latency)
and a per-layer channel table for DVC plots and the report.
"""

from __future__ import annotations

from kinds.zoo.artifacts import load_scores, load_statistics
from modhifi_core.data import load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.prune import prune_checkpoint
from modhifi_core.safe_io import atomic_write_json, atomic_write_text, sha256_file
from tasks.calibration import stage_calibration, synthetic_parent
from tasks.cluster import open_executor
from tasks.tables import layers_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    base = kind.load(ws.artifact("base_model"))
    data = load_from_spec(read_metadata(base.metadata).data)
    settings = params.prune.model_dump()
    modhifi = settings["method"] == "modhifi"
    inputs = ("statistics", "scores") if modhifi else ("statistics",)
    parents = {name: sha256_file(ws.artifact(name)) for name in inputs}
    with open_executor(params.cluster.address, params.cluster.workers) as executor:
        outcome = prune_checkpoint(
            base,
            stage_calibration(ws, params, base, data),
            data,
            **settings,
            calibration_source=params.collect.calibration,
            seed=params.seed,
            batch_size=params.collect.batch_size,
            statistics=load_statistics(ws),
            scores=load_scores(ws) if modhifi else None,
            parents=parents | synthetic_parent(ws, params.collect.calibration == "synthetic"),
            executor=executor,
        )
    kind.save(base, outcome.model, ws.artifact("pruned_model"), outcome.metadata.to_dict(), outcome.extra)
    atomic_write_json(ws.artifact("pruned_metrics"), outcome.metrics)
    atomic_write_text(ws.artifact("pruned_layers"), layers_csv(outcome.metadata.report["layers"]))
    return outcome.metrics
