"""Zoo coverage (issue 27; the zoo lane): channel shuffle refused in one line naming the
layer, a conv classifier (SqueezeNet) pruned, GhostNet's depthwise/concatenated groups
pruned, a FLOPs target below the floor refused with the floor or pruned to it on request."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from modhifi_core import prune
from modhifi_core.errors import InputError
from modhifi_core.sources.torchvision_zoo import build_zoo_model, load_zoo_folder

SMALL = ["--num-classes", "10", "--image-size", "32", "--calibration", "gaussian", "--calibration-samples", "8"]


def weights_of(source: str, folder) -> str:
    torch.manual_seed(0)
    path = folder / f"{source.split(':')[1]}.safetensors"
    save_file(build_zoo_model(source, num_classes=10).state_dict(), str(path))
    return str(path)


def test_channel_shuffle_is_refused_in_one_line_naming_the_layer(cli, tmp_path):
    weights = weights_of("torchvision:shufflenet_v2_x0_5", tmp_path)
    out = tmp_path / "o"
    result = cli("prune", "--model", "torchvision:shufflenet_v2_x0_5", "--weights", weights, *SMALL, "--out", out)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "channel shuffle" in result.stderr and "after layer 'stage" in result.stderr
    assert not out.exists()


def test_squeezenet_conv_classifier_is_pruned_and_reloads(cli, tmp_path):
    weights = weights_of("torchvision:squeezenet1_1", tmp_path)
    out = tmp_path / "pruned"
    result = cli(
        "prune", "--model", "torchvision:squeezenet1_1", "--weights", weights, *SMALL, "--target-flops", 0.5,
        "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.json()["flops_ratio"] == pytest.approx(0.5, abs=0.02)
    pruned = load_zoo_folder(out)
    assert pruned.classifier[1].out_channels == 10  # the classes stay
    assert pruned.classifier[1].in_channels < 512
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_ghostnet_groups_through_depthwise_convs_and_concatenations_are_pruned():
    model = build_zoo_model("timm:ghostnet_050", num_classes=10)
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    with pytest.warns(UserWarning, match="left untouched"):  # the ghost modules' sliced concatenations
        result = prune(model, images, 0.5, batch_size=8)
    assert result.report["flops_ratio"] == pytest.approx(0.5, abs=0.02)
    cheap = result.model.blocks[1][0].ghost1.cheap_operation[0]
    assert cheap.out_channels < model.blocks[1][0].ghost1.cheap_operation[0].out_channels
    assert not any("depthwise" in reason for reason in result.report["untouched_groups"].values())
    assert result.model(images).shape == (8, 10)


def test_a_target_below_the_floor_says_the_floor_and_allow_floor_prunes_to_it(cli, tmp_path):
    weights = weights_of("torchvision:squeezenet1_1", tmp_path)
    args = ["prune", "--model", "torchvision:squeezenet1_1", "--weights", weights, *SMALL, "--target-flops", 0.0005]
    refused = cli(*args, "--out", tmp_path / "refused")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "below this architecture's floor of" in refused.stderr and "--allow-floor" in refused.stderr
    floor = float(refused.stderr.split("floor of ")[1].split(":")[0])
    pruned = cli(*args, "--allow-floor", "--out", tmp_path / "floor", "--json")
    assert pruned.returncode == 0, pruned.stderr
    report = pruned.json()
    assert report["flops_floor"] == pytest.approx(floor, abs=1e-3)
    assert report["flops_ratio"] == pytest.approx(floor, abs=0.02)


def test_the_operation_refuses_a_target_below_the_floor_in_one_line():
    model = build_zoo_model("torchvision:squeezenet1_1", num_classes=10)
    with pytest.raises(InputError, match="floor of") as info:
        prune(model, torch.randn(4, 3, 32, 32), 0.0005, batch_size=4)
    assert "\n" not in str(info.value)
