"""Operation `prune`: structured pruning (ModHiFi-P or a baseline) of any network
Torch-Pruning can trace, with physical channel removal.

    result = prune(model, calibration, target_flops=0.5)     # result.model, result.report

`prune_checkpoint` is the same operation on a loaded checkpoint, with the evidence every
adapter reports (accuracy before/after, FLOPs/params ratios, CPU latency) and the
metadata of the pruned model.
"""

from __future__ import annotations

import inspect
import time
from concurrent.futures import Executor

from torch import Tensor, nn

from modhifi_core.checkpoint import Checkpoint
from modhifi_core.compute import place, requested
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.errors import InputError
from modhifi_core.fidelity import DEFAULT_RIDGE
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.evaluate import check_classes
from modhifi_core.operations.outcome import Outcome
from modhifi_core.operations.statistics import ModelScores, ModelStatistics
from modhifi_core.pruning import PruningResult, magnitude_prune, modhifi_prune, random_prune
from modhifi_core.pruning.modhifi_p import TARGET_FLOPS
from modhifi_core.pruning.report import latency_report
from modhifi_core.training import accuracy

METHODS = ("modhifi", "magnitude", "l1", "l2", "random")


def prune(
    model: nn.Module,
    calibration: object,
    target_flops: float | None = TARGET_FLOPS,
    method: str = "modhifi",
    *,
    example_inputs: Tensor | None = None,
    ignored_layers: list[str] | None = None,
    statistics: ModelStatistics | None = None,
    scores: ModelScores | None = None,
    device: str | None = None,
    dtype: str | None = None,
    **options,
) -> PruningResult:
    """Prune `model` (untouched; the result holds a new module) to `target_flops` of its
    FLOPs (within ±0.02), or by `keep_fraction`.

    `calibration`: a tensor of inputs, a dataset, a list of input batches or a DataLoader
    (scores, compensation and BN recalibration use it). `method`: `modhifi` (ModHiFi-P),
    `l1`/`l2`/`magnitude` (= L2, Torch-Pruning group magnitude) or `random`.
    `example_inputs`: what Torch-Pruning traces (default: the first calibration input).
    `ignored_layers`: layers whose output channels stay (default: the classifier).
    `statistics`: the first round's statistics, if already collected (`collect_statistics`
    on this model and calibration). `scores`: modhifi's first-round scores, if already
    computed (`score(model, statistics, kind)` with `kind` the `score` option, default
    saliency); later rounds recompute both on the pruned model. Other options: `compensation` (`none`, `scalar`,
    `full`; default full for modhifi — the paper's is scalar — and none otherwise), `allocation`, `ridge`, `rounds`,
    `round_to`, `allow_floor` (a target below the architecture's FLOPs floor prunes to the
    floor instead of being refused), `batch_size`, `keep_fraction`, `seed` (random), `executor` (a
    `concurrent.futures.Executor`: every statistics pass — each round's statistics, the
    compensation's kept-set Grams — runs as shards on it, with the same result).
    `report`: `flops_ratio`, `params_ratio`, per-layer channels/FLOPs/params, rounds."""
    place(model, requested(device, dtype))
    common = {"example_inputs": example_inputs, "ignored_layers": ignored_layers, **options}
    if statistics is not None:
        common["statistics"] = statistics.layers
    if scores is not None:
        kind = options.get("score", "saliency")
        if method == "modhifi" and scores.kind != kind:
            raise InputError(f"the given scores are {scores.kind} scores, but pruning ranks by {kind} (prune.score)")
        common["scores"] = scores.layers  # the baselines refuse them
    if method == "modhifi":
        common.setdefault("compensation", "full")  # measured best at every target (benchmarks/README.md)
        return modhifi_prune(model, calibration, target_flops, **common)
    if method in ("magnitude", "l1", "l2"):
        return magnitude_prune(model, calibration, target_flops, p=1 if method == "l1" else 2, **common)
    if method == "random":
        return random_prune(model, calibration, target_flops, **common)
    raise InputError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")


