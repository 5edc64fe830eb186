"""The last stage of a network: the trailing layers at its coarsest resolution — what
ModHiFi-U edits by default (`unlearning.modhifi_u.select_layers`) and where the forgetting
audit's second probe reads (`durability.feature_sites`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def last_stage(model: nn.Module, candidates: list[str], example: Tensor) -> list[str]:
    """The trailing run of `candidates` at the coarsest output resolution (feature maps),
    or the layers of the last residual block (token sequences).

    A small input can shrink the last two stages both to 1x1 (a torchvision ResNet at
    16 px: `layer3` and `layer4`), which would make them one "stage"; the resolutions are
    then measured again on the input enlarged 2x, 4x or 8x, so that every stride shows."""
    shapes = _output_shapes(model, candidates, example)
    last = candidates[-1]
    if len(shapes[last]) == 4:
        if shapes[last][2:] == (1, 1):
            shapes = _strides_visible(model, candidates, example, shapes)
        stage = []
        for name in reversed(candidates):
            if shapes[name][2:] != shapes[last][2:]:
                break
            stage.insert(0, name)
        return stage
    parts = last.split(".")
    numeric = [index for index, part in enumerate(parts) if part.isdigit()]
    if not numeric:
        return [last]
    prefix = ".".join(parts[: numeric[-1] + 1]) + "."
    return [name for name in candidates if name.startswith(prefix)]


def _strides_visible(
    model: nn.Module, candidates: list[str], example: Tensor, shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Output shapes on `example` enlarged until the last feature map is wider than 1x1;
    `shapes` (those at the example's size) when that does not happen or a network with a
    fixed input size refuses the larger input."""
    for factor in (2, 4, 8):
        larger = F.interpolate(example, scale_factor=factor, mode="nearest")
        try:
            enlarged = _output_shapes(model, candidates, larger)
        except RuntimeError:  # e.g. a flatten into a Linear sized for the original input
            return shapes
        if enlarged[candidates[-1]][2:] != (1, 1):
            return enlarged
    return shapes


def _output_shapes(model: nn.Module, names: list[str], example: Tensor) -> dict[str, tuple[int, ...]]:
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            shapes[name] = tuple(output.shape)

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes
