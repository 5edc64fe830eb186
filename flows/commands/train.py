"""`modhifi train`: train a model of modhifi's own zoo on a bundled or local dataset — the
zoo kind runs it (`flows.commands.dispatch`; there is no `--model` source to load)."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.dispatch import DEVICE, DTYPE, run_command


def train(
    out: Path = typer.Option(..., "--out", help="Where to write the checkpoint (.pt)."),
    dataset: str | None = typer.Option(
        None,
        help="(default digits) "
        "digits (bundled), fashion-mnist (Debian dataset-fashion-mnist or --data-dir) or cifar10 (--data-dir).",
    ),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    architecture: str | None = typer.Option(None, "--model", help="resnet18 (default), resnet50, vgg11, vgg19 or vit."),
    width: int | None = typer.Option(None, min=1, help="Stem width (64 in the original networks)."),
    image_size: int | None = typer.Option(
        None, help="Resize images to this many px (default: 8 digits, 28 fashion-mnist, 32 cifar10)."
    ),
    train_per_class: int | None = typer.Option(
        None, min=1, help="Train on a seeded, stratified subset of this many images per class (default: all)."
    ),
    epochs: int | None = typer.Option(None, min=1),
    lr: float | None = typer.Option(None, min=0.0),
    batch_size: int | None = typer.Option(None, min=1),
    seed: int = typer.Option(0, min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Train a modhifi zoo model (SGD, cosine schedule, seeded) and report its test accuracy."""
    options = dict(locals())
    for key in ("out", "overwrite", "as_json"):
        options.pop(key)
    run_command("train", None, options, out, overwrite, as_json, "trained")
