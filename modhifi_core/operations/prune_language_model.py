"""Operation `prune_language_model`: FFN-neuron pruning of a Hugging Face transformer
(`modhifi_core.pruning.ffn.prune_transformer`) with its calibration and its evidence —
what `modhifi prune --model hf:DIR` runs.

Methods, one name each (method.md §3b):

| method     | score (on the down projection's inputs)  | compensation |
|------------|------------------------------------------|--------------|
| `modhifi`  | greedy removal order with the refit (1)  | least-squares refit of the down projection |
| `modhifi-energy` | energy `Q_jj` (the paper's LLM score) | least-squares refit |
| `wanda-sp` | `‖h_j‖·‖W_down[:, j]‖`                   | none |
| `flap`     | fluctuation                              | bias (FLAP) |
| `magnitude`| weight magnitude                         | none |
| `random`   | random                                   | none |

(1) `ffn.greedy_removal_order`: blocks of 16 neurons, each the cheapest to remove once the
rest are refit (Optimal Brain Surgeon's cost `‖W[:, j]‖²/(G⁻¹)_jj`).

Calibration: `text:PATH` (a file or folder, tokenised into seeded windows) or
`synthetic` (sequences sampled from the model itself: data-free; causal LMs only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modhifi_core.checks import check_one_target
from modhifi_core.compute import place, requested
from modhifi_core.errors import InputError
from modhifi_core.language import sample_sequences, text_windows
from modhifi_core.metadata import modification_record
from modhifi_core.pruning.ffn import FFNStatistics, prune_transformer
from modhifi_core.pruning.latency import time_alternately

METHODS = {
    "modhifi": ("greedy", "ls"),
    "modhifi-energy": ("energy", "ls"),
    "wanda-sp": ("wanda-sp", "none"),
    "flap": ("fluctuation", "bias"),
    "magnitude": ("magnitude", "none"),
    "random": ("random", "none"),
}


@dataclass
class LanguagePruning:
    """The pruned model (a new module), the calibration it was scored on `(n, length)`,
    the metrics and the pruning report."""

    model: nn.Module
    calibration: Tensor
    metrics: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


def check_options(method: str, calibration: str, target_params: float | None, fraction: float | None) -> None:
    """`InputError` for a bad method, calibration or target, before any model is loaded."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} for a language model; choose one of {', '.join(METHODS)}")
    if not (calibration.startswith("text:") or calibration == "synthetic"):
        raise InputError(f"calibration must be text:PATH or synthetic for a language model, got {calibration!r}")
    check_one_target(target_params=target_params, fraction=fraction)


def calibration_windows(model: nn.Module, tokenizer: Any, source: str, n: int, length: int, seed: int = 0) -> Tensor:
    """`(n, length)` token ids: windows of the text at `text:PATH`, or `synthetic`
    sequences sampled from `model`."""
    if tokenizer is None:
        raise InputError("the model folder has no tokenizer: text calibration and sampling need one")
    if source.startswith("text:"):
        return text_windows(source.removeprefix("text:"), tokenizer, n, length, seed)
    if source == "synthetic":
        return sample_sequences(model, tokenizer, n, length, seed=seed)
    raise InputError(f"calibration must be text:PATH or synthetic for a language model, got {source!r}")


