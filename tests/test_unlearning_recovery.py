"""Recovery after unlearning: frozen-BN distillation keeps a forgotten class forgotten,
while re-estimating BN statistics on the retained classes gives ModHiFi-U's forgotten
class back (the finding behind the pipeline's `batchnorm="frozen"` fine-tuning and the
`UA_after_bn_recalibration` audit metric)."""

from __future__ import annotations

import copy

import pytest
import torch

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.distillation import finetune
from modhifi_core.splits import class_split
from modhifi_core.training import accuracy


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_frozen_batchnorm_distillation_leaves_bn_statistics_untouched(tiny_digits_checkpoint, digits):
    teacher = load_checkpoint(tiny_digits_checkpoint).model
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.layer4[0].conv1.weight.mul_(0.5)
    before_buffers = _bn_buffers(student)
    before_weights = student.layer4[0].conv1.weight.clone()
    retain = digits.train.of_classes([k for k in range(10) if k != 3])
    log = finetune(student, teacher, retain, 1, lr=0.001, classes=list(range(10)), batchnorm="frozen")
    assert log["bn_recalibration_samples"] == 0
    after = _bn_buffers(student)
    assert all(torch.equal(before_buffers[k], after[k]) for k in before_buffers)
    assert not torch.equal(before_weights, student.layer4[0].conv1.weight)  # it did train


def test_unknown_batchnorm_mode_is_refused(tiny_digits_checkpoint, digits):
    from modhifi_core.errors import InputError

    model = load_checkpoint(tiny_digits_checkpoint).model
    with pytest.raises(InputError, match="batchnorm"):
        finetune(model, model, digits.train, 0, batchnorm="freeze")


@pytest.mark.slow
def test_recalibration_undoes_modhifi_u_but_frozen_distillation_does_not(digits):
    from modhifi_core.models import ModelConfig, build_model
    from modhifi_core.training import TrainConfig, train_model
    from modhifi_core.unlearning.api import unlearn

    torch.manual_seed(0)
    base = build_model(ModelConfig())  # the default digits model
    train_model(base, digits.train, TrainConfig())
    split = class_split(digits.train, 3)
    forgotten = digits.test.of_classes([3])
    unlearned = unlearn(base, split, method="modhifi").model
    assert accuracy(unlearned, forgotten) <= 2.0

    recalibrated = copy.deepcopy(unlearned)
    recalibrate_batchnorm(recalibrated, split.retain.images.split(256))
    assert accuracy(recalibrated, forgotten) >= 80.0  # the class comes back

    distilled = copy.deepcopy(unlearned)
    retained = [k for k in range(10) if k != 3]
    finetune(distilled, base, split.retain, 5, lr=0.001, classes=retained, batchnorm="frozen")
    assert accuracy(distilled, forgotten) <= 2.0
    retained_test = digits.test.of_classes(retained)
    assert accuracy(distilled, retained_test) >= accuracy(unlearned, retained_test) - 1.0
