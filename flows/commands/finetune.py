"""`modhifi finetune`: recover a modified model's accuracy by distilling from the original
model on synthetic samples (data-free), or by cross-entropy on a real training set.

Every option is checked before any work; the checkpoint is written only after success
(atomically), so bad input leaves nothing on disk. Accuracies are reported on the real
test set of the model's dataset; fine-tuning on synthetic data never sees real data.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flows.console import emit

if TYPE_CHECKING:
    from modhifi_core.checkpoint import Checkpoint
    from modhifi_core.data import ArrayDataset


def finetune(
    model: Path = typer.Option(..., "--model", help="Checkpoint to fine-tune (pruned or unlearned)."),
    out: Path = typer.Option(..., "--out", help="Where to write the fine-tuned checkpoint (.pt)."),
    teacher: Path | None = typer.Option(None, "--teacher", help="The original model to distil from."),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="synthetic:DIR (a `modhifi synthesize` folder), synthetic (synthesise from the teacher now), "
        "or a dataset name (digits, cifar10): cross-entropy on its training set.",
    ),
    epochs: int = typer.Option(3, help="Epochs over the fine-tuning samples (0: only recalibrate BatchNorm)."),
    forget_class: int | None = typer.Option(
        None,
        "--forget-class",
        help="Leave this class out (an unlearned model); default: the one `modhifi unlearn` recorded.",
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
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Fine-tune a checkpoint (distil on synthetic data or cross-entropy on real data), recalibrate BN; report accuracy.

    A sparse checkpoint (from `modhifi unlearn --prune`) keeps its pruned weights at zero."""
    from modhifi_core.data import DATASETS
    from modhifi_core.distillation import check_settings
    from modhifi_core.errors import InputError

    check_settings(epochs, 0.01 if lr is None else lr, temperature, batch_size, batchnorm or "recalibrate")
    kind, folder = parse_data(data, DATASETS)
    if kind == "synthetic" and teacher is None:
        raise InputError("distillation on synthetic data needs --teacher (the original model)")
    if per_class < 1:
        raise InputError(f"--per-class must be at least 1, got {per_class}")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a checkpoint file path")

    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
    from modhifi_core.data import data_spec, load_from_spec
    from modhifi_core.distillation import finetune as run_finetune
    from modhifi_core.synthesis import load_synthetic, synthesize
    from modhifi_core.training import accuracy
    from modhifi_core.unstructured.masks import Masks

    student = load_checkpoint(model)
    guide = load_checkpoint(teacher) if teacher is not None else None
    if guide is not None:
        check_compatible(student, guide)
    forget_class = forget_class if forget_class is not None else recorded_forget_class(student)
    num_classes = student.config.num_classes
    if forget_class is not None and not 0 <= forget_class < num_classes:
        raise InputError(f"forget class {forget_class} does not exist: the model has classes 0..{num_classes - 1}")
    classes = [k for k in range(num_classes) if k != forget_class] if forget_class is not None else None
    batchnorm = batchnorm or ("frozen" if forget_class is not None else "recalibrate")
    if lr is None:
        lr = 0.001 if batchnorm == "frozen" else 0.01
    spec = student.metadata.get("data") or data_spec(
        image_size=student.config.image_size, channels=student.config.in_channels
    )
    real = load_from_spec(
        spec, dataset=kind if kind != "synthetic" else None, data_dir=str(data_dir) if data_dir else None
    )
    parents = {"model": student.sha256}
    if guide is not None:
        parents["teacher"] = guide.sha256
    if kind == "synthetic" and folder is not None:
        samples = load_synthetic(folder, num_classes=num_classes)
        check_shape(samples, student)
        parents["synthetic"] = _samples_hash(folder)
    elif kind == "synthetic":
        shape = (student.config.in_channels, student.config.image_size, student.config.image_size)
        samples = synthesize(guide.model, per_class, image_shape=shape, classes=classes, seed=seed).samples
    else:
        samples = real.train

    test = real.test if classes is None else real.test.of_classes(classes)
    before = accuracy(student.model, test)
    masks = Masks.from_extra(student.extra, student.model)
    with masks.enforced(student.model) if masks is not None else nullcontext():
        log = run_finetune(
            student.model,
            guide.model if kind == "synthetic" else None,
            samples,
            epochs,
            lr=lr,
            temperature=temperature,
            batch_size=batch_size,
            classes=classes,
            seed=seed,
            batchnorm=batchnorm,
        )
    metrics = {"test_accuracy": accuracy(student.model, test), "test_accuracy_before": before}
    if guide is not None:
        metrics["teacher_test_accuracy"] = accuracy(guide.model, test)
    if forget_class is not None:
        forgotten = real.test.of_classes([forget_class])
        metrics["forget_accuracy"] = accuracy(student.model, forgotten)
    params = {"data": data, "epochs": epochs, "lr": lr, "temperature": temperature, "batch_size": batch_size}
    params.update(forget_class=forget_class, batchnorm=batchnorm, seed=seed)
    sha = save_checkpoint(
        out,
        student.model,
        student.config,
        metadata={
            "stage": "finetune",
            "data": spec,
            "parents": parents,
            "params": params,
            "metrics": metrics,
            "finetune_log": log,
        },
        extra=student.extra,
    )
    emit(
        {
            **metrics,
            "loss": log["loss"],
            "samples": log["samples"],
            "epochs": epochs,
            "final_loss": log["final_loss"],
            "seconds": log["seconds"],
            "forget_class": forget_class,
            "batchnorm": batchnorm,
            "lr": lr,
            "out": str(out),
            "sha256": sha,
        },
        as_json,
        title=f"fine-tuned {model}",
    )


def parse_data(text: str, datasets: tuple[str, ...]) -> tuple[str, Path | None]:
    """'synthetic:DIR' -> ('synthetic', DIR); 'synthetic' -> ('synthetic', None); a dataset name -> (name, None)."""
    from modhifi_core.errors import InputError

    if text.startswith("synthetic:"):
        folder = Path(text.removeprefix("synthetic:"))
        if not folder.is_dir():
            raise InputError(f"synthetic sample folder not found: {folder}")
        return "synthetic", folder
    if text == "synthetic" or text in datasets:
        return text, None
    raise InputError(f"--data must be synthetic, synthetic:DIR or a dataset ({', '.join(datasets)}), got {text!r}")


def check_compatible(student: Checkpoint, teacher: Checkpoint) -> None:
    """Teacher and student must see the same inputs and predict the same classes."""
    from modhifi_core.errors import InputError

    for field in ("num_classes", "in_channels", "image_size"):
        mine, theirs = getattr(student.config, field), getattr(teacher.config, field)
        if mine != theirs:
            raise InputError(f"teacher and model differ in {field} ({theirs} vs {mine})")


def check_shape(samples: ArrayDataset, student: Checkpoint) -> None:
    from modhifi_core.errors import InputError

    shape = (student.config.in_channels, student.config.image_size, student.config.image_size)
    if samples.image_shape != shape:
        raise InputError(f"synthetic samples have shape {samples.image_shape}, the model takes {shape}")


def recorded_forget_class(ckpt: Checkpoint) -> int | None:
    """The class `modhifi unlearn --forget-class K` recorded in the checkpoint, if any."""
    forget = (ckpt.metadata.get("unlearning") or {}).get("forget") or {}
    value = forget.get("class")
    return value if isinstance(value, int) else None


def _samples_hash(folder: Path) -> str:
    from modhifi_core.safe_io import sha256_file

    files = sorted(p for p in folder.iterdir() if p.suffix in (".npz", ".pt"))
    return ",".join(sha256_file(p) for p in files)
