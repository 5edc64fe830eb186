"""The forgetting audit tells forgetting from masking (issue 24), on the session's tiny
digits model (ResNet-18 width 8, 8 epochs) with class 3 to forget: a model whose only
change is the forget class's classifier row must be flagged ("head"), a model trained
without the class must not be."""

from __future__ import annotations

import copy

import pytest
import torch

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.durability import (
    FeatureProbe,
    ForgetRelearning,
    audit_forgetting,
    head_reset,
    verdict_sentence,
)
from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.splits import class_split
from modhifi_core.training import TrainConfig, accuracy, train_model
from modhifi_core.unlearning import unlearn

K = 3


@pytest.fixture(scope="module")
def tiny(tiny_digits_checkpoint):
    return load_checkpoint(tiny_digits_checkpoint).model


@pytest.fixture(scope="module")
def split(digits):
    return class_split(digits.train, K)


@pytest.fixture(scope="module")
def never_saw_the_class(digits, split):
    """The tiny model's recipe on the retained classes only (10 outputs, row 3 never a target)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18", width=8, image_size=8, in_channels=1))
    train_model(model, split.retain, TrainConfig(epochs=8, seed=0))
    return model


def masked(model, how: str):
    """The masking control: only the forget class's classifier row changes."""
    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        if how == "negate":
            copy_.fc.weight[K] *= -1.0
        else:
            copy_.fc.weight[K] = 0.0
            copy_.fc.bias[K] = copy_.fc.bias.min() - 10.0
    return copy_


@pytest.mark.parametrize("how", ["negate", "zero"])
def test_a_model_whose_only_change_is_its_forget_row_is_flagged_as_a_mask(tiny, digits, split, how):
    control = masked(tiny, how)
    assert accuracy(control, split.forget) < 5.0  # UA alone would call it forgotten
    audit = audit_forgetting(control, digits, K, original=tiny)
    assert audit["forgetting_lives_in"] == "head" and audit["forgetting_in_features"] == 0.0
    assert audit["forgetting_verdict"].startswith("NOT forgotten")
    assert audit["probe_forget_accuracy"] >= audit["original_probe_forget_accuracy"] - 5.0  # features intact
    assert audit["relearn_forget_steps"] < audit["relearn_forget_steps_cap"]  # a few samples bring it back
    assert audit["original_relearn_forget_steps"] == 0
    # with the row reset, the control IS the reference: its features relearn exactly as fast
    assert audit["relearn_forget_steps_after_head_reset"] == audit["head_reset_relearn_forget_steps"]
    assert "only in the head" in verdict_sentence(audit)


def test_a_model_trained_without_the_class_is_not_flagged(never_saw_the_class, tiny, digits):
    audit = audit_forgetting(never_saw_the_class, digits, K, original=tiny)
    assert audit["forgetting_lives_in"] == "features", audit
    assert audit["probe_retain_accuracy"] - audit["probe_forget_accuracy"] >= 15.0
    assert audit["relearn_forget_steps_after_head_reset"] >= 4 * audit["head_reset_relearn_forget_steps"]
    assert "lives in the features" in verdict_sentence(audit)


def test_the_original_is_not_forgotten_and_nothing_is_changed(tiny, digits):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    audit = audit_forgetting(tiny, digits, K, relearning=ForgetRelearning(max_steps=0))
    assert audit["forgetting_lives_in"] == "not forgotten"
    assert "relearn_forget_steps" not in audit and "original_probe_forget_accuracy" not in audit
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())


def test_modhifi_u_default_and_the_logit_mask_method_are_flagged(tiny, digits, split):
    """ModHiFi-U's default edit (last stage, BN) and the named logit mask both leave the
    class in the penultimate features: the audit must not certify either."""
    for result in (unlearn(tiny, split, "modhifi"), unlearn(tiny, split, "logit-mask")):
        audit = audit_forgetting(result.model, digits, K, original=tiny, relearning=ForgetRelearning(max_steps=0))
        assert audit["forgetting_lives_in"] == "head", result.log["method"]
    mask = unlearn(tiny, split, "logit-mask")
    changed = mask.model.fc.weight != tiny.fc.weight
    assert changed[K].any() and not torch.cat([changed[:K], changed[K + 1 :]]).any()
    assert mask.log["forgetting"].startswith("logit mask")


def test_head_reset_changes_only_the_class_row_and_is_seeded(tiny):
    reset = head_reset(tiny, K, seed=1)
    assert not torch.equal(reset.fc.weight[K], tiny.fc.weight[K])
    others = [k for k in range(10) if k != K]
    assert torch.equal(reset.fc.weight[others], tiny.fc.weight[others])
    assert torch.equal(head_reset(tiny, K, seed=1).fc.weight, reset.fc.weight)


def test_evaluate_reports_the_audit_for_a_class_and_bad_settings_are_refused(tiny, digits, split):
    metrics = evaluate(tiny, digits, split, original=tiny, relearning=ForgetRelearning(max_steps=0))
    assert {"probe_forget_accuracy", "original_probe_forget_accuracy", "forgetting_lives_in"} <= set(metrics)
    with pytest.raises(InputError, match="feature probe"):
        FeatureProbe(per_class=0)
    with pytest.raises(InputError, match="forget-data relearning"):
        ForgetRelearning(threshold=100.0)


def test_the_run_summary_does_not_call_a_masked_class_forgotten(capsys):
    from flows.commands.pipeline import _print_summary
    from modhifi_core.durability import VERDICTS

    metrics = {"forget_class": 3, "UA": 100.0, "probe_forget_accuracy": 97.0, "forgetting_lives_in": "head"}
    metrics["forgetting_verdict"] = VERDICTS["head"]
    result = {"metrics": metrics, "order": [], "stage_seconds": {}, "skipped_reasons": {}, "workspace": "ws"}
    _print_summary(None, {**result, "lineage": "modhifi lineage outputs/final/model.pt"})
    shown = " ".join(capsys.readouterr().out.split())
    assert "verdict of the forgetting audit" in shown and "NOT forgotten" in shown
    assert "forgotten class" not in shown and "class to forget" in shown
