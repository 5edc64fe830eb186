"""`modhifi finetune`: recover a modified model's accuracy by distilling from the original
model on synthetic samples (data-free), or by cross-entropy on a real training set — an
adapter over `modhifi_core.operations.finetune_checkpoint`.

A model that is (or descends from) an unlearned one is fine-tuned on the retained classes
with BatchNorm frozen, whatever produced it (this command or the pipeline): the
forgotten class is read from its metadata. Every option is checked before any work.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.loading import check_output
from flows.console import emit


def finetune(
    model: Path = typer.Option(..., "--model", help="Checkpoint to fine-tune (pruned or unlearned)."),
    out: Path = typer.Option(..., "--out", help="Where to write the fine-tuned checkpoint (.pt)."),
    teacher: Path | None = typer.Option(None, "--teacher", help="The original model to distil from."),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="synthetic:DIR (a `modhifi synthesize` folder), synthetic (synthesise from the teacher now), "
        "real (cross-entropy on the model's real training set) or a dataset name (digits, cifar10).",
    ),
    epochs: int = typer.Option(3, help="Epochs over the fine-tuning samples (0: only recalibrate BatchNorm)."),
    forget_class: int | None = typer.Option(
        None, "--forget-class", help="Leave this class out (default: the one the model's metadata records)."
    ),
    lr: float | None = typer.Option(None, help="SGD learning rate (default 0.01; 0.001 with frozen BatchNorm)."),
    batchnorm: str | None = typer.Option(
        None,
        help="recalibrate (re-estimate BN statistics afterwards) or frozen (keep them); "
        "default: frozen for an unlearned model (recalibrating undoes the unlearning), else recalibrate.",
    ),
    temperature: float = typer.Option(4.0, help="Distillation temperature."),
    batch_size: int = typer.Option(64),
    per_class: int = typer.Option(50, "--per-class", help="With --data synthetic: samples to synthesise per class."),
    seed: int = typer.Option(0, min=0),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Fine-tune a checkpoint (distil on synthetic data or cross-entropy on real data); report accuracy."""
    from modhifi_core.errors import InputError
    from modhifi_core.params import FinetuneParams

    kind, folder, dataset = parse_data(data)
    settings = FinetuneParams(
        data=kind,
        epochs=epochs,
        lr=lr,
        temperature=temperature,
        batch_size=batch_size,
        batchnorm=batchnorm,
        per_class=per_class,
    )
    if kind == "synthetic" and teacher is None:
        raise InputError("distillation on synthetic data needs --teacher (the original model)")
    check_output(out, overwrite)

    from flows.commands.loading import load_model_and_data
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.operations.finetune import finetune_checkpoint
    from modhifi_core.synthesis.artifact import load_synthetic, samples_digest

    student, splits = load_model_and_data(model, dataset, data_dir)
    guide = load_checkpoint(teacher) if teacher is not None else None
    samples = load_synthetic(folder, num_classes=student.config.num_classes) if folder is not None else None
    parents = {"synthetic": samples_digest(folder)} if folder is not None else {}
    outcome = finetune_checkpoint(
        student, guide, splits, settings, samples=samples, forget_class=forget_class, seed=seed, parents=parents
    )
    sha = outcome.save(out)
    emit({**outcome.metrics, "out": str(out), "sha256": sha}, as_json, f"fine-tuned {model}")


def parse_data(text: str) -> tuple[str, Path | None, str | None]:
    """`--data` as (kind, sample folder, dataset): 'synthetic:DIR', 'synthetic', 'real'
    (the model's own dataset) or a dataset name (real data of that dataset)."""
    from modhifi_core.data import DATASETS
    from modhifi_core.errors import InputError

    if text.startswith("synthetic:"):
        folder = Path(text.removeprefix("synthetic:"))
        if not folder.is_dir():
            raise InputError(f"synthetic sample folder not found: {folder}")
        return "synthetic", folder, None
    if text in ("synthetic", "real"):
        return text, None, None
    if text in DATASETS:
        return "real", None, text
    raise InputError(
        f"--data must be synthetic, synthetic:DIR, real or a dataset ({', '.join(DATASETS)}), got {text!r}"
    )
