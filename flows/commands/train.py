"""`modhifi train`: train a model from scratch on a dataset and save a checkpoint — an
adapter over `modhifi_core.operations.train`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flows.commands.loading import check_fits_in_memory, check_output
from flows.console import emit

# Training holds the weights, their gradients, the SGD momentum and a copy being saved.
TRAINING_COPIES = 4

if TYPE_CHECKING:
    from modhifi_core.params import DataParams, ModelParams


def train(
    out: Path = typer.Option(..., "--out", help="Where to write the checkpoint (.pt)."),
    dataset: str = typer.Option(
        "digits",
        help="digits (bundled), fashion-mnist (Debian dataset-fashion-mnist or --data-dir) or cifar10 (--data-dir).",
    ),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    model: str = typer.Option("resnet18", help="resnet18, resnet50, vgg11, vgg19 or vit."),
    width: int = typer.Option(16, min=1, help="Stem width (64 in the original networks)."),
    image_size: int | None = typer.Option(
        None, help="Resize images to this many px (default: 8 digits, 28 fashion-mnist, 32 cifar10)."
    ),
    train_per_class: int | None = typer.Option(
        None, min=1, help="Train on a seeded, stratified subset of this many images per class (default: all)."
    ),
    epochs: int = typer.Option(30, min=1),
    lr: float = typer.Option(0.05, min=0.0),
    batch_size: int = typer.Option(64, min=1),
    seed: int = typer.Option(0, min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Train a model (SGD, cosine schedule, seeded) and report its test accuracy."""
    from modhifi_core.params import DataParams, ModelParams, TrainParams

    native = {"digits": (8, 1), "fashion-mnist": (28, 1)}.get(dataset, (32, 3))  # (px, channels)
    size, channels = image_size if image_size is not None else native[0], native[1]
    d = DataParams(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        image_size=size,
        channels=channels,
        train_per_class=train_per_class,
    )
    m, t = ModelParams(name=model, width=width), TrainParams(epochs=epochs, lr=lr, batch_size=batch_size)
    check_output(out, overwrite)
    check_training_memory(d, m)

    from modhifi_core.operations.train import train_from_params

    outcome = train_from_params(d, m, t, seed)
    sha = outcome.save(out)
    shown = {k: v for k, v in outcome.metrics.items() if k != "per_class_accuracy"}
    emit({**shown, "model": model, "out": str(out), "sha256": sha}, as_json, title=f"trained {model} on {dataset}")


def check_training_memory(data: DataParams, model: ModelParams) -> None:
    """Refuse an architecture whose training state cannot fit in memory (counted on the
    meta device, before anything is allocated)."""
    from modhifi_core.models import ModelConfig, parameter_bytes

    # Both datasets have 10 classes; the classifier is a negligible part of the size anyway.
    config = ModelConfig(name=model.name, in_channels=data.channels, width=model.width, image_size=data.image_size)
    weights = parameter_bytes(config)
    what = f"training {model.name} of width {model.width} ({weights // 4:,} float32 parameters)"
    check_fits_in_memory(TRAINING_COPIES * weights, what)
