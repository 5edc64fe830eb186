"""Durability audit (BN recalibration, relearning attack), ModHiFi-U's durable variant and its logit mask,
on the session's tiny digits model (ResNet-18 width 8, 8 epochs; class 3 forgotten)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.durability import (
    RelearningAttack,
    durability_metrics,
    forgetting_after_recalibration,
    relearned,
)
from modhifi_core.errors import InputError
from modhifi_core.fidelity import saliency_scores
from modhifi_core.splits import class_split
from modhifi_core.training import accuracy
from modhifi_core.unlearning import unlearn
from modhifi_core.unlearning.modhifi_u import hifi_components


@pytest.fixture(scope="module")
def tiny(tiny_digits_checkpoint):
    return load_checkpoint(tiny_digits_checkpoint).model


@pytest.fixture(scope="module")
def split(digits):
    return class_split(digits.train, 3)


def test_recalibration_undoes_forgetting_that_lives_only_in_stale_bn_statistics(tiny, split):
    broken = copy.deepcopy(tiny)
    broken.get_submodule("bn1").running_mean += 50.0  # every class forgotten, weights untouched
    assert accuracy(broken, split.forget) < 50.0
    assert forgetting_after_recalibration(broken, split) < 5.0
    assert torch.equal(broken.get_submodule("bn1").running_mean, tiny.get_submodule("bn1").running_mean + 50.0)


def test_relearning_attack_takes_its_steps_on_retained_data_only_and_is_seeded(tiny, split):
    retain_rows = {row.numpy().tobytes() for row in split.retain.images}
    seen, steps = [], []
    handle = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    hook = lambda module, args: seen.extend(args[0])  # noqa: E731
    probe = copy.deepcopy(tiny)
    pre = probe.register_forward_pre_hook(hook)
    try:
        attacked = relearned(probe, split.retain, RelearningAttack(steps=7, batch_size=16, seed=3))
    finally:
        handle.remove()
        pre.remove()
    assert len(steps) == 7 and len(seen) == 7 * 16
    assert all(row.numpy().tobytes() in retain_rows for row in seen)
    again = relearned(tiny, split.retain, RelearningAttack(steps=7, batch_size=16, seed=3))
    for (name, a), b in zip(attacked.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    unchanged = relearned(tiny, split.retain, RelearningAttack(steps=0))
    assert all(torch.equal(a, b) for a, b in zip(unchanged.state_dict().values(), tiny.state_dict().values()))


def test_durability_metrics_report_both_figures_and_leave_the_model_alone(tiny, split):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    metrics = durability_metrics(tiny, split)
    assert set(metrics) == {"UA_after_bn_recalibration", "UA_after_relearning"}
    assert all(0.0 <= value <= 100.0 for value in metrics.values())
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())
    with pytest.raises(InputError, match="relearning attack needs"):
        RelearningAttack(lr=0.0)


def test_saliency_hifi_sets_are_the_top_saliency_inputs_centred_on_the_bn_running_mean(tiny, split):
    name = "layer4.1.conv1"
    layer = tiny.get_submodule(name)
    images = split.forget.images[:64]
    inputs = []
    handle = layer.register_forward_hook(lambda m, a, o: inputs.append(a[0]))
    with torch.no_grad():
        tiny.eval()(images)
    handle.remove()
    scores = saliency_scores(layer, inputs[0], tiny.get_submodule("layer4.1.bn1").running_mean)
    hifi = hifi_components(tiny, images, [name], 0.05, centered=False, batch_size=64)[name]
    k = -(-5 * layer.in_channels // 100)
    expected = torch.zeros_like(hifi).scatter_(1, scores.topk(k, dim=1).indices, True)
    assert torch.equal(hifi, expected)


def test_logit_mask_negates_only_the_forget_class_row_and_survives_the_retained_data_audit(tiny, split):
    plain = unlearn(tiny, split, "modhifi")
    durable = unlearn(tiny, split, "modhifi", logit_mask=True)
    head_before, head_after = tiny.fc.weight, durable.model.fc.weight
    changed = head_after != head_before
    assert changed[3].any() and not torch.cat([changed[:3], changed[4:]]).any()
    assert torch.equal(head_after[3][changed[3]], -head_before[3][changed[3]])
    for name, param in durable.model.named_parameters():
        if not name.startswith("fc."):
            assert torch.equal(param, dict(plain.model.named_parameters())[name]), name
    audit = durability_metrics(durable.model, split, RelearningAttack(steps=20))
    assert audit["UA_after_bn_recalibration"] >= 90.0 and audit["UA_after_relearning"] >= 90.0
    assert durability_metrics(plain.model, split)["UA_after_bn_recalibration"] < 50.0
    assert durable.log["forgetting"].startswith("logit mask")  # what it is, said where it is recorded
    with pytest.raises(InputError, match="logit_mask=true"):
        unlearn(tiny, split, "modhifi", durable=True, durable_design="head")


def test_iterate_design_logs_its_rounds(tiny, split):
    result = unlearn(tiny, split, "modhifi", durable=True, durable_design="iterate", durable_rounds=2)
    assert 1 <= len(result.log["rounds"]) <= 2
    bn = result.model.get_submodule("layer4.1.bn2")
    assert bn.num_batches_tracked != tiny.get_submodule("layer4.1.bn2").num_batches_tracked  # re-estimated


def test_auto_fraction_keeps_the_smallest_grid_edit_that_forgets(tiny, split):
    from modhifi_core.unlearning.modhifi_u import AUTO_FRACTIONS, AUTO_RECOGNISED

    result = unlearn(tiny, split, "modhifi", fraction="auto")
    chosen = result.log["fraction_chosen"]
    assert chosen in AUTO_FRACTIONS
    fixed = unlearn(tiny, split, "modhifi", fraction=chosen)
    assert all(torch.equal(a, b) for a, b in zip(result.model.parameters(), fixed.model.parameters()))
    if chosen != AUTO_FRACTIONS[0]:  # the grid step before it did not forget
        smaller = unlearn(tiny, split, "modhifi", fraction=AUTO_FRACTIONS[AUTO_FRACTIONS.index(chosen) - 1])
        assert accuracy(smaller.model, split.forget) > AUTO_RECOGNISED
    if result.log["forget_recognised"] <= AUTO_RECOGNISED:
        assert accuracy(result.model, split.forget) <= AUTO_RECOGNISED
    with pytest.raises(InputError, match="fraction must be a number"):
        unlearn(tiny, split, "modhifi", fraction="most")
