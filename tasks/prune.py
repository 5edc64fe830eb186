"""Stage prune: ModHiFi-P (or a baseline) of the base model to `prune.target_flops`
(`modhifi_core.operations.prune_checkpoint`). ModHiFi's first round ranks by the score
stage's scores, made from collect's statistics on the same calibration set (both recorded
as parents with their sha256); later rounds of an aggressive target re-collect and
re-score on the pruned model; those passes (and the compensation's kept-set Grams) run on
the Dask cluster when `cluster.address` is set.

Writes the pruned checkpoint, its metrics (FLOPs/params ratios, accuracy, CPU latency)
and a per-layer channel table for DVC plots and the report.
"""

from __future__ import annotations

import csv
import io

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.prune import prune_checkpoint
from modhifi_core.safe_io import atomic_write_json, atomic_write_text, sha256_file
from tasks.calibration import stage_calibration, synthetic_parent
from tasks.cluster import open_executor
from tasks.collect import load_statistics
from tasks.image import is_image
from tasks.image import prune as image_stage
from tasks.params import Params
from tasks.score import load_scores
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_image(ws, params):
        return image_stage.run(ws, params, layers_csv)
    base = load_checkpoint(ws.artifact("base_model"))
    data = load_from_spec(read_metadata(base.metadata).data)
    p = params.prune
    modhifi = p.method == "modhifi"
    inputs = ("statistics", "scores") if modhifi else ("statistics",)
    parents = {name: sha256_file(ws.artifact(name)) for name in inputs}
    with open_executor(params.cluster.address, params.cluster.workers) as executor:
        outcome = prune_checkpoint(
            base,
            stage_calibration(ws, params, base, data),
            data,
            p,
            calibration_source=params.collect.calibration,
            seed=params.seed,
            batch_size=params.collect.batch_size,
            latency_batch=p.latency_batch,
            latency_repeats=p.latency_repeats,
            statistics=load_statistics(ws),
            scores=load_scores(ws) if modhifi else None,
            parents=parents | synthetic_parent(ws, params.collect.calibration == "synthetic"),
            executor=executor,
        )
    outcome.save(ws.artifact("pruned_model"))
    atomic_write_json(ws.artifact("pruned_metrics"), outcome.metrics)
    atomic_write_text(ws.artifact("pruned_layers"), layers_csv(outcome.metadata.report["layers"]))
    ws.unused_folder(
        "pruned_hf", "A zoo model has no Hugging Face export: the pruned model is outputs/pruned/model.pt."
    )
    return outcome.metrics


def layers_csv(layers: dict) -> str:
    """One row per conv/linear: output channels and FLOPs before and after pruning."""
    out = io.StringIO()
    columns = ["layer", "channels_before", "channels_after", "flops_before", "flops_after"]
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for name, row in layers.items():
        (c0, c1), (f0, f1) = row["out_channels"], row["flops"]
        writer.writerow(dict(zip(columns, (name, c0, c1, f0, f1))))
    return out.getvalue()
