"""Operation `prune_image_classifier`: structured pruning of an open-weight image
classifier (a Hugging Face model or a torchvision/timm network) with its evidence — what
`modhifi prune --model hf:DIR | torchvision:ARCH` runs.

* CNNs (HF ResNet/ConvNeXt, torchvision/timm networks): conv channels through the
  `prune` operation (Torch-Pruning groups; what cannot be pruned exactly is left
  untouched and named in the report), to `target_flops`; an HF ResNet keeps one width
  per stage, so its pruned config is stock (`vision.channels.prune_hf_classifier`).
* HF ViT/DeiT/Swin (LayerNorm transformers): MLP neurons (`vision.mlp.prune_hf_mlp`;
  attention is a pass-through), to `target_flops` or `target_params`.

Methods: CNNs `modhifi` (ModHiFi-P, least-squares compensation, BN recalibration),
`l1`, `l2`/`magnitude`, `random`; MLP neurons the language-model names (`modhifi` =
greedy removal order + least-squares refit, `modhifi-energy` = the paper's energy score +
refit, `wanda-sp`, `flap`, `magnitude`, `random`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from modhifi_core.checks import check_one_target
from modhifi_core.compute import place, requested
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.operations.prune import METHODS as CHANNEL_METHODS
from modhifi_core.operations.prune import prune, pruning_options
from modhifi_core.operations.prune_language_model import METHODS as NEURON_METHODS
from modhifi_core.pruning.report import latency_report
from modhifi_core.training import accuracy
from modhifi_core.vision.channels import prune_hf_classifier
from modhifi_core.vision.hf import classifier, stock_shape_difference
from modhifi_core.vision.mlp import kept_mlp_width, prune_hf_mlp


@dataclass
class ImagePruning:
    """The pruned model (a new module of the input's type), the metrics and the report."""

    model: nn.Module
    metrics: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


COMPONENTS = ("channels", "mlp")  # conv channels (any network), MLP neurons (an HF ViT/DeiT/Swin)


def check_options(
    model: nn.Module,
    method: str,
    target_flops: float | None,
    target_params: float | None,
    components: str = "channels",
    image_shape: tuple[int, int, int] | None = None,
    round_to: int = 1,
) -> None:
    """`InputError` for components, a method or a target that does not apply, before any
    calibration is made; with `image_shape`, also an MLP target out of reach of `model`."""
    if components not in COMPONENTS:
        raise InputError(f"unknown components {components!r}; choose one of {', '.join(COMPONENTS)}")
    methods = NEURON_METHODS if components == "mlp" else CHANNEL_METHODS
    if method not in methods:
        what = "a ViT/Swin (MLP neurons)" if components == "mlp" else "a CNN (channels)"
        raise InputError(f"unknown method {method!r} for {what}; choose one of {', '.join(methods)}")
    check_one_target(target_flops=target_flops, target_params=target_params)
    if components == "channels" and target_params is not None:
        raise InputError("channel pruning of a CNN takes --target-flops; --target-params is for ViT/Swin MLP neurons")
    if components == "mlp" and image_shape is not None:
        kept_mlp_width(model, image_shape, target_flops, target_params, round_to)


def channel_options(**settings: Any) -> dict[str, Any]:
    """A CNN's further `prune` arguments that `settings` (`pruning_options`' keywords:
    `method`, `compensation`, `score`, `allocation`, `compensation_order`, `rounds`,
    `ridge`, ...) describe: `pruning_options` less what `prune_image_classifier` takes as
    its own arguments."""
    own = ("method", "target_flops", "round_to", "seed")
    return {k: v for k, v in pruning_options(**settings).items() if k not in own}


def prune_image_classifier(
    model: nn.Module,
    calibration: ArrayDataset,
    *,
    method: str = "modhifi",
    target_flops: float | None = None,
    target_params: float | None = None,
    components: str = "channels",
    test: ArrayDataset | None = None,
    round_to: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    latency_batch: int = 8,
    latency_repeats: int = 3,
    channel_options: dict[str, Any] | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ImagePruning:
    """Prune `model` (an HF image classifier or a plain `model(images) -> logits`
    network; untouched) with `method` to `target_flops` (fraction of the FLOPs per image
    that remains) or, for MLP neurons, `target_params`, scored on `calibration` images.
    `components`: `channels` (conv channels, through Torch-Pruning's groups) or `mlp` (the
    MLP neurons of an HF ViT/DeiT/Swin; its attention is left as it is) — the caller
    knows which its model has (the image kinds' `LoadedImage.components`). `device`/`dtype`
    (`modhifi_core.compute.requested`): where `model` is moved and cast, in place, before
    anything runs; None for both leaves it where the caller put it.

    Metrics: `components` (`channels`/`mlp`), `method`, `flops_ratio`, `params_ratio`,
    `flops_floor` (channels: the least FLOPs ratio the groups can reach),
    `calibration_images`, `untouched` (what was left as it is and why: groups that cannot
    be pruned exactly, attention); `test_accuracy` and `dense_test_accuracy` (%) on `test` when
    given; `stock_config` for an HF model (its config describes the pruned shapes, so
    stock `from_pretrained` rebuilds it); `latency_*` (CPU, dense ÷ pruned, median of
    `latency_repeats` interleaved passes on a random batch of `latency_batch`; 0 skips);
    `seconds`. `channel_options`: a CNN's further `prune` arguments (`channel_options(**settings)`);
    a ViT/Swin's MLP neurons follow `method` alone (its score and compensation), so they
    are not read."""
    place(model, requested(device, dtype))
    check_options(model, method, target_flops, target_params, components)
    start = time.perf_counter()
    is_hf = hasattr(model, "config")
    if components == "mlp":
        score, compensation = NEURON_METHODS[method]
        result = prune_hf_mlp(
            model,
            calibration.images,
            target_flops=target_flops,
            target_params=target_params,
            score=score,
            compensation=compensation,
            round_to=round_to,
            seed=seed,
            batch_size=batch_size,
        )
        pruned = result.model
    else:
        options = {"seed": seed} if method == "random" else {}
        options.update(round_to=round_to, batch_size=batch_size, **(channel_options or {}))
        if is_hf:  # the `prune` operation, stock widths where the config can say them
            result = prune_hf_classifier(model, calibration, method, target_flops=target_flops, pruner=prune, **options)
            pruned = result.model
        else:
            result = prune(classifier(model), calibration, target_flops, method, **options)
            pruned = result.model
    pruned.eval()
    metrics: dict[str, Any] = {
        "components": components,
        "method": method,
        "flops_ratio": result.report["flops_ratio"],
        "params_ratio": result.report["params_ratio"],
        "calibration_images": len(calibration),
        "untouched": result.report.get("untouched_groups" if components == "channels" else "untouched", {}),
    }
    if components == "channels":  # the FLOPs ratio left with one channel per group (allow_floor prunes to it)
        metrics["flops_floor"] = result.report.get("flops_floor")
    if is_hf:
        metrics["stock_config"] = not stock_shape_difference(pruned)
    dense_net, pruned_net = classifier(model), classifier(pruned)
    if test is not None:
        metrics["dense_test_accuracy"] = accuracy(dense_net, test)
        metrics["test_accuracy"] = accuracy(pruned_net, test)
    if latency_repeats > 0:
        shape = calibration.image_shape
        metrics.update(latency_report(dense_net, pruned_net, shape, latency_batch, warmup=1, repeats=latency_repeats))
    metrics["seconds"] = time.perf_counter() - start
    return ImagePruning(pruned, metrics, result.report)
