"""Every default and every check written once (issue 22): the params schema reads each
default from its source, and each check is one function (`modhifi_core.checks`) that
every operation and schema validator needing it calls. Each test below fails if its
caller restates the value or drops the check."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kinds.base import KindDefaults
from kinds.language import CausalLMKind
from kinds.zoo import ZooKind
from modhifi_core import checks
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from tasks import params as schema

# A schema validator's refusal arrives as pydantic's ValidationError (a ValueError) with the
# check's sentence; `load_params` turns it into one InputError line naming the key.


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    return str(info.value)


# -- defaults: read, not restated ------------------------------------------------------


def test_schema_defaults_follow_the_operation_signatures(monkeypatch):
    """Changing an operation's default changes the schema's: nothing holds a copy."""
    from modhifi_core.operations.finetune import finetune_checkpoint
    from modhifi_core.operations.prune import prune_checkpoint
    from modhifi_core.operations.prune_language_model import prune_language_model
    from modhifi_core.operations.unlearn import unlearn_checkpoint

    monkeypatch.setitem(prune_checkpoint.__kwdefaults__, "ridge", 0.25)
    monkeypatch.setitem(unlearn_checkpoint.__kwdefaults__, "sparsity", 0.5)
    monkeypatch.setitem(finetune_checkpoint.__kwdefaults__, "temperature", 2.0)
    monkeypatch.setitem(prune_language_model.__kwdefaults__, "length", 64)
    assert schema.PruneParams().ridge == 0.25
    assert schema.UnlearnParams().sparsity == 0.5
    assert schema.FinetuneParams().temperature == 2.0
    assert schema.LanguageParams().length == 64


def test_schema_defaults_follow_the_kind_defaults(monkeypatch):
    """The zoo's calibration samples, batch, latency repeats and FLOPs target, and a
    language model's windows, batch, repeats and parameter target, are `kind.defaults`."""
    monkeypatch.setattr(ZooKind, "defaults", KindDefaults(7, 3, 2, "flops", 0.25))
    monkeypatch.setattr(CausalLMKind, "defaults", KindDefaults(9, 5, 1, "params", 0.6))
    collect, prune, language = schema.CollectParams(), schema.PruneParams(), schema.LanguageParams()
    assert (collect.samples, collect.batch_size, prune.latency_repeats, prune.target_flops) == (7, 3, 2, 0.25)
    assert (language.samples, language.batch_size, language.latency_repeats, language.target_params) == (9, 5, 1, 0.6)


def test_schema_defaults_equal_the_engine_dataclasses():
    from modhifi_core.durability import ForgetRelearning, RelearningAttack
    from modhifi_core.synthesis import PER_CLASS, InversionConfig
    from modhifi_core.training import TrainConfig

    inversion = {f.name: f.default for f in dataclasses.fields(InversionConfig)}
    assert schema.SynthesizeParams().model_dump(exclude={"method", "per_class", "source"}) == inversion
    assert schema.SynthesizeParams().per_class == schema.FinetuneParams().per_class == PER_CLASS
    train = schema.TrainParams()
    assert (train.epochs, train.lr, train.batch_size, train.weight_decay) == (
        TrainConfig.epochs,
        TrainConfig.lr,
        TrainConfig.batch_size,
        TrainConfig.weight_decay,
    )
    evaluate = schema.EvaluateParams()
    assert (evaluate.relearn_steps, evaluate.relearn_lr) == (RelearningAttack.steps, RelearningAttack.lr)
    assert evaluate.relearn_forget_max_steps == ForgetRelearning.max_steps


def test_default_of_reads_a_signature_or_an_attribute():
    assert schema.default_of("modhifi_core.operations.prune:prune_checkpoint", "method")() == "modhifi"
    assert schema.default_of("kinds.zoo:ZooKind.defaults", "target")() == "flops"


def test_retrain_recipe_is_the_training_recipe():
    from modhifi_core.training import TrainConfig
    from modhifi_core.unlearning.retrain import RetrainParams

    assert dataclasses.fields(RetrainParams) == dataclasses.fields(TrainConfig)
    assert _refused(RetrainParams, momentum=2.0) == "momentum must be a number in [0.0, 1.0], got 2.0"


def test_pruning_options_fill_the_operations_defaults(monkeypatch):
    from modhifi_core.operations.prune import prune_checkpoint, pruning_options

    monkeypatch.setitem(prune_checkpoint.__kwdefaults__, "round_to", 8)
    assert pruning_options(method="l2")["round_to"] == 8
    with pytest.raises(TypeError, match="unknown settings"):
        pruning_options(target_flop=0.5)


# -- checks: one function each, called by every place that needs it ----------------------

FRACTION = "{} must be a fraction strictly between 0 and 1, got {}"


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1, True, "half"])
def test_check_fraction(value):
    assert _refused(checks.check_fraction, "x", value) == FRACTION.format("x", repr(value))


