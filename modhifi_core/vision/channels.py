"""Channel pruning of Hugging Face CNN image classifiers (ResNet, ConvNeXt) through the
engine's pruning loop, on the `LogitsOnly` adapter of `modhifi_core.vision.hf`:

    pruned = prune_hf_classifier(hf_resnet, images, "modhifi", target_flops=0.5)

An HF ResNet keeps the widths its config can say (`vision.stock_widths`): its folder
loads in stock transformers. Other CNNs keep per-layer widths (`modhifi_shapes.json`).
Kept apart from `vision.modify` (which re-exports it) so that pruning does not import the
unlearning methods (a DVC prune stage does not re-run when they change).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import Tensor, nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.pruning import PruningResult, prune_model
from modhifi_core.pruning.modhifi_p import FlopsTargetMissed
from modhifi_core.sources.rebuild import shape_record
from modhifi_core.vision.hf import LAYERNORM_TRANSFORMERS, LogitsOnly, model_type
from modhifi_core.vision.stock_widths import ResNetWidths, resnet_widths, write_stock_config

WIDTHS = ("stock", "free")
# Model types whose channel widths a stock config can be made to describe (vision.stock_widths).
STOCK_WIDTH_TYPES = ("resnet",)


def prune_hf_classifier(
    model: nn.Module,
    calibration: Tensor | ArrayDataset,
    method: str = "modhifi",
    *,
    widths: str | None = None,
    pruner: Callable[..., PruningResult] = prune_model,
    **options,
) -> PruningResult:
    """`pruner` (`prune_model`, or the `prune` operation with its defaults) on an HF image
    classifier: calibration images `(N, C, H, W)` as the model's `pixel_values`; options as
    for `pruner`. Returns the pruned HF model (a new module, the input is untouched) and
    the report, with `width_rule` and `shape_record` (layers resized from the dense build).

    `widths`: `stock` — the widths a stock config expresses (an HF ResNet: one width per
    stage, `vision.stock_widths`; needs uniform allocation), written into the pruned
    model's config, so its folder loads in stock transformers; `free` — every coupled group
    its own width (the folder then carries `modhifi_shapes.json`); None (default) — `stock`
    where the architecture has that rule (HF ResNet), the allocation is uniform and it
    meets the FLOPs target within ±0.02, else `free` (for a missed target a warning, and
    the miss in `report["stock_widths_missed"]`: one width per stage moves the FLOPs in
    coarse steps on a very narrow network)."""
    kind = model_type(model)
    if kind in LAYERNORM_TRANSFORMERS:
        # Torch-Pruning would also cut q/k/v output channels across heads; attention is a
        # pass-through here (method.md §3b): MLP neurons are pruned by the FFN pruner.
        raise InputError(
            f"{kind} models are pruned by MLP neurons only (modhifi_core.vision.mlp.prune_hf_mlp), "
            "not through prune_model"
        )
    rule = width_rule(model, widths, options.get("allocation"), options.get("round_to", 1))
    wrapper, missed = LogitsOnly(model).eval(), None
    try:
        result = pruner(wrapper, calibration, method=method, **options, **_hook(rule))
    except FlopsTargetMissed as error:
        if rule is None:
            raise
        if widths == "stock":
            raise FlopsTargetMissed(f"{error}{_STOCK_MISS}") from None
        missed, rule = str(error), None
        warnings.warn(f"{missed}{_STOCK_MISS}: pruned with per-layer widths instead", stacklevel=2)
        result = pruner(wrapper, calibration, method=method, **options)
    pruned = result.model.model.eval()
    if rule is not None:
        write_stock_config(pruned)
    report = dict(result.report)
    report["width_rule"] = "free" if rule is None else "stock"
    if missed is not None:
        report["stock_widths_missed"] = missed
    report["shape_record"] = shape_record(pruned, model)
    return PruningResult(pruned, report)


_STOCK_MISS = " with stock widths (one per ResNet stage; widths='free' keeps per-layer widths)"


def _hook(rule: ResNetWidths | None) -> dict:
    return {} if rule is None else {"widths": rule}


def width_rule(
    model: nn.Module, widths: str | None, allocation: str | None = None, round_to: int = 1
) -> ResNetWidths | None:
    """The pruning loop's `widths` rule for `widths` (see `prune_hf_classifier`) on an HF
    `model`, None for free widths; InputError for a choice that does not apply."""
    kind = model_type(model)
    if widths is not None and widths not in WIDTHS:
        raise InputError(f"widths must be one of {', '.join(WIDTHS)}, got {widths!r}")
    if widths == "free" or (widths is None and kind not in STOCK_WIDTH_TYPES):
        return None
    if kind not in STOCK_WIDTH_TYPES:
        raise InputError(f"stock widths exist for HF {', '.join(STOCK_WIDTH_TYPES)} models, not {kind!r}: use free")
    if allocation == "union":  # its point: each group its own count
        if widths == "stock":
            raise InputError("allocation union sizes every group on its own; stock widths need uniform")
        return None
    return resnet_widths(model, round_to)
