"""ModHiFi-P structured pruning (method.md §2) and the loop its baselines share.

One round: trace the coupled channel groups, collect statistics on the calibration
data, score (`score`: the saliency `R̃_ci` centred on the running mean of the BN after the
layer, the paper's implementation and the default; or the singleton fidelity `s_ci`),
turn the importance into keep levels, pick the keep fraction (given, or searched so
the predicted FLOPs meet the round's target), compensate the kept kernels, remove the
dropped channels physically, recalibrate BatchNorm. Aggressive FLOPs targets take
several rounds with geometrically spaced targets, statistics re-collected each round;
the first round can start from statistics and scores computed beforehand (the pipeline's
collect and score stages).
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from torch import Tensor, nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.calibration import calibration_batches
from modhifi_core.checks import check_one_target
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.fidelity import (
    DEFAULT_RIDGE,
    component_moments,
    component_scores,
    kernel_slices,
    saliency_order_scores,
)
from modhifi_core.models import output_layer_name
from modhifi_core.pruning.compensation import (
    ORDERS,
    full_compensation,
    scalar_compensation,
    sequential_compensation,
)
from modhifi_core.pruning.coupling import Coupling, close
from modhifi_core.pruning.flops import flops_by_layer
from modhifi_core.pruning.importance import FidelityImportance, RankedImportance
from modhifi_core.pruning.plan import FlopsModel, WidthsRule, fraction_for_flops, kept_at
from modhifi_core.pruning.report import size_report
from modhifi_core.statistics import LayerStatistics, collect_kept_gram, collect_statistics, unsupported_layers

COMPENSATIONS = ("none", "scalar", "full")
ALLOCATIONS = ("uniform", "union")
SCORES = ("saliency", "fidelity")
# Absolute tolerance on the achieved FLOPs ratio (fraction of dense FLOPs).
FLOPS_TOLERANCE = 0.02
TARGET_FLOPS = 0.5  # the default target of every pruner: half the dense FLOPs remain

# (model, coupling, statistics of the consumer layers, the round's given scores or None)
# -> an importance with keep_levels
ImportanceFactory = Callable[[nn.Module, Coupling, dict[str, LayerStatistics], dict[str, Tensor] | None], object]


class FlopsTargetMissed(InputError):
    """The pruned model's FLOPs ratio is off the target by more than `FLOPS_TOLERANCE`
    (`round_to` or a `widths` rule too coarse for this model); a caller may retry with
    finer widths."""


@dataclass
class PruningResult:
    """The pruned model (a new module; the input model is untouched) and its report."""

    model: nn.Module
    report: dict


def modhifi_prune(
    model: nn.Module,
    calibration: Tensor | ArrayDataset,
    target_flops: float | None = TARGET_FLOPS,
    *,
    keep_fraction: float | None = None,
    allocation: str = "uniform",
    compensation: str = "scalar",
    score: str = "saliency",
    compensation_order: str = "joint",
    ridge: float = DEFAULT_RIDGE,
    rounds: int | None = None,
    round_to: int = 1,
    batch_size: int = 128,
    **loop_options,
) -> PruningResult:
    """ModHiFi-P: scores on `calibration` images `(N, C, H, W)` — `score="saliency"` (R̃
    centred on the following BN's running mean, default) or `"fidelity"` (s_ci) — union rule
    per consumer, coupled groups kept iff any consumer keeps them, compensation `none`,
    `scalar` (δ*, the paper) or `full` (least-squares refit), BN recalibration.

    Target: `target_flops` (fraction of the dense FLOPs that remains, reached within
    ±0.02 in `rounds` rounds; default one round per halving), or `keep_fraction` (then
    `target_flops` must be None). `allocation`: `union` — one HiFi-set fraction k/c_in
    for every layer decides how many channels each group keeps (with `keep_fraction`,
    exactly the paper's per-output rule); `uniform` — every group keeps the same fraction
    of its channels, chosen in union-rule order (measured better at a FLOPs target:
    benchmarks/README.md). `compensation_order`: `joint` (every layer refit on the dense
    inputs) or `sequential` (each refit on the already pruned upstream activations towards
    the dense outputs; `compensation.sequential_compensation`)."""
    if allocation not in ALLOCATIONS:
        raise InputError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    if score not in SCORES:
        raise InputError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    base = saliency_importance if score == "saliency" else fidelity_importance
    factory = base if allocation == "union" else _uniform(base)
    return prune_with(
        model,
        calibration,
        factory,
        "modhifi",
        target_flops,
        keep_fraction=keep_fraction,
        compensation=compensation,
        ridge=ridge,
        rounds=rounds,
        round_to=round_to,
        batch_size=batch_size,
        needs_statistics=True,
        allocation=allocation,
        compensation_order=compensation_order,
        score=score,
        **loop_options,
    )


def fidelity_importance(
    model: nn.Module, coupling: Coupling, stats: dict[str, LayerStatistics], given: dict[str, Tensor] | None = None
) -> FidelityImportance:
    """`FidelityImportance` of the consumer layers from the singleton `s_ci` (`given`, else
    computed from `stats`), centred where the output feeds a BN; outputs with no centred
    energy are silent."""
    modules = dict(model.named_modules())
    raw = layer_scores("fidelity", model, coupling, stats, given)
    scores, silent = {}, {}
    for name, layer_stats in stats.items():
        _, _, energy = component_moments(layer_stats, kernel_slices(modules[name]), coupling.feeds_batchnorm(name))
        scores[modules[name]] = raw[name]
        silent[modules[name]] = energy <= 0
    return FidelityImportance(scores, silent)


def saliency_importance(
    model: nn.Module, coupling: Coupling, stats: dict[str, LayerStatistics], given: dict[str, Tensor] | None = None
) -> FidelityImportance:
    """Union-rule importance from the saliency `R̃_ci` (`given`, else computed from `stats`)
    centred on `m_c` (the running mean of the BN after each consumer, 0 where none), each
    output's row divided by its centred energy `E||Y_c − m_c||²` so that ties between
    outputs compare like for like."""
    modules = dict(model.named_modules())
    raw = layer_scores("saliency", model, coupling, stats, given)
    scores, silent = {}, {}
    for name, layer_stats in stats.items():
        centre = coupling.output_centre(name)
        scores[modules[name]] = saliency_order_scores(layer_stats, modules[name], centre, raw[name])
        silent[modules[name]] = layer_stats.output_sq <= 0
    return FidelityImportance(scores, silent)


def layer_scores(
    kind: str,
    model: nn.Module,
    coupling: Coupling,
    stats: dict[str, LayerStatistics],
    given: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per consumer layer, the `kind` score `(c_out, c_in)` of every component: `given`
    (checked to cover these layers with these shapes), else `fidelity.component_scores`
    on `stats`, centred as `coupling` says (the score operation computes the same)."""
    modules = dict(model.named_modules())
    if given is not None:
        return _given_scores(given, {name: tuple(modules[name].weight.shape[:2]) for name in stats})
    return {
        name: component_scores(kind, s, modules[name], coupling.output_centre(name), coupling.feeds_batchnorm(name))
        for name, s in stats.items()
    }


def _uniform(base: ImportanceFactory) -> ImportanceFactory:
    """`base`'s union-rule order within each group, the same kept fraction in every group."""
    return lambda model, coupling, stats, given: RankedImportance(base(model, coupling, stats, given))


def prune_with(
    model: nn.Module,
    calibration: Tensor | ArrayDataset,
    importance_for: ImportanceFactory,
    method: str,
    target_flops: float | None = TARGET_FLOPS,
    *,
    keep_fraction: float | None = None,
    compensation: str = "none",
    ridge: float = DEFAULT_RIDGE,
    rounds: int | None = None,
    round_to: int = 1,
    batch_size: int = 128,
    needs_statistics: bool = False,
    allocation: str = "uniform",
    compensation_order: str = "joint",
    score: str | None = None,
    recalibrate: bool = True,
    example_inputs: Tensor | None = None,
    ignored_layers: list[str] | None = None,
    statistics: dict[str, LayerStatistics] | None = None,
    scores: dict[str, Tensor] | None = None,
    executor: Executor | None = None,
    widths: WidthsRule | None = None,
    allow_floor: bool = False,
) -> PruningResult:
    """The shared pruning loop; every method is this call with its importance factory.
    `allocation` and `score` only label the report (the factory implements them).
    `recalibrate=False` skips BN recalibration after each round (an ablation only: the
    paper's L2 row had none).

    `calibration`: anything `calibration_batches` takes (a tensor, a dataset, a list of
    input batches, a DataLoader). `example_inputs`: the batch Torch-Pruning traces
    (default: the first calibration input). `ignored_layers`: layers whose output
    channels are never pruned (default: the classifier, `models.output_layer_name`).
    `statistics`: the first round's consumer-layer statistics when already collected on
    this model and these calibration batches (the pipeline's collect stage); later
    rounds re-collect on the pruned model. `scores`: the first round's per-layer `score`
    scores `(c_out, c_in)` when already computed from those statistics (the score stage;
    `score` methods only); later rounds recompute them on the pruned model.
    `executor`: every statistics pass of the loop (each round's statistics and the joint
    compensation's kept-set Grams) runs as shards on it (`modhifi_core.statistics`), the
    same sums as without; `sequential` compensation and BN recalibration run here.
    `widths`: None, every group's kept count chosen on its own (`round_to`); or a rule
    `(groups, counts) -> counts` snapping each round's counts to widths the architecture
    can express (`plan.WidthsRule`; e.g. `vision.stock_widths`), which also rounds.
    `allow_floor`: a `target_flops` below the architecture's floor (every prunable group
    down to `round_to` channels; the groups that cannot be pruned exactly stay) prunes to
    the floor instead of being refused; the report's `flops_floor` says it, `flops_ratio`
    what was reached."""
    batches = calibration_batches(calibration, batch_size)
    rounds = _validate(target_flops, keep_fraction, compensation, ridge, rounds, round_to, batch_size)
    if scores is not None and score is None:
        raise InputError(f"precomputed scores apply to modhifi only, not to {method}")
    if compensation_order not in ORDERS:
        raise InputError(f"compensation_order must be one of {', '.join(ORDERS)}, got {compensation_order!r}")
    start = time.perf_counter()
    dense = model.eval()
    model = copy.deepcopy(model).eval()
    device = next(model.parameters()).device
    example = (example_inputs if example_inputs is not None else batches[0][:1]).to(device)
    protected = list(ignored_layers) if ignored_layers is not None else [output_layer_name(model)]
    dense_flops, _ = flops_by_layer(model, example)
    floor, log = None, []
    for index in range(rounds):
        round_start = time.perf_counter()
        flops, per_layer = flops_by_layer(model, example)
        coupling = Coupling(model, example, protected)
        if not coupling.groups:
            reasons = "; ".join(f"{k}: {v}" for k, v in coupling.skipped.items()) or "no conv/linear layers"
            raise InputError(f"the model has no prunable channel groups ({reasons})")
        if index == 0 and coupling.skipped:
            untouched = "; ".join(f"{k} ({v})" for k, v in coupling.skipped.items())
            warnings.warn(f"channels left untouched, their groups cannot be pruned exactly: {untouched}", stacklevel=2)
        stats = {}
        if index == 0 and statistics is not None:
            stats = _given_statistics(statistics, coupling.consumer_layers(), sum(len(b) for b in batches))
        elif needs_statistics or compensation != "none":
            stats = collect_statistics(model, batches, coupling.consumer_layers(), executor=executor)
        importance = importance_for(model, coupling, stats, scores if index == 0 else None)
        levels = {group.root: importance.keep_levels(group.group) for group in coupling.groups}
        price = FlopsModel(model, coupling.groups, flops, per_layer)
        snap = functools.partial(widths, coupling.groups) if widths is not None else None
        statistics_seconds = time.perf_counter() - round_start
        if keep_fraction is not None:
            fraction, kept = keep_fraction, kept_at(levels, keep_fraction, round_to, snap)
        else:
            if index == 0:
                floor = price(kept_at(levels, 0.0, round_to, snap)) / dense_flops
                _check_reachable(floor, target_flops, round_to, coupling.skipped, allow_floor)
            goal = dense_flops * max(target_flops, floor) ** ((index + 1) / rounds)
            fraction, kept, _ = fraction_for_flops(levels, price, goal, round_to, snap)
        kept = close(kept, coupling.groups)  # tied channels (ghost modules) go whole
        if compensation != "none" and compensation_order == "sequential":
            sequential_compensation(
                model,
                batches,
                coupling.kept_inputs(kept),
                functools.partial(coupling.mask, kept),
                coupling.feeds_batchnorm,
                compensation,
                ridge,
            )
        elif compensation != "none":
            _compensate(model, coupling, stats, batches, kept, compensation, ridge, executor)
        coupling.prune(kept)
        if recalibrate:
            recalibrate_batchnorm(model, batches)
        log.append(
            {
                "round": index + 1,
                "keep_fraction": fraction,
                "flops_ratio": flops_by_layer(model, example)[0] / dense_flops,
                "statistics_seconds": statistics_seconds,
                "seconds": time.perf_counter() - round_start,
            }
        )
    report = size_report(dense, model, example)
    aimed = max(target_flops, floor) if target_flops is not None else None
    if aimed is not None and abs(report["flops_ratio"] - aimed) > FLOPS_TOLERANCE:
        raise FlopsTargetMissed(
            f"target_flops {target_flops} cannot be met within ±{FLOPS_TOLERANCE} with round_to={round_to} "
            f"(closest reached: {report['flops_ratio']:.3f})"
        )
    report.update(
        {
            "method": method,
            "allocation": allocation,
            "target_flops": target_flops,
            "flops_floor": floor,
            "keep_fraction": keep_fraction,
            "compensation": compensation,
            "compensation_order": compensation_order,
            "score": score,
            "ridge": ridge,
            "bn_recalibration": recalibrate,
            "round_to": round_to,
            "calibration_samples": sum(len(b) for b in batches),
            "first_round_statistics": "given" if statistics is not None else "collected",
            "first_round_scores": "given" if scores is not None else "computed",
            "rounds": log,
            "untouched_groups": coupling.skipped,
            "unsupported_layers": unsupported_layers(dense),
            "seconds": time.perf_counter() - start,
        }
    )
    return PruningResult(model, report)


def _compensate(
    model: nn.Module,
    coupling: Coupling,
    stats: dict[str, LayerStatistics],
    batches: list[Tensor],
    kept: dict[str, Tensor],
    mode: str,
    ridge: float,
    executor: Executor | None,
) -> None:
    kept_inputs = coupling.kept_inputs(kept)
    grams = collect_kept_gram(model, batches, kept_inputs, executor=executor)
    modules = dict(model.named_modules())
    for name, index in kept_inputs.items():
        feeds_bn = coupling.feeds_batchnorm(name)
        if mode == "scalar":
            scalar_compensation(modules[name], stats[name], grams[name], index, feeds_bn, ridge)
        else:
            full_compensation(modules[name], stats[name], grams[name], index, feeds_bn, ridge)


def _given_statistics(
    statistics: dict[str, LayerStatistics], layers: list[str], samples: int
) -> dict[str, LayerStatistics]:
    """The given statistics, checked to describe these consumer layers and this many samples."""
    missing = sorted(set(layers) - set(statistics))
    if missing:
        raise InputError(f"the given statistics lack layers {missing[:3]}: collect them on this model")
    counts = {int(s.samples) for name, s in statistics.items() if name in layers}
    if counts != {samples}:
        raise InputError(f"the given statistics cover {sorted(counts)} samples, the calibration data {samples}")
    return {name: statistics[name] for name in layers}


def _given_scores(scores: dict[str, Tensor], shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """The given scores, checked to be one finite tensor per consumer layer with its `(c_out, c_in)`."""
    if set(scores) != set(shapes):
        odd = sorted(set(scores) ^ set(shapes))
        raise InputError(f"the given scores do not match the model's prunable layers (differing: {odd[:3]})")
    for name, shape in shapes.items():
        value = scores[name]
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(shape) or not bool(value.isfinite().all()):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise InputError(f"the given scores of layer {name} are {got}, expected finite {tuple(shape)}")
    return {name: scores[name].double() for name in shapes}


def _validate(
    target_flops: float | None,
    keep_fraction: float | None,
    compensation: str,
    ridge: float,
    rounds: int | None,
    round_to: int,
    batch_size: int,
) -> int:
    """Check the options up front; returns the number of rounds."""
    check_one_target(target_flops=target_flops, keep_fraction=keep_fraction)
    if compensation not in COMPENSATIONS:
        raise InputError(f"compensation must be one of {', '.join(COMPENSATIONS)}, got {compensation!r}")
    if not ridge >= 0:
        raise InputError(f"ridge must be >= 0, got {ridge}")
    if round_to < 1 or batch_size < 1:
        raise InputError(f"round_to and batch_size must be >= 1, got {round_to} and {batch_size}")
    if rounds is not None and rounds < 1:
        raise InputError(f"rounds must be >= 1, got {rounds}")
    if rounds is not None:
        return rounds
    return 1 if target_flops is None else max(1, math.ceil(math.log(target_flops) / math.log(0.5) - 1e-9))


def _check_reachable(
    floor: float, target_flops: float, round_to: int, skipped: dict[str, str], allow_floor: bool
) -> None:
    """Refuse, in one line saying the floor and why, a target below `floor` (the FLOPs
    ratio left with `round_to` channels per prunable group) unless `allow_floor`."""
    if target_flops >= floor or allow_floor:
        return
    untouched = f"; {len(skipped)} channel groups cannot be pruned exactly and stay whole" if skipped else ""
    raise InputError(
        f"target_flops {target_flops} is below this architecture's floor of {floor:.3f}: keeping "
        f"{max(round_to, 1)} channel(s) per prunable group already leaves {floor:.3f} of the FLOPs{untouched} "
        "(allow_floor / --allow-floor prunes to the floor instead)"
    )
