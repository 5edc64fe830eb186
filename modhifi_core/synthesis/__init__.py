"""Calibration data from the model itself (method.md §4): `synthesize` makes a
class-balanced labelled sample set by model inversion (DeepInversion), gaussian noise,
or reads a user folder, and judges it with the model; `save_synthetic` writes it as a
dataset artifact with a PNG preview.

    result = synthesize(model, per_class=100, image_shape=(1, 8, 8))
    save_synthetic(result, "outputs/synthetic")
    samples = load_synthetic("outputs/synthetic")     # an ArrayDataset
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modhifi_core.batchnorm import has_batchnorm
from modhifi_core.checks import check_class_exists
from modhifi_core.compute import place, requested
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.synthesis.artifact import check_output_folder, load_synthetic, save_synthetic
from modhifi_core.synthesis.inversion import InversionConfig, invert
from modhifi_core.synthesis.quality import agreement, diversity
from modhifi_core.synthesis.sources import folder_samples, gaussian_samples
from modhifi_core.training import predict

METHODS = ("deepinversion", "gaussian", "folder")
PER_CLASS = 50  # samples made per class by default (`synthesize`, and whoever synthesises for an operation)
NO_BATCHNORM_WARNING = (
    "the model has no BatchNorm layers, so inversion uses class cross-entropy and image priors only; "
    "expect less realistic samples than DeepInversion gives (check the agreement and the preview)"
)

__all__ = [
    "METHODS",
    "InversionConfig",
    "SynthesisResult",
    "check_output_folder",
    "load_synthetic",
    "save_synthetic",
    "synthesize",
]


@dataclass(frozen=True)
class SynthesisResult:
    """Labelled samples and how the model judges them.

    `samples`: images `(N, C, H, W)` in the model's input space, labels `(N,)` = the
    target classes. `predicted`: the model's labels `(N,)`. `quality`: `agreement` (% of
    samples the model assigns to their target), `agreement_per_class` (one per entry of
    `classes`), `diversity` (see quality.py), with reference data also `diversity_real`
    and `diversity_ratio`; for inversion the BN-statistics loss at the first and last
    step. `seconds`: wall-clock time of making the samples (quality excluded).
    """

    samples: ArrayDataset
    predicted: Tensor
    method: str
    classes: list[int]
    per_class: int | None
    seed: int
    quality: dict[str, Any]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def synthesize(
    model: nn.Module,
    per_class: int | None = PER_CLASS,
    *,
    image_shape: tuple[int, int, int],
    method: str = "deepinversion",
    classes: list[int] | None = None,
    config: InversionConfig = InversionConfig(),
    seed: int = 0,
    source: str | Path | None = None,
    reference: ArrayDataset | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> SynthesisResult:
    """`per_class` samples of each of `classes` (default: every class of the model).

    `method`: `deepinversion` (model inversion; without BatchNorm, class cross-entropy +
    priors only, with a warning), `gaussian` (standard-normal noise labelled with the
    target classes: the baseline), or `folder` (the samples in folder `source`, at most
    `per_class` per class, None: all; unlabelled ones get the model's prediction and are
    left out of the agreement). `image_shape` is the model's input `(C, H, W)`;
    `reference` (real data, optional) puts the diversity on the real-data scale.
    Seeded; the model is left unchanged. Bad input raises `InputError`.
    """
    place(model, requested(device, dtype))
    if method not in METHODS:
        raise InputError(f"unknown synthesis method {method!r}; choose one of {', '.join(METHODS)}")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise InputError(f"per_class must be a positive integer, got {per_class!r}")
    if per_class is None and method != "folder":
        raise InputError(f"method {method!r} needs per_class (samples to make per class)")
    if method == "folder" and source is None:
        raise InputError("method 'folder' needs a source folder of samples")
    num_classes = _num_classes(model, image_shape)
    classes = _check_classes(classes, num_classes)
    notes: list[str] = []
    quality: dict[str, Any] = {}
    start = time.perf_counter()
    if method == "folder":
        samples, pseudo = folder_samples(model, source, image_shape, num_classes, classes, per_class)
    else:
        labels = torch.tensor(classes, dtype=torch.int64).repeat(per_class)  # interleaved: balanced batches
        pseudo = torch.zeros(len(labels), dtype=torch.bool)
        if method == "gaussian":
            images = gaussian_samples(labels, image_shape, seed)
        else:
            if not has_batchnorm(model):
                notes.append(NO_BATCHNORM_WARNING)
                warnings.warn(NO_BATCHNORM_WARNING, stacklevel=2)
            images, log = invert(model, labels, image_shape, config, seed)
            if log.bn_layers:
                quality.update(bn_loss_start=log.bn_loss_start, bn_loss_end=log.bn_loss_end)
        samples = ArrayDataset(images.contiguous(), labels, num_classes)
    seconds = time.perf_counter() - start
    predicted = predict(model, samples.images).argmax(1)
    scored = torch.where(pseudo, -1, samples.labels)  # pseudo-labels agree by construction
    quality["agreement"] = agreement(predicted, scored)
    per_class_masks = [samples.labels == k for k in classes]
    quality["agreement_per_class"] = [agreement(predicted[mask], scored[mask]) for mask in per_class_masks]
    quality["diversity"] = diversity(model, samples)
    if method == "folder":
        quality["pseudo_labelled"] = int(pseudo.sum())
    if reference is not None:
        quality["diversity_real"] = diversity(model, reference.of_classes(classes))
        quality["diversity_ratio"] = quality["diversity"] / quality["diversity_real"]
    return SynthesisResult(
        samples=samples,
        predicted=predicted,
        method=method,
        classes=classes,
        per_class=per_class,
        seed=seed,
        quality=quality,
        seconds=seconds,
        config=asdict(config) if method == "deepinversion" else {},
        warnings=tuple(notes),
    )


def _num_classes(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise InputError(f"image_shape must be (channels, height, width), got {tuple(image_shape)}")
    try:
        logits = predict(model, torch.zeros(2, *image_shape))
    except RuntimeError as exc:
        raise InputError(f"the model does not take inputs of shape {tuple(image_shape)}: {exc}") from None
    return int(logits.shape[1])


def _check_classes(classes: list[int] | None, num_classes: int) -> list[int]:
    if classes is None:
        return list(range(num_classes))
    if len(classes) == 0:
        raise InputError("classes must name at least one class")
    for k in classes:
        check_class_exists(k, num_classes)
    if len(set(classes)) != len(classes):
        raise InputError(f"classes must be distinct, got {classes}")
    return list(classes)
