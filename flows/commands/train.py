"""`modhifi train`: train a model from scratch on a dataset and save a checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.console import emit


def train(
    out: Path = typer.Option(..., "--out", help="Where to write the checkpoint (.pt)."),
    dataset: str = typer.Option("digits", help="digits (bundled) or cifar10 (needs --data-dir)."),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    model: str = typer.Option("resnet18", help="resnet18, resnet50, vgg11, vgg19 or vit."),
    width: int = typer.Option(16, min=1, help="Stem width (64 in the original networks)."),
    image_size: int | None = typer.Option(None, help="Resize images to this many px (default: 8 digits, 32 cifar10)."),
    epochs: int = typer.Option(30, min=1),
    lr: float = typer.Option(0.05, min=0.0),
    batch_size: int = typer.Option(64, min=1),
    seed: int = typer.Option(0, min=0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Train a model (SGD, cosine schedule, seeded) and report its test accuracy."""
    from modhifi_core.checkpoint import save_checkpoint
    from modhifi_core.data import data_spec, load_from_spec
    from modhifi_core.evaluation import evaluate_classifier
    from modhifi_core.models import ModelConfig, build_model
    from modhifi_core.training import TrainConfig, train_model

    size = image_size or (8 if dataset == "digits" else 32)
    channels = 1 if dataset == "digits" else 3
    spec = data_spec(dataset, size, channels, seed=0, data_dir=str(data_dir) if data_dir else None)
    data = load_from_spec(spec)
    config = ModelConfig(name=model, num_classes=data.num_classes, in_channels=channels, width=width, image_size=size)
    train_config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    import torch

    torch.manual_seed(seed)
    net = build_model(config)
    log = train_model(net, data.train, train_config)
    scores = evaluate_classifier(net, data)
    sha = save_checkpoint(
        out,
        net,
        config,
        metadata={"stage": "train", "data": spec, "params": vars(train_config), "metrics": scores},
    )
    emit(
        {
            "test_accuracy": scores["test_accuracy"],
            "train_accuracy": scores["train_accuracy"],
            "train_seconds": log["seconds"],
            "final_loss": log["final_loss"],
            "model": model,
            "out": str(out),
            "sha256": sha,
        },
        as_json,
        title=f"trained {model} on {dataset}",
    )
