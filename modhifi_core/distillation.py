"""Fine-tuning after a modification: knowledge distillation from the original model on
(synthetic) samples, or cross-entropy on real labelled data; then BN recalibration.

Distillation (Hinton et al. 2015) needs no labels: the student matches the teacher's
softened prediction,

    loss = T² · KL(softmax(t / T) ‖ softmax(s / T))        t, s: teacher, student logits

which is what makes fine-tuning data-free. For an unlearned model pass the retain
`classes`: only samples of those classes are used and the teacher's probabilities are
renormalised over them, so the student is never taught to put mass on a forgotten class
(the paper's 3-epoch recovery on synthetic retain data). The renormalisation matters:
the teacher still knows the forgotten class, and its small probabilities for it on
retain samples are enough to teach it back.

After unlearning, keep BatchNorm frozen (`batchnorm="frozen"`): re-estimating the BN
statistics undoes ModHiFi-U's edit by itself — the zeroed components' channels are
re-normalised and the class's response returns (digits model: forget accuracy 0% →
100% after recalibration alone, even on retain samples only). After pruning,
recalibrate (the default). Measurements: benchmarks/README.md, "Data-free operation".
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.checks import check_class_exists
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.progress import progress
from modhifi_core.training import TrainConfig, predict

BATCHNORM = ("recalibrate", "frozen")


def finetune(
    student: nn.Module,
    teacher: nn.Module | None,
    data: ArrayDataset,
    epochs: int = 3,
    *,
    lr: float = 0.01,
    temperature: float = 4.0,
    batch_size: int = TrainConfig.batch_size,
    momentum: float = TrainConfig.momentum,
    weight_decay: float = TrainConfig.weight_decay,
    classes: list[int] | None = None,
    seed: int = 0,
    batchnorm: str = "recalibrate",
) -> dict:
    """Fine-tune `student` in place; by default recalibrate its BatchNorm statistics on `data`.

    With a `teacher`: distillation at `temperature` on `data`'s images (labels are only
    used to pick `classes`; unlabelled samples take the teacher's prediction). Without
    one: cross-entropy on `data`'s labels, which must all be set. SGD with momentum and
    cosine decay over all steps, shuffled with `seed` (bit-identical on CPU for the
    same inputs). The student ends in eval mode; the teacher is not changed.

    `batchnorm`: "recalibrate" (BN layers train, then their running statistics are
    re-estimated on `data`; `epochs=0` only does that: after pruning) or "frozen" (BN
    layers stay in eval mode and keep their statistics: after unlearning, see above).

    Returns a log: `loss` ("distillation" or "cross_entropy"), `samples`, `epochs`,
    `losses` (mean loss per epoch), `final_loss` (NaN without epochs), `seconds`,
    `bn_recalibration_samples` (0 for a model without BN).
    """
    check_settings(epochs, lr, temperature, batch_size, batchnorm)
    if teacher is None and bool((data.labels < 0).any()):
        raise InputError("cross-entropy fine-tuning needs labelled samples; pass a teacher to distil instead")
    if classes is not None:
        data = _of_classes(data, teacher, classes)
    if len(data) == 0:
        raise InputError("no samples to fine-tune on")
    mask = _class_mask(classes, data.num_classes)
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = max(1, epochs * -(-len(data) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if teacher is not None:
        teacher.eval()
    losses = []
    start = time.perf_counter()
    student.train()
    if batchnorm == "frozen":
        for module in student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for epoch in progress(range(epochs), desc="finetune", unit="epoch"):
        total = 0.0
        for images, labels in data.loader(batch_size, shuffle=True, seed=seed + epoch):
            logits = student(images)
            if teacher is None:
                loss = F.cross_entropy(logits, labels)
            else:
                with torch.no_grad():
                    target = teacher(images)
                loss = distillation_loss(logits, target, temperature, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(labels)
        losses.append(total / len(data))
    recalibrated = recalibrate_batchnorm(student, data.images.split(batch_size)) if batchnorm == "recalibrate" else 0
    student.eval()
    return {
        "loss": "cross_entropy" if teacher is None else "distillation",
        "samples": len(data),
        "epochs": epochs,
        "losses": losses,
        "final_loss": losses[-1] if losses else float("nan"),
        "seconds": time.perf_counter() - start,
        "bn_recalibration_samples": recalibrated,
    }


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """`T² · KL(p ‖ q)` averaged over the batch, `p = softmax(teacher / T)` restricted to
    the classes where `mask` is True (renormalised), `q = softmax(student / T)`."""
    if mask is not None:
        teacher_logits = teacher_logits.masked_fill(~mask, float("-inf"))
    p = F.softmax(teacher_logits / temperature, dim=1)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    kl = (torch.special.xlogy(p, p) - p * log_q).sum(1).mean()  # xlogy: 0·log 0 = 0 at masked classes
    return kl * temperature**2


def _of_classes(data: ArrayDataset, teacher: nn.Module | None, classes: list[int]) -> ArrayDataset:
    if not classes:
        raise InputError("fine-tuning classes must name at least one class")
    for k in classes:
        check_class_exists(k, data.num_classes, "fine-tuning class")
    labels = data.labels
    if teacher is not None and bool((labels < 0).any()):
        labels = torch.where(labels < 0, predict(teacher, data.images).argmax(1), labels)
    keep = torch.nonzero(torch.isin(labels, torch.tensor(classes))).flatten()
    return ArrayDataset(data.images[keep], labels[keep], data.num_classes)


def _class_mask(classes: list[int] | None, num_classes: int) -> Tensor | None:
    if classes is None:
        return None
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[classes] = True
    return mask


def check_settings(epochs: int, lr: float, temperature: float, batch_size: int, batchnorm: str = "recalibrate") -> None:
    """`InputError` naming the first out-of-range setting of `finetune`."""
    if batchnorm not in BATCHNORM:
        raise InputError(f"batchnorm must be one of {', '.join(BATCHNORM)}, got {batchnorm!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise InputError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"lr must be a finite number > 0, got {lr}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise InputError(f"temperature must be a finite number > 0, got {temperature}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