def prune_language_model(
    model: nn.Module,
    tokenizer: Any,
    calibration: str,
    *,
    method: str = "modhifi",
    target_params: float | None = None,
    fraction: float | None = None,
    samples: int = 32,
    length: int = 256,
    seed: int = 0,
    eval_text: str | None = None,
    eval_samples: int = 16,
    latency_repeats: int = 3,
    batch_size: int = 4,
    windows: Tensor | None = None,
    statistics: dict[str, FFNStatistics] | None = None,
    scores: dict[str, Tensor] | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LanguagePruning:
    """Prune `model`'s FFN neurons with `method` to `target_params` (fraction of all the
    model's parameters that remains) or by `fraction` (of FFN neurons removed per layer).

    Metrics: `params_ratio`, `flops_ratio` (per token at `length`), on `eval_text` when given
    `perplexity` and `dense_perplexity` over `eval_samples` windows (a causal LM) or
    `mean_cosine`, `min_cosine` and `top10_agreement` of sentence embeddings over
    `eval_samples` held-out sentences (a model without a language-modelling head),
    `latency_speedup` (CPU, dense ÷ pruned, median of `latency_repeats` interleaved
    forwards of one `length`-token sequence), `seconds`.

    `windows` `(n, length)`: calibration token ids already made (e.g. by the pipeline's
    synthesize stage; `calibration` then only names their source); `statistics`: from
    `collect_ffn_statistics` of `model` on those windows (the pipeline's collect stage);
    `scores`: `method`'s neuron scores per FFN block from them (the score stage)."""
    place(model, requested(device, dtype))
    check_options(method, calibration, target_params, fraction)
    _check_length(model, length)
    start = time.perf_counter()
    if windows is None:
        windows = calibration_windows(model, tokenizer, calibration, samples, length, seed)
    score, compensation = METHODS[method]
    result = prune_transformer(
        model,
        windows,
        fraction=fraction,
        target_params=target_params,
        seq_len=length,
        score=score,
        compensation=compensation,
        seed=seed,
        batch_size=batch_size,
        statistics=statistics,
        scores=scores,
    )
    metrics: dict[str, Any] = {
        "method": method,
        "score": score,
        "compensation": compensation,
        "calibration": calibration,
        "calibration_tokens": int(windows.numel()),
        "params_ratio": result.report["params_ratio"],
        "flops_ratio": result.report["flops_ratio"],
        "seconds": time.perf_counter() - start,
    }
    if eval_text is not None:
        metrics.update(_held_out(model, result.model, tokenizer, eval_text, eval_samples, length, seed, batch_size))
    if latency_repeats > 0:
        metrics.update(_latency(model, result.model, windows[:1], latency_repeats))
    return LanguagePruning(result.model, windows, metrics, result.report)


def _check_length(model: nn.Module, length: int) -> None:
    """`InputError` when `length` tokens exceed the model's positions (refused, not clipped)."""
    from modhifi_core.sources import position_limit

    limit = position_limit(model)
    if limit is not None and length > limit:
        raise InputError(f"length {length} exceeds the model's {limit} positions (max_position_embeddings)")


def _held_out(
    dense: nn.Module, pruned: nn.Module, tokenizer: Any, text: str, n: int, length: int, seed: int, batch_size: int
) -> dict[str, Any]:
    """`evaluate_language_model` of `pruned` against `dense` on held-out `text` (seed + 1):
    a causal LM's perplexity and `dense_perplexity` over `n` windows of `length` tokens; an
    encoder's agreement of mean-pooled embeddings of `n` held-out sentences."""
    from modhifi_core.operations.evaluate_language_model import evaluate_language_model

    options = {"reference": dense, "samples": n, "length": length, "seed": seed + 1, "batch_size": batch_size}
    return evaluate_language_model(pruned, tokenizer, text, **options)


def save_language_model(
    result: LanguagePruning, folder: str | Path, loaded: Any, operation: str, parents: dict, params: dict
) -> Path:
    """Write `result.model` to `folder` as a stock Hugging Face folder with the tokenizer
    and files of `loaded` (the source's `LoadedModel`) and `modhifi.json`: `operation`,
    `parents` (hashes), `params` and the metrics without timings. Returns the folder."""
    from modhifi_core.sources import save_hf

    lineage = modification_record(operation, parents, params, result.metrics)
    return save_hf(result.model, folder, tokenizer=loaded.tokenizer, source=loaded.path, lineage=lineage)


def _latency(dense: nn.Module, pruned: nn.Module, ids: Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of dense and pruned forwards on `ids`, timed alternately (one warm-up)."""
    dense_s, pruned_s = time_alternately(dense, pruned, lambda m: m(input_ids=ids), warmup=1, repeats=repeats)
    return {
        "latency_dense_ms": 1000 * dense_s,
        "latency_pruned_ms": 1000 * pruned_s,
        "latency_speedup": dense_s / pruned_s,
        "latency_tokens": int(ids.numel()),
    }
