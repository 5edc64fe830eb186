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

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modhifi_core.checks import check_one_target
from modhifi_core.compute import place, requested, resolve
from modhifi_core.errors import InputError
from modhifi_core.fidelity import DEFAULT_RIDGE
from modhifi_core.language import sample_sequences, text_windows
from modhifi_core.metadata import modification_record
from modhifi_core.pruning.ffn import FFNStatistics, prune_transformer
from modhifi_core.pruning.latency import time_alternately
from modhifi_core.safe_io import atomic_write_json
from modhifi_core.sources.huggingface import LINEAGE_FILE, SAFETENSORS

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


# ---------------------------------------------------------------- layer by layer


@dataclass
class LayerwisePruning:
    """What `prune_language_model_layerwise` wrote (`folder`, a stock Hugging Face folder),
    the calibration `(n, length)` it was scored on, the metrics and the pruning report."""

    folder: Path
    calibration: Tensor
    metrics: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


def prune_language_model_layerwise(
    source: str | Path,
    out: str | Path,
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
    sequential: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    windows: Tensor | None = None,
    statistics: dict[str, FFNStatistics] | None = None,
    scores: dict[str, Tensor] | None = None,
    lineage: dict[str, Any] | None = None,
) -> LayerwisePruning:
    """`prune_language_model` of the causal LM in the Hugging Face folder `source`, one
    transformer layer at a time, written to the folder `out` (stock `from_pretrained`
    loads it; each tensor keeps the source's dtype, the config its new `intermediate_size`).

    The model is never held whole: its skeleton lives on the `meta` device, each layer's
    weights are read from the source's safetensors when its turn comes (`dtype`, on
    `device`), its FFN statistics are taken on the calibration windows' hidden states at
    its input, its neurons scored, removed and refit exactly as `prune_transformer` does,
    and it is written out and freed. Without `sequential` a layer's inputs are the dense
    layers' outputs (what `prune_transformer` and `prune_language_model` use: the same
    kept neurons and weights up to float round-off); with it, the outputs of the already
    pruned layers below (SparseGPT's order). A GGUF source is dequantised whole by
    transformers first (transformers renames and re-permutes its tensors; held once).

    The same options and metrics as `prune_language_model`, measured the same streaming
    way: `perplexity` and `dense_perplexity` on `eval_samples` windows of `eval_text` (a
    dense and a pruned stream of hidden states through each layer before and after its
    pruning); `latency_*` the sum over layers of each dense and pruned layer's median time
    on one `length`-token window (the parts outside the layers, unchanged by FFN pruning,
    are left out). `windows`, `statistics`, `scores`: as in `prune_language_model` (from
    the dense model). `lineage`: `operation`, `parents`, `params` of `modhifi.json`
    (`metadata.modification_record`, with these metrics). `device`, `dtype`: what each
    materialised layer is computed on and in (`modhifi_core.compute.requested`'s keywords;
    None: the CPU in float32; written tensors keep the source's dtype). Only `cpu` is exercised so far: the statistics,
    scores and refit are float64 CPU tensors, and moving a GPU layer's activations to them
    is left to the compute setting's wiring."""
    from modhifi_core.language.layerwise import SafetensorsWriter, advance, return_freed_memory, run_layer
    from modhifi_core.progress import progress
    from modhifi_core.pruning.ffn import (
        _hook,
        _Plan,
        _refit_block,
        as_batches,
        count_parameters,
        ensure_down_bias,
        find_ffn_blocks,
        flops_per_token,
        remove_neurons,
        set_config_width,
        widths_for_target,
    )
    from modhifi_core.sources import position_limit
    from modhifi_core.sources.huggingface import (
        _copy_tokenizer_files,
        _replace_folder,
        check_folder,
        lineage_file,
    )

    check_options(method, calibration, target_params, fraction)
    if scores is not None and sequential:
        raise InputError("given scores cannot be sequential: each layer's scores change with the layers below")
    start = time.perf_counter()
    folder, out = Path(source).expanduser(), Path(out)
    compute = requested(device, dtype) or resolve("cpu", "float32")
    device, dtype = str(compute.device), compute.dtype
    streamed, tokenizer = _open_streamed(folder, dtype, device)
    limit = position_limit(streamed.model)
    if limit is not None and length > limit:
        raise InputError(f"length {length} exceeds the model's {limit} positions (max_position_embeddings)")
    if windows is None:
        windows = _layerwise_windows(folder, tokenizer, calibration, samples, length, seed, dtype)
    score, compensation = METHODS[method]
    model = streamed.model
    blocks = find_ffn_blocks(model)
    by_index = {int(b.name.removeprefix(streamed.layers_name + ".").split(".")[0]): b for b in blocks}
    dense_params, dense_flops = count_parameters(model), flops_per_token(model, length)
    if compensation == "bias":
        ensure_down_bias(model, blocks)
        streamed.add_missing()
    widths = widths_for_target(
        model, blocks, fraction=fraction, target_params=target_params, seq_len=length, reference=dense_params
    )
    if scores is not None:
        from modhifi_core.pruning.ffn import _check_given_scores

        _check_given_scores(scores, blocks)
    plan = _Plan(score, compensation, DEFAULT_RIDGE, seed, {b.name: w for b, w in zip(blocks, widths)}, scores)
    plan.consume = statistics is None  # each layer's statistics are its own, used once
    ffn_dense = [b.width for b in blocks]

    forward = statistics is None or sequential
    captured = streamed.layer_inputs(as_batches(windows, batch_size)) if forward else []
    streams = {}
    if eval_text is not None:
        eval_windows = text_windows(eval_text, tokenizer, eval_samples, length, seed + 1)
        dense_stream = streamed.layer_inputs(as_batches(eval_windows, 1))
        streams = {"dense": dense_stream, "pruned": [[args, dict(kwargs)] for args, kwargs in dense_stream]}
    timing = streamed.layer_inputs(as_batches(windows[:1], 1)) if latency_repeats > 0 else []
    return_freed_memory()  # what tokenising and the embeddings left in the heap
    seconds = {"dense": 0.0, "pruned": 0.0, "statistics_s": 0.0}

    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # no_grad: a pruned layer's new parameters require grad, and a graph kept through the
    # hidden states would hold every layer's tensors alive
    with torch.no_grad(), contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, staging, ignore_errors=True)
        layout = streamed.layout(_final_shapes(model, blocks, widths))
        writer = SafetensorsWriter(staging / SAFETENSORS, layout)
        for index in progress(range(streamed.depth), "layers (read, prune, write)"):
            layer, block = streamed.load_layer(index), by_index.get(index)
            stats = statistics.get(block.name) if statistics is not None and block is not None else None
            if block is not None and statistics is not None and stats is None:
                raise InputError(f"statistics lack FFN block {block.name}")
            if forward:
                began = time.perf_counter()
                outputs, stats = _run_collecting(model, layer, block, captured, stats, _hook)
                seconds["statistics_s"] += time.perf_counter() - began
            if streams:
                advance(streams["dense"], run_layer(layer, streams["dense"]))
            if timing:
                seconds["dense"] += _median_seconds(layer, timing, latency_repeats)
            if block is not None:
                # only the down projection (and, for `magnitude`, the producers) is read while
                # scoring and refitting: the rest of the layer waits on disk meanwhile
                idle = _idle_while_refitting(streamed.parameter_names(index), block, score)
                streamed.release(idle)
                return_freed_memory()
                kept = _refit_block(model, block, stats, plan)
                streamed.materialise(idle)
                remove_neurons(model, block, kept)
            if sequential:
                outputs = run_layer(layer, captured)
            if forward:
                advance(captured, outputs)
            if streams:
                advance(streams["pruned"], run_layer(layer, streams["pruned"]))
            if timing:
                seconds["pruned"] += _median_seconds(layer, timing, latency_repeats)
                advance(timing, run_layer(layer, timing))
            writer.write(streamed.tensors(streamed.parameter_names(index)))
            streamed.unload_layer(index)
            del stats
        for name in streamed.outside_sources():
            writer.write(streamed.weights.read([name]))
        writer.close()
        set_config_width(model, [b.width for b in blocks])
        params, flops = count_parameters(model), flops_per_token(model, length)
        metrics: dict[str, Any] = {
            "method": method,
            "score": score,
            "compensation": compensation,
            "calibration": calibration,
            "calibration_tokens": int(windows.numel()),
            "params_ratio": params / dense_params,
            "flops_ratio": flops / dense_flops,
            "layerwise": True,
            "sequential": sequential,
        }
        if streams:
            metrics |= _streamed_perplexity(streamed, streams, eval_windows)
        if timing:
            metrics |= {
                "latency_dense_ms": 1000 * seconds["dense"],
                "latency_pruned_ms": 1000 * seconds["pruned"],
                "latency_speedup": seconds["dense"] / seconds["pruned"],
                "latency_tokens": int(windows[:1].numel()),
                "latency_scope": "transformer layers",
            }
        metrics["seconds"] = time.perf_counter() - start
        model.config.save_pretrained(staging)
        if not _copy_tokenizer_files(folder, staging) and tokenizer is not None:
            tokenizer.save_pretrained(staging)
        made = {"operation": "prune", "parents": {}, "params": {}, **(lineage or {})}
        core = {key: made.pop(key) for key in ("operation", "parents", "params")}
        record = {**modification_record(**core, metrics=metrics), **made}  # e.g. the compute it ran on
        check_folder(staging)  # the shards and index just written are readable
        weights = sorted(staging.glob("*.safetensors"))
        atomic_write_json(staging / LINEAGE_FILE, lineage_file(record, weights))
        _replace_folder(staging, out)
    report = {
        "kind": "ffn",
        "score": score,
        "compensation": compensation,
        "ridge": DEFAULT_RIDGE,
        "sequential": sequential,
        "seq_len": length,
        "params_dense": dense_params,
        "params_pruned": params,
        "params_ratio": params / dense_params,
        "flops_dense": dense_flops,
        "flops_pruned": flops,
        "flops_ratio": flops / dense_flops,
        "ffn_width_dense": ffn_dense,
        "widths": [b.width for b in blocks],
        "statistics_s": seconds["statistics_s"],
        **plan.timings,
        "seconds": metrics["seconds"],
    }
    return LayerwisePruning(out, windows, metrics, report)


