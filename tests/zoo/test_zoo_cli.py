"""`modhifi prune/evaluate/unlearn --model torchvision:ARCH --weights FILE` (the zoo lane:
run in the venv `scripts/zoo_venv.sh` builds; skipped elsewhere): a random-weight
ResNet-18 pruned, written as state dict + rebuild record + lineage, evaluated and
unlearned from that folder, and wrong weights refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from modhifi_core.safe_io import sha256_file
from modhifi_core.sources.torchvision_zoo import build_zoo_model, load_zoo_folder

ZOO = ["--num-classes", "10", "--image-size", "32"]


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.safetensors"
    save_file(build_zoo_model("torchvision:resnet18", num_classes=10).state_dict(), str(path))
    return path


def test_torchvision_resnet18_pruned_evaluated_and_unlearned_through_the_cli(cli, weights, tmp_path):
    out = tmp_path / "pruned"
    result = cli(
        "prune", "--model", "torchvision:resnet18", "--weights", weights, *ZOO, "--target-flops", 0.5,
        "--calibration", "gaussian", "--calibration-samples", 16, "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["components"] == "channels" and report["flops_ratio"] == pytest.approx(0.5, abs=0.02)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "modhifi.json", "rebuild.json"]
    record = json.loads((out / "modhifi.json").read_text())
    assert record["operation"] == "prune" and record["parents"]["model"] == {weights.name: sha256_file(weights)}
    pruned = load_zoo_folder(out)  # no pickled modules: weights + shapes
    assert sum(p.numel() for p in pruned.parameters()) < 0.8 * sum(
        p.numel() for p in build_zoo_model("torchvision:resnet18", num_classes=10).parameters()
    )
    again = cli("evaluate", "--model", "torchvision:resnet18", "--weights", out, "--image-size", 32, "--data", "digits")
    assert again.returncode == 0, again.stderr
    forgot = cli(
        "unlearn", "--model", "torchvision:resnet18", "--weights", out, "--image-size", 32, "--forget-class", 3,
        "--forget-data", "real", "--data", "digits", "--out", tmp_path / "unlearned", "--json",
    )  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert {"UA", "RA", "TA", "MIA"} <= set(forgot.json())
    assert (tmp_path / "unlearned" / "rebuild.json").is_file()


def test_weights_of_another_architecture_are_one_line(cli, tmp_path):
    other = tmp_path / "resnet50.safetensors"
    save_file(build_zoo_model("torchvision:resnet50", num_classes=10).state_dict(), str(other))
    result = cli("prune", "--model", "torchvision:resnet18", "--weights", other, *ZOO, "--out", tmp_path / "o")
    assert result.returncode == 2 and "does not fit torchvision:resnet18" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_a_folder_of_another_source_is_one_line(cli, weights, tmp_path):
    from modhifi_core.sources.torchvision_zoo import save_zoo_model

    folder = save_zoo_model(
        build_zoo_model("torchvision:resnet50", num_classes=10), "torchvision:resnet50", tmp_path / "r50"
    )
    result = cli("evaluate", "--model", "torchvision:resnet18", "--weights", folder, "--data", "digits")
    assert result.returncode == 2 and "holds a torchvision:resnet50 model" in result.stderr
