"""Unstructured pruning for prune-then-unlearn: masks, OMP, IMP, SynFlow (method.md §5)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.training import TrainConfig, accuracy
from modhifi_core.unstructured import Masks, imp, magnitude_masks, omp, prunable_weights, prune_unstructured
from modhifi_core.unstructured.synflow import synflow_masks

CONFIG = ModelConfig(name="resnet18", width=4)


def fresh_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(CONFIG)


def test_prunable_weights_are_convs_without_the_classifier_bn_or_biases():
    names = set(prunable_weights(fresh_model()))
    assert "conv1.weight" in names and "layer4.1.conv2.weight" in names and "layer2.0.shortcut.0.weight" in names
    assert "fc.weight" not in names
    assert not any("bn" in n or n.endswith("bias") for n in names)
    vit = build_model(ModelConfig(name="vit", width=16, vit_depth=1))
    vit_names = set(prunable_weights(vit))
    assert "blocks.0.fc1.weight" in vit_names and "head.weight" not in vit_names


def test_magnitude_masks_prune_exactly_the_smallest_weights_globally():
    model = fresh_model()
    masks = magnitude_masks(model, 0.9)
    assert masks.sparsity == pytest.approx(0.9, abs=1e-6)
    weights = prunable_weights(model)
    kept = torch.cat([weights[n].detach().abs()[m] for n, m in masks.tensors.items()])
    pruned = torch.cat([weights[n].detach().abs()[~m] for n, m in masks.tensors.items()])
    assert pruned.max() <= kept.min()
    # Already-pruned weights stay pruned when pruning further.
    more = magnitude_masks(model, 0.95, current=masks)
    assert all((~masks.tensors[n] <= ~more.tensors[n]).all() for n in masks.tensors)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), True])
def test_bad_sparsity_is_refused(sparsity):
    with pytest.raises(InputError, match="sparsity must be in"):
        magnitude_masks(fresh_model(), sparsity)


def test_enforced_masks_keep_pruned_weights_exactly_zero_after_every_step(digits):
    model = fresh_model()
    masks = magnitude_masks(model, 0.8)
    checks = []
    for optimizer_type in (torch.optim.SGD, torch.optim.AdamW):
        kwargs = {"momentum": 0.9, "weight_decay": 5e-4} if optimizer_type is torch.optim.SGD else {}
        optimizer = optimizer_type(model.parameters(), lr=0.05, **kwargs)
        optimizer.register_step_post_hook(lambda *args: checks.append(masks.violations(model)))
        with masks.enforced(model):
            model.train()
            for images, labels in itertools.islice(digits.train.loader(128, shuffle=True), 4):
                penalty = 1e-3 * sum(p.abs().sum() for p in model.parameters())
                loss = nn.functional.cross_entropy(model(images), labels) + penalty
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    assert len(checks) == 8 and set(checks) == {0}
    # Outside the context gradients flow again.
    model(digits.train.images[:8]).sum().backward()
    assert model.conv1.weight.grad[~masks.tensors["conv1.weight"]].abs().sum() > 0


def test_masks_round_trip_through_a_checkpoint(tmp_path):
    model = fresh_model()
    masks = magnitude_masks(model, 0.5)
    masks.apply(model)
    save_checkpoint(tmp_path / "sparse.pt", model, CONFIG, extra=masks.to_extra())
    loaded = load_checkpoint(tmp_path / "sparse.pt")
    again = Masks.from_extra(loaded.extra, loaded.model)
    assert again is not None and again.sparsity == pytest.approx(0.5, abs=1e-6)
    assert all(torch.equal(again.tensors[n], masks.tensors[n]) for n in masks.tensors)
    assert Masks.from_extra({}, loaded.model) is None
    wrong = {"mask/conv1.weight": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(InputError, match="conv1.weight"):
        Masks.from_extra(wrong, loaded.model)


def test_omp_rewinds_and_retrains_under_the_mask(digits):
    init = fresh_model()
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    trained = fresh_model()
    pruned, masks, log = omp(trained, digits.train, 0.5, TrainConfig(epochs=2), rewind_state=init_state)
    assert masks.sparsity == pytest.approx(0.5, abs=1e-6) and masks.violations(pruned) == 0
    assert accuracy(pruned, digits.test) > 50.0  # two epochs from the rewound init learn digits
    assert torch.equal(trained.state_dict()["conv1.weight"], fresh_model().state_dict()["conv1.weight"])  # untouched
    # Without a budget: the masked weights as they were; rewinding without retraining is refused.
    masked, _, _ = omp(trained, digits.train, 0.5, retrain=None)
    kept = masks.tensors["layer1.0.conv1.weight"]
    assert torch.equal(masked.layer1[0].conv1.weight[kept], trained.layer1[0].conv1.weight[kept])
    with pytest.raises(InputError, match="rewinding needs retraining"):
        omp(trained, digits.train, 0.5, retrain=None, rewind_state=init_state)


def test_imp_prunes_a_fifth_of_the_remaining_weights_per_round(digits):
    model = fresh_model()
    pruned, masks, log = imp(model, digits.train, 0.6, retrain=None)
    assert log["rounds"] == math.ceil(math.log(0.4) / math.log(0.8))  # 5 rounds: 0.2, 0.36, 0.49, 0.59, 0.6
    assert masks.sparsity == pytest.approx(0.6, abs=1e-6)
    assert masks.violations(pruned) == 0
    _, _, none = imp(model, digits.train, 0.0, retrain=None)
    assert none["rounds"] == 0


def test_synflow_is_data_free_exact_and_avoids_layer_collapse():
    model = fresh_model()
    masks = synflow_masks(model, 0.95, input_shape=(1, 8, 8), rounds=20)
    assert masks.sparsity == pytest.approx(0.95, abs=1e-4)
    # No layer collapse: the masked network still carries flow from input to output
    # (in a ResNet possibly through a projection shortcut alone).
    flow = build_model(CONFIG).double().eval()
    flow.load_state_dict(model.state_dict())
    with torch.no_grad():
        for tensor in [*flow.parameters(), *flow.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    masks.apply(flow)
    assert flow(torch.ones(1, 1, 8, 8, dtype=torch.float64)).sum() > 0
    again = synflow_masks(model, 0.95, input_shape=(1, 8, 8), rounds=20)
    assert all(torch.equal(again.tensors[n], masks.tensors[n]) for n in masks.tensors)
    assert model.conv1.weight.min() < 0  # the scored copy was made positive, not the model


def test_prune_unstructured_dispatch_and_bad_input(digits):
    model = fresh_model()
    with pytest.raises(InputError, match="unknown pruner 'lottery'; choose one of omp, imp, synflow"):
        prune_unstructured(model, digits.train, "lottery", 0.5)
    with pytest.raises(InputError, match="sparsity must be in"):
        prune_unstructured(model, digits.train, "omp", 1.0)
    pruned, masks, log = prune_unstructured(model, digits.train, "synflow", 0.9, retrain=TrainConfig(epochs=1))
    assert masks.sparsity == pytest.approx(0.9, abs=1e-4) and masks.violations(pruned) == 0
    assert log["rounds"] == 100
