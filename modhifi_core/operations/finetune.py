"""Operation `finetune`: recover a modified model's accuracy, data-free by default.

The model-level operation is `modhifi_core.distillation.finetune` (distillation from a
teacher on synthetic samples, or cross-entropy on real labelled data, then BN
recalibration or frozen BN). `finetune_checkpoint` is that operation on a loaded
checkpoint, as every adapter runs it: a model whose metadata (or an ancestor's) records
a forgotten class is fine-tuned on the retained classes only, with BatchNorm frozen —
recalibrating, or distilling the forgotten class, would teach it back.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

from torch import nn

from modhifi_core.checkpoint import Checkpoint
from modhifi_core.checks import check_class_exists
from modhifi_core.compute import place, requested
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.distillation import check_settings, finetune
from modhifi_core.errors import InputError
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.outcome import Outcome
from modhifi_core.synthesis import PER_CLASS, synthesize
from modhifi_core.training import accuracy
from modhifi_core.unstructured.masks import Masks

_DISTIL = inspect.signature(finetune).parameters  # its defaults are this operation's


def finetune_checkpoint(
    student: Checkpoint,
    teacher: Checkpoint | None,
    data: DatasetSplits,
    *,
    finetune_data: str = "synthetic",
    epochs: int = _DISTIL["epochs"].default,
    lr: float | None = None,
    temperature: float = _DISTIL["temperature"].default,
    batch_size: int = _DISTIL["batch_size"].default,
    batchnorm: str | None = None,
    per_class: int = PER_CLASS,
    samples: ArrayDataset | None = None,
    forget_class: int | None = None,
    seed: int = 0,
    parents: dict[str, str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Outcome:
    """Fine-tune a copy of `student.model`.

    `finetune_data == "synthetic"`: distil from `teacher` on `samples` (synthesised from
    the teacher now, `per_class` per retained class, when None) at `temperature`; `real`:
    cross-entropy on `data.train`. `epochs` of SGD at `lr` (None: 0.001 with frozen
    BatchNorm, else 0.01) in batches of `batch_size`; `batchnorm`: `recalibrate` or
    `frozen` (None: frozen for an unlearned model, else recalibrate). `forget_class`
    overrides the class the metadata records as forgotten. A sparse student keeps its
    pruned weights at zero. Metrics:
    `test_accuracy` / `test_accuracy_before` on the test set without the forgotten
    class, `forget_accuracy`, `teacher_test_accuracy`, the fine-tuning log."""
    meta = read_metadata(student.metadata)
    forgotten = forget_class if forget_class is not None else meta.forgotten_class
    num_classes = student.config.num_classes
    if forgotten is not None:
        check_class_exists(forgotten, num_classes, "forget class")
    classes = None if forgotten is None else [k for k in range(num_classes) if k != forgotten]
    batchnorm = batchnorm or ("frozen" if forgotten is not None else "recalibrate")
    lr = lr or (0.001 if batchnorm == "frozen" else 0.01)
    check_settings(epochs, lr, temperature, batch_size, batchnorm)
    if epochs == 0:
        _check_recalibration_only(student, batchnorm)
    for ckpt in (student, teacher) if teacher is not None else (student,):
        place(ckpt.model, requested(device, dtype))
    if finetune_data == "synthetic":
        if teacher is None:
            raise InputError("distillation on synthetic data needs a teacher (the original model)")
        _check_compatible(student, teacher)
        samples = samples if samples is not None else _synthesize(teacher, per_class, data, classes, seed)
        if samples.image_shape != data.image_shape:
            raise InputError(f"synthetic samples have shape {samples.image_shape}, the model takes {data.image_shape}")
    else:
        samples = data.train
    model = student.model  # a freshly loaded checkpoint: fine-tuned in place
    test = data.test if classes is None else data.test.of_classes(classes)
    before = accuracy(model, test)
    masks = Masks.from_extra(student.extra, model)
    with masks.enforced(model) if masks is not None else nullcontext():
        log = finetune(
            model,
            teacher.model if finetune_data == "synthetic" else None,
            samples,
            epochs,
            lr=lr,
            temperature=temperature,
            batch_size=batch_size,
            classes=classes,
            seed=seed,
            batchnorm=batchnorm,
        )
    evidence = {"test_accuracy": accuracy(model, test), "test_accuracy_before": before}
    if teacher is not None:
        evidence["teacher_test_accuracy"] = accuracy(teacher.model, test)
    if forgotten is not None:
        evidence["forget_accuracy"] = accuracy(model, data.test.of_classes([forgotten]))
    used = dict(data=finetune_data, epochs=epochs, lr=lr, temperature=temperature, batch_size=batch_size)
    used.update(batchnorm=batchnorm, per_class=per_class, forget_class=forgotten, seed=seed)
    parents = {**(parents or {}), **({"teacher": teacher.sha256} if teacher is not None else {})}
    metadata = meta.derive("finetune", student.sha256, parents=parents, params=used, metrics=evidence, report=log)
    metrics = {**evidence, **{k: log[k] for k in ("loss", "samples", "final_loss", "seconds")}}
    metrics.update(forget_class=forgotten, batchnorm=batchnorm, lr=lr, epochs=epochs)
    if epochs == 0:
        metrics["done"] = f"no training (epochs 0): BatchNorm statistics re-estimated on {log['samples']} samples"
    return Outcome(model, student.config, metadata, metrics, extra=dict(student.extra))


def _check_recalibration_only(student: Checkpoint, batchnorm: str) -> None:
    """`epochs=0` only re-estimates BatchNorm statistics (the cheapest repair after
    pruning): an `InputError` where that would change nothing (BatchNorm frozen, or none)."""
    if batchnorm == "frozen":
        raise InputError(
            "epochs 0 only re-estimates BatchNorm statistics, but batchnorm is frozen "
            "(the default for an unlearned model): nothing would change; give epochs >= 1"
        )
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.model.modules()):
        raise InputError(
            "epochs 0 only re-estimates BatchNorm statistics, but the model has no BatchNorm layer: "
            "nothing would change; give epochs >= 1"
        )


def _synthesize(
    teacher: Checkpoint, per_class: int, data: DatasetSplits, classes: list[int] | None, seed: int
) -> ArrayDataset:
    return synthesize(teacher.model, per_class, image_shape=data.image_shape, classes=classes, seed=seed).samples


def _check_compatible(student: Checkpoint, teacher: Checkpoint) -> None:
    """Teacher and student must see the same inputs and predict the same classes."""
    for field in ("num_classes", "in_channels", "image_size"):
        mine, theirs = getattr(student.config, field), getattr(teacher.config, field)
        if mine != theirs:
            raise InputError(f"teacher and model differ in {field} ({theirs} vs {mine})")
