"""prune on an image classifier: one call of `prune_image_classifier` (conv channels of a
CNN, MLP neurons of a ViT/Swin) to `prune.target_flops` on `collect.samples` images of
`collect.calibration`, written back in the source's format (`kind.save`) with its lineage."""

from __future__ import annotations

from typing import Any

from kinds.image.data import evaluation_data
from modhifi_core.calibration import calibration_set
from modhifi_core.metadata import modification_record
from modhifi_core.operations.prune_image_classifier import (
    channel_options,
    check_options,
    prune_image_classifier,
)
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, atomic_write_text, sha256_file
from modhifi_core.synthesis import load_synthetic
from tasks.calibration import synthetic_parent
from tasks.records import read_record
from tasks.tables import layers_csv
from tasks.workspace import Workspace

# What prune_image_classifier takes of the prune section (a CNN also takes pruning_options').
USED = ("method", "target_flops", "round_to", "latency_batch", "latency_repeats")
CHANNEL_KEYS = ("compensation", "score", "allocation", "compensation_order", "rounds", "ridge", "allow_floor")


def run(ws: Workspace, params: Any, kind: Any) -> dict:
    """Prune the source model; writes `outputs/pruned/hf/` (`modhifi.json`: parents'
    sha256, params, metrics), its record, the metrics and the per-layer table (conv output
    channels; a ViT/Swin's MLP neurons per block)."""
    p, c = params.prune, params.collect
    loaded = kind.load_base(ws)
    shape = loaded.input_shape
    parts = loaded.components
    check_options(loaded.model, p.method, p.target_flops, None, parts, image_shape=shape, round_to=p.round_to)
    data = evaluation_data(params, shape)
    synthetic = c.calibration == "synthetic"
    samples = load_synthetic(ws.artifact("synthetic"), data.num_classes) if synthetic else None
    images = calibration_set(c.calibration, kind.classifier(loaded), data, c.samples, params.seed, samples)
    options = {"round_to": p.round_to, "latency_batch": p.latency_batch, "latency_repeats": p.latency_repeats}
    channels = parts == "channels"
    if channels:
        options["channel_options"] = channel_options(**p.model_dump(exclude={"latency_batch", "latency_repeats"}))
    result = prune_image_classifier(
        loaded.model,
        images,
        method=p.method,
        target_flops=p.target_flops,
        components=parts,
        test=data.test,
        seed=params.seed,
        batch_size=c.batch_size,
        **options,
    )
    base = sha256_file(ws.artifact("base_model"))
    parents = {"base_model": base, "source_files": read_record(ws.artifact("base_model"))["files"]}
    parents |= synthetic_parent(ws, synthetic)
    read = USED + (CHANNEL_KEYS if channels else ())
    used = {"prune": {k: getattr(p, k) for k in read}, "collect": c.model_dump(), "seed": params.seed}
    used["data"] = {"dataset": params.data.dataset, "image_size": list(shape)}
    lineage = modification_record("prune", parents, used, result.metrics)
    folder = kind.save(loaded, result.model, ws.artifact("pruned_hf"), lineage)
    atomic_torch_save(ws.artifact("pruned_model"), kind.output_record(ws, "pruned", base, loaded))
    metrics = {**result.metrics, "calibration": c.calibration, "lineage": f"{folder.relative_to(ws.root)}/modhifi.json"}
    atomic_write_json(ws.artifact("pruned_metrics"), metrics)
    atomic_write_text(ws.artifact("pruned_layers"), layers_csv(_layers(result.report)))
    return metrics


def _layers(report: dict) -> dict:
    """The report's per-layer rows as `layers_csv` takes them; a ViT/Swin's MLP blocks with
    their neurons (the FLOPs per block are not split out: blank)."""
    if "layers" in report:
        return report["layers"]
    widths = zip(report["ffn_width_dense"], report["widths"])
    return {f"mlp.{i}": {"out_channels": pair, "flops": ("", "")} for i, pair in enumerate(widths)}
