"""ModHiFi-U: class unlearning by editing High-Fidelity components, no fine-tuning (method.md §3).

1. Score every component `(c, i)` of the chosen layers with the singleton Subset Fidelity
   `s_ci` (`modhifi_core.fidelity`), on samples of the class to forget only (D_f by
   default; synthetic samples of that class work the same — pass `forget_images`).
2. The HiFi components of output channel `c` are its top `fraction` of input channels by
   `s_ci` (at least one): the inputs that carry most of `c`'s response to the forget class.
3. Edit their kernel slices `W[c, i]`: zero them in BatchNorm networks; negate them in
   LayerNorm networks with residual streams (zeroing there is largely undone by the
   residual path and the re-normalisation; negation reverses the component's push).

Chosen layers (`layers`): None = the last stage — for conv networks the trailing run of
layers at the coarsest output resolution (ResNet `layer4`, the last VGG block), for
token networks the layers of the last residual block (ViT `blocks.<last>`); an int N =
the last N scored layers; a string = an fnmatch pattern on module names ("layer4.*");
a tuple = explicit names. The classifier is scored only when named explicitly.

`fraction` is the HiFi hyper-parameter: the share of each output channel's inputs that
counts as HiFi (rounded up, at least one). Contributions in a trained network are
concentrated, so a small share carries most of the forget class's response. The default,
0.09 (12 of 128 inputs in the digits ResNet-18's last stage, 6 of 64), was chosen on
the default digits model, where the effect is sharp in this parameter. Over its 10
classes, on two trainings of it (benchmarks/README.md, "Unlearning"): 0.07 leaves up to
6 classes partly remembered; 0.09 forgets 8-9 classes completely with mean retain
accuracy 94-99%; 0.12 costs up to 16 points of retain accuracy on the hardest class.
One class per trained model resists (class 8 of one: UA 4% even at 0.12; class 7 of the
other: UA 45% at 0.09).

`contrastive=True` (beyond the paper) also scores the components on retain samples and
spares a forget-HiFi component that is also in the retain top-`retain_fraction` (0.05),
so only components specific to the forgotten class are edited. Sparing weakens the edit,
so pair it with a larger `fraction` (0.2): at matched forgetting it keeps 1.5-2 more
points of retain accuracy on average (worst class: 93 vs 84) — it helps, modestly.

Scores are uncentred by default, also in BatchNorm networks, deliberately unlike
ModHiFi-P: centring removes each component's mean over the scoring samples, and with
forget-class samples only that mean *is* the class's characteristic response — the BN
that follows subtracts the population mean, not the class mean. Measured on the digits
model (last stage, fraction 0.1, classes 1/3/8): centred scores forget 100/100/3% of the
classes, uncentred 100/100/100%. `centered=True` restores the ModHiFi-P variant.
All layers are scored on the original model in one statistics pass, then edited.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modhifi_core.batchnorm import has_batchnorm
from modhifi_core.errors import InputError
from modhifi_core.fidelity import scores_from_statistics
from modhifi_core.models import classifier_name
from modhifi_core.splits import ForgetSplit
from modhifi_core.statistics import collect_statistics, prunable_layers
from modhifi_core.unlearning.contract import UnlearnResult, check_choice, check_float, check_int, run_method
from modhifi_core.unstructured.masks import Masks

EDITS = ("auto", "zero", "negate")


@dataclass(frozen=True)
class ModHiFiUParams:
    """See the module docstring. `samples`/`retain_samples`: at most this many scoring
    images (0 = all); `batch_size`: scoring batch."""

    layers: str | int | tuple[str, ...] | None = None
    fraction: float = 0.09
    edit: str = "auto"
    centered: bool = False
    contrastive: bool = False
    retain_fraction: float = 0.05
    forget_images: Tensor | None = None
    retain_images: Tensor | None = None
    samples: int = 0
    retain_samples: int = 512
    batch_size: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.layers, bool) or not isinstance(self.layers, (str, int, tuple, type(None))):
            raise InputError(f"layers must be None, a count, a name pattern or a tuple of names; got {self.layers!r}")
        if isinstance(self.layers, int):
            check_int("layers", self.layers, 1)
        check_float("fraction", self.fraction, 0.0, 1.0)
        check_choice("edit", self.edit, EDITS)
        if not isinstance(self.centered, bool):
            raise InputError(f"centered must be true or false, got {self.centered!r}")
        if not isinstance(self.contrastive, bool):
            raise InputError(f"contrastive must be true or false, got {self.contrastive!r}")
        check_float("retain_fraction", self.retain_fraction, 0.0, 1.0)
        for name in ("forget_images", "retain_images"):
            images = getattr(self, name)
            if images is not None and (not isinstance(images, Tensor) or images.ndim != 4 or len(images) == 0):
                raise InputError(f"{name} must be a non-empty image tensor (N, C, H, W)")
        check_int("samples", self.samples, 0)
        check_int("retain_samples", self.retain_samples, 0)
        check_int("batch_size", self.batch_size, 1)


def modhifi_u(model: nn.Module, split: ForgetSplit, masks: Masks | None = None, **hyperparameters) -> UnlearnResult:
    """ModHiFi-U: zero (BN) or negate (LayerNorm) the forget class's HiFi components."""
    return run_method("modhifi", _modhifi_u, ModHiFiUParams, model, split, masks, hyperparameters)


