"""`modhifi evaluate`: accuracy (and, with a forget class, unlearning metrics) of a model."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.console import emit


def evaluate(
    model: Path = typer.Option(..., "--model", help="Checkpoint to evaluate."),
    dataset: str | None = typer.Option(None, help="Dataset (default: the one the model was trained on)."),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    forget_class: int | None = typer.Option(
        None, "--forget-class", help="Also report the unlearning metrics UA, RA, TA, MIA (%) for forgetting class K."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Test accuracy and per-class accuracy of a checkpoint (and, with --forget-class, UA, RA, TA and MIA)."""
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.data import data_spec, load_from_spec
    from modhifi_core.evaluation import evaluate_classifier

    ckpt = load_checkpoint(model)
    spec = ckpt.metadata.get("data") or data_spec(image_size=ckpt.config.image_size, channels=ckpt.config.in_channels)
    data = load_from_spec(spec, dataset=dataset, data_dir=str(data_dir) if data_dir else None)
    scores = evaluate_classifier(ckpt.model, data)
    if forget_class is not None:
        from flows.commands.unlearn import check_forget_class
        from modhifi_core.metrics import unlearning_metrics
        from modhifi_core.splits import class_split

        check_forget_class(forget_class, ckpt.config.num_classes)
        scores = {**scores, **unlearning_metrics(ckpt.model, class_split(data.train, forget_class), data.test)}
    emit({**scores, "model": str(model), "sha256": ckpt.sha256}, as_json, title=f"evaluation of {model}")