def test_fraction_check_in_every_caller():
    from modhifi_core.data import _stratified_split
    from modhifi_core.operations.prune_language_model import check_options
    from modhifi_core.splits import random_split
    from modhifi_core.unstructured.magnitude import imp

    data = ArrayDataset(torch.zeros(10, 1, 2, 2), torch.arange(10) % 2, 2)
    assert _refused(random_split, data, 1.5) == FRACTION.format("forget_random", 1.5)
    assert _refused(_stratified_split, data.images, data.labels, 1.0, 0) == FRACTION.format("test_fraction", 1.0)
    assert _refused(imp, nn.Linear(2, 2), data, 0.5, rate=1.0) == FRACTION.format("IMP rate", 1.0)
    assert _refused(check_options, "modhifi", "synthetic", 1.5, None) == FRACTION.format("target_params", 1.5)
    with pytest.raises(ValueError, match=r"target_flops must be a fraction strictly between 0 and 1, got 2\.0"):
        schema.PruneParams(target_flops=2.0)
    with pytest.raises(ValueError, match=r"forget_random must be a fraction strictly between 0 and 1, got 1\.0"):
        schema.UnlearnParams(forget_class=None, forget_random=1.0, data="real")
    with pytest.raises(ValueError, match=r"ffn_fraction must be a fraction strictly between 0 and 1, got 0\.0"):
        schema.LanguageParams(target_params=None, ffn_fraction=0.0)


def test_check_one_target():
    assert _refused(checks.check_one_target, a=None, b=None) == "give exactly one of a and b"
    assert _refused(checks.check_one_target, a=0.5, b=0.5, c=None) == "give exactly one of a, b and c"
    assert _refused(checks.check_one_target, a=None, b=3.0) == FRACTION.format("b", "3.0")
    checks.check_one_target(a=None, b=0.5)


def test_one_target_check_in_every_caller():
    from modhifi_core.operations.prune_language_model import check_options
    from modhifi_core.pruning import modhifi_prune

    model, images = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)), torch.randn(4, 1, 3, 3)
    both = {"target_flops": 0.5, "keep_fraction": 0.5}
    assert _refused(modhifi_prune, model, images, **both) == "give exactly one of target_flops and keep_fraction"
    assert (
        _refused(check_options, "modhifi", "synthetic", None, None) == "give exactly one of target_params and fraction"
    )
    from modhifi_core.pruning.ffn import widths_for_target

    message = "give exactly one of fraction, target_params and target_flops"
    assert _refused(widths_for_target, None, [], fraction=0.1, target_params=0.9) == message
    with pytest.raises(ValueError, match="give exactly one of target_params and ffn_fraction"):
        schema.LanguageParams(target_params=0.8, ffn_fraction=0.2)


@pytest.mark.parametrize("label", [-1, 10, True, 1.0])
def test_check_class_exists(label):
    message = f"forget class {label!r} does not exist: the model has classes 0..9"
    assert _refused(checks.check_class_exists, label, 10, "forget class") == message


def test_class_check_in_every_caller():
    from modhifi_core.distillation import finetune
    from modhifi_core.operations.finetune import finetune_checkpoint
    from modhifi_core.splits import class_split
    from modhifi_core.synthesis import _check_classes

    data = ArrayDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), 2)
    exists = "{} 2 does not exist: the model has classes 0..1"
    assert _refused(class_split, data, 2) == exists.format("forget class")
    assert _refused(_check_classes, [0, 2], 2) == exists.format("class")
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert _refused(finetune, student, None, data, 1, classes=[2]) == exists.format("fine-tuning class")
    checkpoint = SimpleNamespace(metadata={}, config=SimpleNamespace(num_classes=2))
    assert _refused(finetune_checkpoint, checkpoint, None, None, forget_class=2) == exists.format("forget class")


FORGET_SET = "give exactly one forget set: forget_class (--forget-class K) or forget_random (--forget-random F)"
RANDOM_NEEDS_REAL = "random forgetting names real training samples: it needs data real (--forget-data real)"


def test_check_forget_set():
    assert _refused(checks.check_forget_set, None, None, "real") == FORGET_SET
    assert _refused(checks.check_forget_set, 3, 0.1, "real") == FORGET_SET
    assert _refused(checks.check_forget_set, None, 0.1, "synthetic") == RANDOM_NEEDS_REAL
    checks.check_forget_set(3, None, "synthetic")


def test_forget_set_check_in_every_caller():
    from modhifi_core.operations.unlearn import unlearn_checkpoint

    assert _refused(unlearn_checkpoint, None, None, forget_class=None) == FORGET_SET
    assert _refused(unlearn_checkpoint, None, None, forget_class=None, forget_random=0.1) == RANDOM_NEEDS_REAL
    with pytest.raises(ValueError, match=FORGET_SET.replace("(", r"\(").replace(")", r"\)")):
        schema.UnlearnParams(forget_class=None)
    with pytest.raises(ValueError, match="random forgetting names real training samples"):
        schema.UnlearnParams(forget_class=None, forget_random=0.1)
