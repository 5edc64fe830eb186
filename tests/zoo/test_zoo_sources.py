"""torchvision and timm networks (random weights, built from their constructors):
pruned through `prune_model`, saved as a state dict + shape record, reloaded with
identical outputs; weights files read through safetensors or weights_only."""

from __future__ import annotations

import pickle

import pytest
import torch

from modhifi_core.errors import InputError
from modhifi_core.pruning import prune_model
from modhifi_core.sources.torchvision_zoo import (
    build_zoo_model,
    load_zoo_folder,
    load_zoo_model,
    parse_source,
    save_zoo_model,
)

# (source, constructor kwargs, image size, prune options). Small images keep each case
# to seconds; ViT/ConvNeXt use a keep fraction (their residual streams are LayerNorm
# channels, untouched, so a FLOPs target may be out of reach).
VIT = {"num_classes": 10, "img_size": 32, "patch_size": 8}
CASES = [
    ("torchvision:resnet18", {"num_classes": 10}, 64, {"target_flops": 0.5}),
    ("torchvision:resnet50", {"num_classes": 10}, 64, {"target_flops": 0.5, "round_to": 8}),
    ("timm:resnet18", {"num_classes": 10}, 64, {"target_flops": 0.5}),
    ("timm:vit_tiny_patch16_224", VIT, 32, {"target_flops": None, "keep_fraction": 0.5}),
    ("timm:convnext_atto", {"num_classes": 10}, 64, {"target_flops": None, "keep_fraction": 0.5}),
]  # fmt: skip


def calibration(size: int, n: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("source, kwargs, size, options", CASES, ids=[c[0] for c in CASES])
def test_pruned_zoo_model_reloads_from_state_dict_and_shapes(tmp_path, source, kwargs, size, options):
    torch.manual_seed(0)
    model = build_zoo_model(source, **kwargs)
    images = calibration(size)
    result = prune_model(model, images, "l2", **options)
    pruned = result.model
    assert result.report["params_ratio"] < 0.95, "pruning must remove parameters"
    folder = save_zoo_model(pruned, source, tmp_path / "pruned", build_kwargs=kwargs)
    again = load_zoo_folder(folder)
    x = calibration(size, 4)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x), rtol=0, atol=0)
    # nothing pickled: the folder is safetensors + JSON
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "modhifi.json", "rebuild.json"]


def test_modhifi_prunes_a_torchvision_resnet18_to_its_flops_target(tmp_path):
    torch.manual_seed(0)
    model = build_zoo_model("torchvision:resnet18", num_classes=10)
    result = prune_model(model, calibration(64, 32), "modhifi", target_flops=0.5)
    assert abs(result.report["flops_ratio"] - 0.5) <= 0.02
    again = load_zoo_folder(save_zoo_model(result.model, "torchvision:resnet18", tmp_path, {"num_classes": 10}))
    x = calibration(64, 2)
    with torch.no_grad():
        torch.testing.assert_close(again(x), result.model(x), rtol=0, atol=0)


def test_convnext_depthwise_convs_are_left_untouched_and_named():
    model = build_zoo_model("timm:convnext_atto", num_classes=10)
    result = prune_model(model, calibration(64), "l2", target_flops=None, keep_fraction=0.5)
    untouched = result.report["untouched_groups"]
    assert untouched, "the LayerNorm residual stream / depthwise groups must be reported"
    for name, module in result.model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            dense = model.get_submodule(name)
            assert module.weight.shape == dense.weight.shape, f"{name} (depthwise) was pruned"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_files_load_strictly(tmp_path, suffix):
    from safetensors.torch import save_file

    model = build_zoo_model("torchvision:resnet18", num_classes=10)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    again = load_zoo_model("torchvision:resnet18", path, num_classes=10)
    x = calibration(32, 2)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    with pytest.raises(InputError, match="does not fit"):
        load_zoo_model("torchvision:resnet18", path, num_classes=7)


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_unsafe_or_bad_inputs_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(InputError, match="unreadable weights file"):
        load_zoo_model("torchvision:resnet18", path)
    for bad in ("resnet18", "keras:resnet18", "torchvision:"):
        with pytest.raises(InputError, match="torchvision:ARCH or timm:ARCH"):
            parse_source(bad)
    with pytest.raises(InputError, match="cannot build"):
        build_zoo_model("torchvision:no_such_net")
    with pytest.raises(InputError, match="no rebuild.json"):
        load_zoo_folder(tmp_path)


def test_a_failed_save_leaves_the_previous_folder_as_it_was(tmp_path):
    """save_zoo_model writes into a staging folder that replaces the old one only once complete."""
    model = build_zoo_model("torchvision:resnet18", num_classes=10)
    folder = save_zoo_model(model, "torchvision:resnet18", tmp_path / "out", {"num_classes": 10}, lineage={})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = build_zoo_model("torchvision:resnet18", num_classes=10)  # other random weights
    with pytest.raises(TypeError):  # a lineage JSON cannot hold: the save fails after the weights
        save_zoo_model(other, "torchvision:resnet18", folder, {"num_classes": 10}, lineage={"x": object()})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_num_classes_that_contradict_a_folder_modhifi_wrote_are_one_line(tmp_path):
    """`--weights FOLDER` carries its constructor arguments (rebuild.json): a matching
    --num-classes loads, a different one is refused instead of being ignored."""
    from kinds import kind_of

    folder = save_zoo_model(build_zoo_model("torchvision:resnet18", num_classes=10), "torchvision:resnet18",
                            tmp_path / "m", {"num_classes": 10})  # fmt: skip
    kind = kind_of("torchvision:resnet18")
    assert kind.load(weights=folder, num_classes=10).model.fc.out_features == 10
    with pytest.raises(InputError, match=r"--num-classes 7: the model in .* was built with num_classes=10"):
        kind.load(weights=folder, num_classes=7)