def _modhifi_u(model: nn.Module, split: ForgetSplit, params: ModHiFiUParams, masks: Masks | None) -> dict:
    if split.forget_class is None and params.forget_images is None:
        raise InputError("ModHiFi-U forgets a class: use a class-wise split (or pass forget_images)")
    forget = params.forget_images if params.forget_images is not None else split.forget.images
    forget = forget[: params.samples or len(forget)]
    names = select_layers(model, params.layers, forget[:1])
    edit = params.edit if params.edit != "auto" else default_edit(model)
    hifi = hifi_components(model, forget, names, params.fraction, params.centered, params.batch_size)
    spared = {}
    if params.contrastive:
        retain = params.retain_images if params.retain_images is not None else split.retain.images
        retain = retain[: params.retain_samples or len(retain)]
        retain_hifi = hifi_components(model, retain, names, params.retain_fraction, params.centered, params.batch_size)
        for name in names:
            spared[name] = int((hifi[name] & retain_hifi[name]).sum())
            hifi[name] &= ~retain_hifi[name]
    modules = dict(model.named_modules())
    edited = {}
    with torch.no_grad():
        for name in names:
            weight = modules[name].weight
            slices = weight.view(weight.shape[0], weight.shape[1], -1)
            selected = hifi[name].to(weight.device)
            if edit == "zero":
                slices[selected] = 0.0
            else:
                slices[selected] = -slices[selected]
            edited[name] = int(selected.sum())
    return {"layers": names, "edit": edit, "edited_components": edited, "spared_components": spared}


def default_edit(model: nn.Module) -> str:
    """'negate' for LayerNorm networks without BatchNorm (residual streams), else 'zero'."""
    layer_norm = any(isinstance(m, nn.LayerNorm) for m in model.modules())
    return "negate" if layer_norm and not has_batchnorm(model) else "zero"


def hifi_components(
    model: nn.Module, images: Tensor, names: list[str], fraction: float, centered: bool, batch_size: int = 128
) -> dict[str, Tensor]:
    """Boolean `(c_out, c_in)` per layer: each output channel's top-`fraction` inputs by
    singleton fidelity on `images`."""
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    stats = collect_statistics(model, batches, layers=names)
    modules = dict(model.named_modules())
    result = {}
    for name in names:
        scores = scores_from_statistics(stats[name], modules[name], centered=centered)
        k = max(1, math.ceil(fraction * scores.shape[1]))
        top = torch.topk(scores, k, dim=1).indices
        result[name] = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True).cpu()
    return result


def select_layers(model: nn.Module, layers: str | int | tuple[str, ...] | None, example: Tensor) -> list[str]:
    """Resolve the `layers` hyper-parameter to module names (see the module docstring)."""
    scored = prunable_layers(model)
    if isinstance(layers, tuple):
        unknown = [name for name in layers if name not in scored]
        if unknown:
            raise InputError(f"no scorable (Conv2d/Linear) layer named {unknown[0]!r}")
        return list(layers)
    if isinstance(layers, str):
        names = [name for name in scored if fnmatch.fnmatchcase(name, layers)]
        if not names:
            raise InputError(f"no scorable layer matches {layers!r}")
        return names
    candidates = [name for name in scored if name != classifier_name(model)]
    if not candidates:
        raise InputError("the model has no scorable layer besides its classifier")
    if isinstance(layers, int):
        return candidates[-layers:]
    return last_stage(model, candidates, example)


def last_stage(model: nn.Module, candidates: list[str], example: Tensor) -> list[str]:
    """The trailing run of `candidates` at the coarsest output resolution (feature maps),
    or the layers of the last residual block (token sequences)."""
    shapes = _output_shapes(model, candidates, example)
    last = candidates[-1]
    if len(shapes[last]) == 4:
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
