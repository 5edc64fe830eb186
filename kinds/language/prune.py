"""prune on a Hugging Face language model: on the pipeline's windows, statistics and
scores, `prune_language_model_layerwise` for a causal LM (the source read one layer at a
time) or `prune_language_model` on the whole model where the kind is not layer-wise (an
encoder: `LanguageKind.layerwise`), written as a stock Hugging Face folder with its lineage."""

from __future__ import annotations

import csv
import io

from kinds.language import PRUNE_KEYS, LanguageKind
from kinds.language.collect import load_statistics
from kinds.language.synthesize import CALIBRATION_FILE, load_windows
from kinds.language.train_base import base_folder, load_base
from modhifi_core.errors import InputError
from modhifi_core.metadata import modification_record
from modhifi_core.operations.prune_language_model import (
    METHODS,
    prune_language_model,
    prune_language_model_layerwise,
)
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, atomic_write_text, sha256_file
from tasks.records import FOLDER, read_record
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """`prune_language_model_layerwise` on the windows, collect's statistics and score's
    scores (the source folder read one layer at a time); writes the stock Hugging Face
    folder with `modhifi.json` (parents' sha256, params, code version)."""
    lang = params.language
    statistics = load_statistics(ws)
    scores = read_record(ws.artifact("scores"))
    if scores["score"] != METHODS[lang.method][0]:
        raise InputError(f"outputs/scores holds {scores['score']!r} scores, method {lang.method} ranks by another")
    calibration = "synthetic" if lang.calibration == "self" else lang.calibration
    options = {"target_params": lang.target_params, "fraction": lang.ffn_fraction, "seed": params.seed}
    options |= {"latency_repeats": lang.latency_repeats, "batch_size": lang.batch_size, "length": lang.length}
    options |= {"method": lang.method, "windows": load_windows(ws), "statistics": statistics}
    options |= {"scores": scores["layers"], **kind.compute_keywords()}
    parents = {name: sha256_file(ws.artifact(name)) for name in ("base_model", "statistics", "scores")}
    parents["calibration"] = sha256_file(ws.artifact("synthetic") / CALIBRATION_FILE)
    parents["source_files"] = read_record(ws.artifact("base_model"))["files"]
    used = {"language": {key: getattr(lang, key) for key in PRUNE_KEYS}, "seed": params.seed}
    out = ws.artifact("pruned_hf")
    if kind.layerwise:
        lineage = {"operation": "pipeline prune", "parents": parents, "params": used}
        result = prune_language_model_layerwise(base_folder(ws), out, calibration, lineage=lineage, **options)
        folder = result.folder
    else:
        loaded = load_base(ws, kind)
        result = prune_language_model(loaded.model, loaded.tokenizer, calibration, **options)
        lineage = modification_record("pipeline prune", parents, used, result.metrics)
        folder = kind.save(loaded, result.model, out, lineage)
    relative = folder.relative_to(ws.root).as_posix()
    parent = {"parents": {"model": parents["base_model"]}}  # what MLflow's registry reads
    atomic_torch_save(ws.artifact("pruned_model"), {"record": FOLDER, "folder": relative, "metadata": parent})
    metrics = {**result.metrics, "widths": result.report["widths"], "lineage": f"{relative}/modhifi.json"}
    atomic_write_json(ws.artifact("pruned_metrics"), metrics)
    widths = _widths_csv(list(statistics), result.report["ffn_width_dense"], result.report["widths"])
    atomic_write_text(ws.artifact("pruned_layers"), widths)
    return metrics


def _widths_csv(names: list[str], dense: list[int], kept: list[int]) -> str:
    """One row per FFN block: neurons before and after pruning (the `dvc plots` columns)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["layer", "channels_before", "channels_after"])
    writer.writerows(zip(names, dense, kept))
    return out.getvalue()