def _idle_while_refitting(names: list[str], block: Any, score: str) -> list[str]:
    """The layer's parameters that scoring and the refit of `block` do not read: all but
    the down projection's (and the producers' for `magnitude`, which scores their rows)."""
    used = [block.down_name] + (block.producer_names if score == "magnitude" else [])
    return [n for n in names if not any(n.startswith(u + ".") for u in used)]


def _final_shapes(model: nn.Module, blocks: list, widths: list[int]) -> nn.Module:
    """A copy of the skeleton (`meta` parameters) with each FFN block cut to its width:
    the shapes the pruned layers will have, known before any is pruned."""
    import copy

    from modhifi_core.pruning.ffn import FFNBlock, remove_neurons

    shapes = copy.deepcopy(model)
    for block, width in zip(blocks, widths):
        copied = FFNBlock(block.name, block.producer_names, block.down_name, block.width)
        remove_neurons(shapes, copied, torch.arange(width))
    return shapes


def _open_streamed(folder: Path, dtype: torch.dtype, device: str) -> tuple[Any, Any]:
    """The folder's causal LM as a `StreamedModel` and its tokenizer (None when it has
    none). safetensors: read lazily; a `pytorch_model.bin` or GGUF: loaded whole (in
    `dtype`) by `load_hf`, held once as the weights the layers are read from."""
    from modhifi_core.language.layerwise import StreamedModel
    from modhifi_core.sources import check_folder, load_hf
    from modhifi_core.sources.huggingface import _load_tokenizer
    from modhifi_core.sources.lazy_weights import LazyWeights

    _, _, weights_format = check_folder(folder)
    if weights_format == "safetensors":
        return StreamedModel.open(folder, "causal-lm", dtype, device), _load_tokenizer(folder)
    loaded = load_hf(folder, kind="causal-lm", dtype=dtype)
    state = {name: param.detach() for name, param in loaded.model.named_parameters(remove_duplicate=False)}
    return StreamedModel.build(loaded.model, LazyWeights.from_state_dict(state), dtype, device), loaded.tokenizer


