"""Streaming statistics: hooks over a whole model agree with the raw single-layer forms,
shards merge by addition (also when run as tasks on an executor), and bad calibration
data is refused with the layer named."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import torch
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.fidelity import scores_from_statistics, singleton_scores
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.sharding import split_shards
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


# --- sharded over an executor (modhifi_core.sharding) ---------------------------------------


def relative_error(a, b) -> float:
    """Largest field-wise `max|a - b| / max|b|` over every layer's sums (1 for a mismatch
    of sample or position counts)."""
    worst = 0.0
    for name in b:
        if (a[name].samples, a[name].positions) != (b[name].samples, b[name].positions):
            return 1.0
        for field in ("cross", "gram_diag", "output_sq", "input_sum"):
            x, y = getattr(a[name], field), getattr(b[name], field)
            worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item())
    return worst


@pytest.fixture(scope="module")
def many_batches():
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=generator) for n in (4, 6, 3, 5, 2, 7, 4)]


def test_shards_are_contiguous_balanced_and_compact(many_batches):
    storage = torch.cat(many_batches)
    views = list(storage.split([len(b) for b in many_batches]))
    shards = split_shards([(v, torch.zeros(len(v))) for v in views] + [storage[:0]], shards=3)
    assert [s.sizes for s in shards] == [[4, 6, 3], [5, 2], [7, 4]]
    torch.testing.assert_close(torch.cat([b for s in shards for b in s.batches()]), storage, rtol=0, atol=0)
    # each shard owns just its images: a view would pickle the whole calibration set
    assert [s.images.untyped_storage().nbytes() for s in shards] == [s.nbytes for s in shards]
    assert len(split_shards(many_batches, shards=50)) == len(many_batches)
    with pytest.raises(InputError, match="shards must be at least 1"):
        split_shards(many_batches, shards=0)
    with pytest.raises(InputError, match="calibration data is empty"):
        split_shards([storage[:0]], shards=2)


@pytest.mark.parametrize("shards", [None, 1, 3, 7])
def test_thread_pool_statistics_equal_single_process(model_and_batches, many_batches, shards):
    # Two threads running forward passes at once: each task must hook its own model copy,
    # or every layer's sums would count the other thread's batches too.
    model, _ = model_and_batches
    local = collect_statistics(model, many_batches)
    with ThreadPoolExecutor(max_workers=2) as pool:
        sharded = collect_statistics(model, many_batches, executor=pool, shards=shards)
    assert set(sharded) == set(local)
    # float64 sums added in another order: round-off of a few ulps, far below 1e-10
    assert relative_error(sharded, local) <= 1e-10


def test_process_pool_statistics_and_kept_gram_equal_single_process(model_and_batches, many_batches):
    model, _ = model_and_batches
    kept = {"layer2.0.conv2": torch.tensor([5, 0, 2]), "fc": torch.tensor([1, 7])}
    local, local_gram = collect_statistics(model, many_batches), collect_kept_gram(model, many_batches, kept)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        sharded = collect_statistics(model, many_batches, executor=pool, shards=3)
        gram = collect_kept_gram(model, many_batches, kept, executor=pool, shards=3)
    assert relative_error(sharded, local) <= 1e-10
    for name in kept:
        torch.testing.assert_close(gram[name], local_gram[name], rtol=1e-10, atol=1e-12)


def test_sharded_statistics_refuse_bad_data_like_the_local_pass(model_and_batches):
    model, batches = model_and_batches
    broken = build_model(ModelConfig(name="resnet18", width=4, image_size=8)).double().eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.layer3[0].bn1.running_var.fill_(-1.0)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with pytest.raises(InputError, match="layer3.0.conv2"):
            collect_statistics(broken, batches, executor=pool)
        with pytest.raises(InputError, match="calibration data is empty"):
            collect_statistics(model, [], executor=pool)
        with pytest.raises(InputError, match="no layer named 'nope'"):
            collect_statistics(model, batches, layers=["nope"], executor=pool)
