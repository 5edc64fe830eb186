"""`modhifi finetune`: recover a pruned or unlearned model (distillation on synthetic
samples, or cross-entropy on real data) — the `--model`'s kind runs it
(`flows.commands.dispatch`)."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.dispatch import DEVICE, DTYPE, run_command


def finetune(
    model: str = typer.Option(..., "--model", help="Checkpoint to fine-tune (pruned or unlearned)."),
    out: Path = typer.Option(..., "--out", help="Where to write the fine-tuned checkpoint (.pt)."),
    teacher: Path | None = typer.Option(None, "--teacher", help="The original model to distil from."),
    data: str | None = typer.Option(
        None,
        "--data",
        help="synthetic:DIR (a `modhifi synthesize` folder), synthetic (synthesise from the teacher now), "
        "real (cross-entropy on the model's real training set) or a dataset name (digits, cifar10).",
    ),
    epochs: int | None = typer.Option(
        None,
        help="Epochs over the fine-tuning samples. 0: no training, only re-estimate BatchNorm statistics "
        "(a pruned model's cheapest repair; refused with frozen BatchNorm or a model without any, "
        "where nothing would change).",
    ),
    forget_class: int | None = typer.Option(
        None, "--forget-class", help="Leave this class out (default: the one the model's metadata records)."
    ),
    lr: float | None = typer.Option(None, help="SGD learning rate (default 0.01; 0.001 with frozen BatchNorm)."),
    batchnorm: str | None = typer.Option(
        None,
        help="recalibrate (re-estimate BN statistics afterwards) or frozen (keep them); "
        "default: frozen for an unlearned model (recalibrating undoes the unlearning), else recalibrate.",
    ),
    temperature: float | None = typer.Option(None, help="Distillation temperature."),
    batch_size: int | None = typer.Option(None, help="Samples per SGD step."),
    per_class: int | None = typer.Option(
        None, "--per-class", help="With --data synthetic: samples to synthesise per class."
    ),
    seed: int = typer.Option(0, min=0),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Fine-tune a checkpoint (distil on synthetic data or cross-entropy on real data); report accuracy."""
    options = dict(locals())
    for key in ("model", "out", "overwrite", "as_json"):
        options.pop(key)
    run_command("finetune", model, options, out, overwrite, as_json, f"fine-tuned {model}")