def prune_checkpoint(
    source: Checkpoint,
    calibration: ArrayDataset,
    data: DatasetSplits,
    *,
    calibration_source: str = "synthetic",
    method: str = "modhifi",
    target_flops: float = TARGET_FLOPS,
    compensation: str | None = None,
    score: str = "saliency",
    compensation_order: str = "joint",
    allocation: str = "uniform",
    rounds: int | None = None,
    ridge: float = DEFAULT_RIDGE,
    round_to: int = 1,
    allow_floor: bool = False,
    seed: int = 0,
    batch_size: int = 128,
    latency_batch: int = 64,
    latency_repeats: int = 100,
    statistics: ModelStatistics | None = None,
    scores: ModelScores | None = None,
    parents: dict[str, str] | None = None,
    executor: Executor | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Outcome:
    """`prune` on `source.model` with `method` to `target_flops` (the pruning settings:
    `pruning_options`; the first round from `statistics` and `scores`, if given),
    measured on `data.test`: metrics `flops_ratio`, `params_ratio`, `test_accuracy`,
    `dense_test_accuracy` (%), where the first round's statistics and scores came from
    (`first_round_*`: given or collected/computed), `rounds`, `latency_*` (median of
    `latency_repeats` interleaved dense/pruned passes on a random batch of
    `latency_batch`) and `seconds`. `calibration_source`: what `calibration` is
    (recorded; `synthetic`, the data-free default, `real` or `gaussian`). `executor`: as
    in `prune`. A model of another class count than `data` is refused."""
    check_classes(source.model, data)  # else its accuracy would be measured on the wrong labels
    place(source.model, requested(device, dtype))
    start = time.perf_counter()
    settings = dict(method=method, target_flops=target_flops, compensation=compensation, score=score)
    settings.update(compensation_order=compensation_order, allocation=allocation, rounds=rounds, ridge=ridge)
    settings.update(round_to=round_to, allow_floor=allow_floor)
    options = pruning_options(**settings, seed=seed)
    result = prune(
        source.model,
        calibration,
        batch_size=batch_size,
        statistics=statistics,
        scores=scores,
        executor=executor,
        **options,
    )
    seconds = time.perf_counter() - start
    metrics = {
        "method": method,
        "compensation": options["compensation"],
        "calibration": calibration_source,
        "flops_ratio": result.report["flops_ratio"],
        "params_ratio": result.report["params_ratio"],
        "test_accuracy": accuracy(result.model, data.test),
        "dense_test_accuracy": accuracy(source.model, data.test),
        "first_round_statistics": result.report["first_round_statistics"],
        "first_round_scores": result.report["first_round_scores"],
        "rounds": len(result.report["rounds"]),
    }
    evidence = dict(metrics)
    metrics.update(latency_report(source.model, result.model, data.image_shape, latency_batch, repeats=latency_repeats))
    metrics["seconds"] = seconds
    run_params = {**settings, "latency_batch": latency_batch, "latency_repeats": latency_repeats, **options}
    run_params.update(calibration=calibration_source, seed=seed, calibration_samples=len(calibration))
    metadata = read_metadata(source.metadata).derive(
        "prune", source.sha256, parents=parents or {}, params=run_params, metrics=evidence, report=result.report
    )
    return Outcome(result.model, source.config, metadata, metrics)


SETTINGS = ("method", "target_flops", "compensation", "score", "compensation_order", "allocation", "rounds")
SETTINGS += ("ridge", "round_to", "allow_floor", "seed")


def pruning_options(**settings) -> dict:
    """The keyword arguments of `prune` for these `SETTINGS` (one not given: its default in
    `prune_checkpoint`'s signature, where each is written once). A null compensation is the
    method's default: the least-squares refit (`full`) for modhifi — better than the
    paper's scalar δ* at every FLOPs target on 3 trainings (benchmarks/README.md) — and
    none for the baselines. `score`, `compensation_order` and `allocation` are modhifi's
    only; `seed` the random baseline's only."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise TypeError(f"pruning_options() got unknown settings {sorted(unknown)}")
    defaults = inspect.signature(prune_checkpoint).parameters
    s = {name: settings.get(name, defaults[name].default) for name in SETTINGS}
    method = s["method"]
    options = {key: s[key] for key in ("method", "target_flops", "compensation", "rounds", "ridge", "round_to")}
    options["allow_floor"] = s["allow_floor"]
    options["compensation"] = s["compensation"] or ("full" if method == "modhifi" else "none")
    if method == "modhifi":
        options.update({key: s[key] for key in ("allocation", "score", "compensation_order")})
    if method == "random":
        options["seed"] = s["seed"]
    return options