def _layerwise_windows(
    folder: Path, tokenizer: Any, calibration: str, n: int, length: int, seed: int, dtype: torch.dtype
) -> Tensor:
    """`calibration_windows` without holding the model: text windows need only the
    tokenizer; `synthetic` sampling needs the whole model, loaded for it and freed."""
    if calibration.startswith("text:"):
        return calibration_windows(None, tokenizer, calibration, n, length, seed)
    from modhifi_core.sources import load_hf

    model = load_hf(folder, kind="causal-lm", dtype=dtype).model
    try:
        return calibration_windows(model, tokenizer, calibration, n, length, seed)
    finally:
        del model


def _run_collecting(
    model: nn.Module, layer: nn.Module, block: Any, captured: list, stats: Any, hook: Any
) -> tuple[list[Tensor], Any]:
    """The layer's outputs on `captured`; with `block` and no given `stats`, its FFN
    statistics taken on the way (a hook on the down projection's input)."""
    from modhifi_core.language.layerwise import run_layer
    from modhifi_core.pruning.ffn import FFNStatistics

    if block is None or stats is not None:
        return run_layer(layer, captured), stats
    stats = FFNStatistics.empty(block.width)
    handle = model.get_submodule(block.down_name).register_forward_pre_hook(hook(stats))
    try:
        return run_layer(layer, captured), stats
    finally:
        handle.remove()


def _median_seconds(layer: nn.Module, captured: list, repeats: int) -> float:
    """Median seconds of the layer on `captured` (one window), after one untimed run."""
    import statistics as stats_module

    from modhifi_core.language.layerwise import run_layer

    run_layer(layer, captured)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run_layer(layer, captured)
        times.append(time.perf_counter() - began)
    return stats_module.median(times)


def _streamed_perplexity(streamed: Any, streams: dict[str, list], windows: Tensor) -> dict[str, Any]:
    """`perplexity` (the pruned stream) and `dense_perplexity` from the last layer's hidden
    states of each eval window (one window a forward through the head)."""
    import math

    import torch.nn.functional as F

    def window_nll(i: int, output: Any) -> float:
        ids = windows[i : i + 1]
        logits = output.logits[:, :-1].float()
        return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double().mean().item()

    result = {}
    for name, stream in streams.items():
        hidden = [entry[0][0] if entry[0] else entry[1]["hidden_states"] for entry in stream]
        nll = streamed.head_outputs(hidden, window_nll)
        result[name] = sum(nll) / len(nll)
    pruned, dense = math.exp(result["pruned"]), math.exp(result["dense"])
    tokens = int(windows.shape[0] * (windows.shape[1] - 1))
    return {
        "perplexity": pruned,
        "nll": result["pruned"],
        "tokens": tokens,
        "eval_tokens": int(windows.numel()),
        "dense_perplexity": dense,
        "perplexity_ratio": pruned / dense,
    }
