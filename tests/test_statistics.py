"""Streaming statistics: hooks over a whole model agree with the raw single-layer forms,
shards merge by addition, and bad calibration data is refused with the layer named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.fidelity import scores_from_statistics, singleton_scores
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.statistics import (
    collect_kept_gram,
    collect_statistics,
    kept_gram,
    layer_statistics,
    prunable_layers,
    unsupported_layers,
)


@pytest.fixture(scope="module")
def model_and_batches():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18", width=4, image_size=8)).double().eval()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=generator) for n in (5, 7, 3)]
    return model, batches


def captured_inputs(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    seen: dict[str, list[torch.Tensor]] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda m, a, o, name=name: seen.setdefault(name, []).append(a[0]))
        for name in prunable_layers(model)
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(parts) for name, parts in seen.items()}


def assert_same_statistics(a, b):
    assert (a.samples, a.positions) == (b.samples, b.positions)
    for field in ("cross", "gram_diag", "output_sq", "input_sum"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-10, atol=1e-10)


def test_prunable_layers_cover_every_conv_and_linear(model_and_batches):
    model, _ = model_and_batches
    names = prunable_layers(model)
    assert names[0] == "conv1" and names[-1] == "fc"
    assert len(names) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert unsupported_layers(model) == {}


def test_streaming_statistics_equal_the_raw_forms(model_and_batches):
    model, batches = model_and_batches
    stats = collect_statistics(model, batches)  # bare tensors
    paired = collect_statistics(model, [(b, torch.zeros(len(b))) for b in batches])  # (images, labels)
    inputs = captured_inputs(model, batches)
    modules = dict(model.named_modules())
    assert set(stats) == set(prunable_layers(model))
    for name, layer in modules.items():
        if name not in stats:
            continue
        assert_same_statistics(stats[name], layer_statistics(layer, inputs[name]))
        assert_same_statistics(stats[name], paired[name])
        for centered in (False, True):
            torch.testing.assert_close(
                scores_from_statistics(stats[name], layer, centered),
                singleton_scores(layer, inputs[name], centered),
                rtol=1e-9,
                atol=1e-12,
            )


def test_shard_statistics_merge_by_addition(model_and_batches):
    model, batches = model_and_batches
    everything = collect_statistics(model, batches, layers=["layer2.0.conv1", "fc"])
    shard_a = collect_statistics(model, batches[:1], layers=["layer2.0.conv1", "fc"])
    shard_b = collect_statistics(model, batches[1:], layers=["layer2.0.conv1", "fc"])
    for name in everything:
        assert_same_statistics(shard_a[name] + shard_b[name], everything[name])
    assert everything["fc"].samples == sum(len(b) for b in batches)


def test_statistics_size_does_not_grow_with_data(model_and_batches):
    model, batches = model_and_batches
    small = collect_statistics(model, batches[:1], layers=["layer1.0.conv2"])["layer1.0.conv2"]
    large = collect_statistics(model, batches * 4, layers=["layer1.0.conv2"])["layer1.0.conv2"]
    for field in ("cross", "gram_diag", "output_sq", "input_sum"):
        assert getattr(small, field).shape == getattr(large, field).shape
    assert small.cross.shape == (4, 4, 9) and small.gram_diag.shape == (4, 9, 9)


def test_kept_gram_pass_matches_the_raw_form(model_and_batches):
    model, batches = model_and_batches
    kept = {"layer2.0.conv2": torch.tensor([5, 0, 2]), "fc": torch.tensor([1, 7])}
    grams = collect_kept_gram(model, batches, kept)
    inputs = captured_inputs(model, batches)
    modules = dict(model.named_modules())
    for name, index in kept.items():
        torch.testing.assert_close(grams[name], kept_gram(modules[name], inputs[name], index), rtol=1e-10, atol=1e-10)
    # its diagonal blocks are the streaming gram_diag of the same channels
    stats = collect_statistics(model, batches, layers=["layer2.0.conv2"])["layer2.0.conv2"]
    blocks = grams["layer2.0.conv2"].view(3, 9, 3, 9)
    for position, channel in enumerate([5, 0, 2]):
        torch.testing.assert_close(blocks[position, :, position], stats.gram_diag[channel], rtol=1e-10, atol=1e-10)


def test_empty_calibration_data_is_refused(model_and_batches):
    model, _ = model_and_batches
    with pytest.raises(InputError, match="calibration data is empty"):
        collect_statistics(model, [])
    with pytest.raises(InputError, match="calibration data is empty"):
        collect_statistics(model, [torch.zeros(0, 1, 8, 8, dtype=torch.float64)])


def test_non_finite_activations_name_the_layer(model_and_batches):
    model, batches = model_and_batches
    broken = build_model(ModelConfig(name="resnet18", width=4, image_size=8)).double().eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.layer3[0].bn1.running_var.fill_(-1.0)  # sqrt of a negative variance: NaN downstream
    with pytest.raises(InputError, match="layer3.0.conv2"):
        collect_statistics(broken, batches)
    nan_images = batches[0].clone()
    nan_images[0, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or inf"):
        collect_statistics(model, [nan_images])


def test_unsupported_layers_are_named_and_refused_for_scoring():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, groups=2))
    assert prunable_layers(model) == ["0"]
    assert unsupported_layers(model) == {"1": "depthwise conv (groups=8)", "2": "grouped conv (groups=2)"}
    with pytest.raises(InputError, match="layer '1'"):
        collect_statistics(model, [torch.randn(2, 4, 9, 9)], layers=["1"])
    with pytest.raises(InputError, match="no layer named 'nope'"):
        collect_statistics(model, [torch.randn(2, 4, 9, 9)], layers=["nope"])
