"""The commands on a Hugging Face language model (`--model hf:DIR`, a causal LM or a text
encoder): `modhifi prune` and `modhifi evaluate`.

Each takes the adapter, `--out` (checked by the caller: a folder) and the options the user
gave (typer parameter names; None or absent = not given), fills what was not given from
`kind.defaults` or the operation's signature, runs the operation and returns its metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kinds.language import LanguageKind
from modhifi_core.errors import InputError
from tasks.params import default

# kind.defaults.target -> the keyword of `prune_language_model` it sets
TARGET_KEYWORDS = {"params": "target_params", "ffn_fraction": "fraction"}


def prune(kind: LanguageKind, out: Path, options: dict[str, Any]) -> dict:
    """`modhifi prune --model hf:DIR`: FFN neurons of the model removed (to
    `--target-params` or by `--ffn-fraction`; neither: the kind's default target),
    calibrated on `--calibration` (text:PATH, or `synthetic`: sampled from a causal LM, its
    default) windows (`--calibration-samples`, default the kind's: 128), written to `out` as
    a stock Hugging Face folder with `modhifi.json`.

    A causal LM is pruned one layer at a time (`prune_language_model_layerwise`: the dense
    model is never held whole); an encoder whole (`prune_language_model`), see
    `LanguageKind.layerwise`."""
    from modhifi_core.metadata import modification_record
    from modhifi_core.operations.prune_language_model import (
        check_options,
        prune_language_model,
        prune_language_model_layerwise,
    )
    from modhifi_core.sources.huggingface import check_folder, weights_digest

    given = {key: value for key, value in options.items() if value is not None}
    calibration = given.get("calibration", kind.default_calibration)
    kind.check_calibration("--calibration", calibration)
    targets = {"target_params": given.get("target_params"), "fraction": given.get("ffn_fraction")}
    if targets == {"target_params": None, "fraction": None}:
        targets[TARGET_KEYWORDS[kind.defaults.target]] = kind.defaults.target_value
    method = given.get("method", default(prune_language_model, "method"))
    check_options(method, calibration, targets["target_params"], targets["fraction"])
    d = kind.defaults
    length = given.get("length", default(prune_language_model, "length"))
    tokenizer = kind.tokenizer()
    settings = {
        **targets,
        "samples": given.get("calibration_samples") or default_windows(kind, tokenizer, calibration, length),
        "length": length,
        "eval_text": given.get("eval_text"),
        "latency_repeats": given.get("latency_repeats", d.latency_repeats),
        "batch_size": given.get("batch_size", d.batch_size),
        "seed": given.get("seed", default(prune_language_model, "seed")),
    }
    used = {"method": method, "calibration": calibration, **settings}
    parents = {"model": weights_digest(check_folder(kind.folder())[1])}
    if kind.layerwise:
        lineage = {"operation": "prune", "parents": parents, "params": used}
        if kind.compute is not None:  # the layers are read onto it; the folder keeps the source's dtype
            lineage["compute"] = kind.compute.describe()
        streamed = prune_language_model_layerwise(
            kind.folder(), out, calibration, method=method, lineage=lineage, **settings, **kind.compute_keywords()
        )
        return {**streamed.metrics, "calibration_samples": settings["samples"], "out": str(streamed.folder)}
    loaded = kind.load()
    result = prune_language_model(
        loaded.model, loaded.tokenizer, calibration, method=method, **settings, **kind.compute_keywords()
    )
    lineage = modification_record("prune", parents, used, result.metrics)
    folder = kind.save(loaded, result.model, out, lineage)
    return {**result.metrics, "calibration_samples": settings["samples"], "out": str(folder)}


def default_windows(kind: LanguageKind, tokenizer: Any, calibration: str, length: int) -> int:
    """The calibration windows when `--calibration-samples` is not given: the kind's
    default (128, the paper's), or every window a shorter text holds (the default is a
    cap: a 7.6k-token text gives 29 windows of 256). A count the user gives is exact."""
    from modhifi_core.language.calibration import available_windows

    wanted = kind.defaults.calibration_samples
    if not calibration.startswith("text:"):
        return wanted
    return max(1, min(wanted, available_windows(calibration.removeprefix("text:"), tokenizer, length)))


def evaluate(kind: LanguageKind, out: Path | None, options: dict[str, Any]) -> dict:
    """`modhifi evaluate --model hf:DIR --text FILE [--reference hf:DENSE]`:
    `evaluate_language_model` (a causal LM's perplexity, and the reference's on the same
    windows; an encoder's sentence-embedding agreement with the reference, which it needs)."""
    from kinds import kind_of
    from modhifi_core.operations.evaluate_language_model import evaluate_language_model

    given = {key: value for key, value in options.items() if value is not None}
    if "text" not in given:
        raise InputError("--model hf:DIR needs --text FILE (held-out text to evaluate the language model on)")
    reference = given.get("reference")
    kind.check_reference(reference)
    dense = None
    if reference is not None:
        other = kind_of(reference)
        other.compute = kind.compute
        if other.name != kind.name:
            raise InputError(
                f"--reference {reference} is a {other.name} model and {kind.source} a {kind.name}: compare one kind"
            )
        dense = other.load(need_tokenizer=False).model
    loaded = kind.load()
    settings = {key: given[key] for key in ("samples", "length") if key in given}
    result = evaluate_language_model(loaded.model, loaded.tokenizer, str(given["text"]), reference=dense, **settings)
    return {**result, "model": kind.source, **({"reference": reference} if reference is not None else {})}
