"""Data-free calibration samples: model inversion is recognised by the model far above
chance and matches BN statistics, is seeded, the gaussian baseline and user folders
work, the artifact round-trips, and bad input fails with one line and nothing written."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import ArrayDataset, load_sample_folder
from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.safe_io import sha256_file
from modhifi_core.synthesis import (
    InversionConfig,
    check_output_folder,
    load_synthetic,
    save_synthetic,
    synthesize,
)
from modhifi_core.synthesis.inversion import BatchStatisticsLoss, total_variation
from modhifi_core.synthesis.preview import render_preview
from modhifi_core.synthesis.quality import agreement, diversity

SHAPE = (1, 8, 8)
FAST = InversionConfig(steps=60, batch_size=100)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tiny_digits_checkpoint):
    return load_checkpoint(tiny_digits_checkpoint).model


@pytest.fixture(scope="module")
def inverted(tiny):
    return synthesize(tiny, 10, image_shape=SHAPE, config=FAST, seed=0)


def test_inverted_samples_are_recognised_as_their_class_far_above_chance(inverted):
    samples = inverted.samples
    assert samples.images.shape == (100, *SHAPE) and torch.isfinite(samples.images).all()
    assert torch.bincount(samples.labels).tolist() == [10] * 10
    assert inverted.quality["agreement"] >= 80.0, inverted.quality  # chance is 10%
    assert len(inverted.quality["agreement_per_class"]) == 10
    assert inverted.method == "deepinversion" and inverted.warnings == ()
    assert inverted.seconds > 0


def test_inversion_drives_the_bn_statistics_toward_the_running_statistics(inverted, tiny, digits):
    q = inverted.quality
    assert q["bn_loss_end"] < 0.2 * q["bn_loss_start"], q
    statistics = BatchStatisticsLoss(tiny, first_weight=10.0)
    try:
        with torch.no_grad():
            tiny(torch.randn(100, *SHAPE, generator=torch.Generator().manual_seed(1)))
            noise = float(statistics.loss())
            tiny(inverted.samples.images)
            synthetic = float(statistics.loss())
    finally:
        statistics.remove()
    assert synthetic < 0.25 * noise


def test_bn_statistics_loss_is_zero_when_batch_matches_running_statistics():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), unbiased=False, keepdim=True)
    matched = x * bn.running_var.sqrt().view(1, 3, 1, 1) + bn.running_mean.view(1, 3, 1, 1)
    statistics = BatchStatisticsLoss(bn)
    bn(matched)
    assert float(statistics.loss()) == pytest.approx(0.0, abs=1e-4)
    bn(matched + 1.0)
    assert float(statistics.loss()) == pytest.approx(3**0.5, rel=1e-4)  # ‖(1, 1, 1)‖₂, variances unchanged
    statistics.remove()
    assert not bn._forward_hooks


def test_total_variation_is_zero_for_a_constant_image():
    assert float(total_variation(torch.full((2, 1, 4, 4), 3.0))) == 0.0
    stripes = torch.tensor([[0.0, 1.0] * 2] * 4).view(1, 1, 4, 4)
    assert float(total_variation(stripes)) == pytest.approx(1.0)


def test_inversion_is_seeded_and_leaves_the_model_unchanged(tiny, tmp_path):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    config = InversionConfig(steps=4, batch_size=20)
    a = synthesize(tiny, 2, image_shape=SHAPE, config=config, seed=3)
    b = synthesize(tiny, 2, image_shape=SHAPE, config=config, seed=3)
    c = synthesize(tiny, 2, image_shape=SHAPE, config=config, seed=4)
    assert torch.equal(a.samples.images, b.samples.images)
    assert not torch.equal(a.samples.images, c.samples.images)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())
    assert not tiny.training and all(p.requires_grad for p in tiny.parameters())
    save_synthetic(a, tmp_path / "a")
    save_synthetic(b, tmp_path / "b")
    for name in ("samples.npz", "synthesis.json", "preview.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_subset_of_classes(tiny):
    result = synthesize(tiny, 3, image_shape=SHAPE, method="gaussian", classes=[3])
    assert result.samples.labels.tolist() == [3, 3, 3] and result.classes == [3]
    assert result.samples.num_classes == 10


def test_gaussian_baseline_is_noise_at_chance(tiny):
    result = synthesize(tiny, 20, image_shape=SHAPE, method="gaussian", seed=1)
    images = result.samples.images
    assert images.shape == (200, *SHAPE)
    assert abs(float(images.mean())) < 0.1 and abs(float(images.std()) - 1.0) < 0.1
    assert result.quality["agreement"] < 50.0
    assert "bn_loss_start" not in result.quality and result.config == {}
    again = synthesize(tiny, 20, image_shape=SHAPE, method="gaussian", seed=1)
    assert torch.equal(images, again.samples.images)


def test_model_without_batchnorm_inverts_with_a_warning():
    torch.manual_seed(0)
    vit = build_model(ModelConfig(name="vit", width=16, vit_depth=1)).eval()
    with pytest.warns(UserWarning, match="no BatchNorm"):
        result = synthesize(vit, 1, image_shape=SHAPE, config=InversionConfig(steps=2))
    assert result.warnings and "bn_loss_start" not in result.quality
    assert result.samples.images.shape == (10, *SHAPE)


def test_artifact_round_trips_through_the_shared_folder_reader(inverted, tmp_path, digits, tiny):
    out = tmp_path / "synthetic"
    manifest = save_synthetic(inverted, out, parents={"model": "abc"})
    assert sorted(p.name for p in out.iterdir()) == ["preview.png", "samples.npz", "synthesis.json"]
    assert (out / "preview.png").read_bytes().startswith(PNG)
    assert manifest["samples"] == 100 and manifest["parents"] == {"model": "abc"}
    assert manifest["quality"]["agreement"] == inverted.quality["agreement"]
    for loaded in (load_synthetic(out), load_sample_folder(out, num_classes=10)):
        assert torch.equal(loaded.images, inverted.samples.images)
        assert torch.equal(loaded.labels, inverted.samples.labels) and loaded.num_classes == 10
    again = synthesize(tiny, None, image_shape=SHAPE, method="folder", source=out)
    assert torch.equal(again.samples.images, inverted.samples.images)
    assert again.quality["agreement"] == pytest.approx(inverted.quality["agreement"])
    capped = synthesize(tiny, 2, image_shape=SHAPE, method="folder", source=out, classes=[4, 7])
    assert capped.samples.labels.tolist() == [4, 7, 4, 7]


def test_a_forget_class_only_artifact_keeps_the_models_class_count(tiny, tmp_path):
    result = synthesize(tiny, 4, image_shape=SHAPE, method="gaussian", classes=[9])
    save_synthetic(result, tmp_path / "forget")
    assert load_synthetic(tmp_path / "forget").num_classes == 10


def test_unlabelled_folder_samples_take_the_models_prediction(tiny, tmp_path):
    images = np.random.default_rng(0).normal(size=(12, *SHAPE)).astype(np.float32)
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "x.npz", images=images)
    result = synthesize(tiny, None, image_shape=SHAPE, method="folder", source=tmp_path / "in")
    assert (result.samples.labels >= 0).all() and len(result.samples) == 12
    assert torch.equal(result.samples.labels, result.predicted)
    assert result.quality["pseudo_labelled"] == 12 and np.isnan(result.quality["agreement"])


def test_replacing_an_artifact_and_refusing_a_foreign_folder(tiny, tmp_path):
    out = tmp_path / "out"
    save_synthetic(synthesize(tiny, 1, image_shape=SHAPE, method="gaussian", seed=0), out)
    save_synthetic(synthesize(tiny, 2, image_shape=SHAPE, method="gaussian", seed=1), out)
    assert len(load_synthetic(out)) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no staging folders left behind"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        check_output_folder(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_class": 0}, "per_class"),
        ({"per_class": -3}, "per_class"),
        ({"per_class": True}, "per_class"),
        ({"per_class": None}, "needs per_class"),
        ({"method": "diffusion"}, "unknown synthesis method"),
        ({"classes": [10]}, "class 10 does not exist"),
        ({"classes": []}, "at least one class"),
        ({"method": "folder"}, "source folder"),
        ({"image_shape": (3, 8, 8)}, "does not take inputs"),
    ],
)
def test_bad_arguments_are_refused(tiny, kwargs, message):
    args = {"per_class": 2, "image_shape": SHAPE, "method": "gaussian", **kwargs}
    with pytest.raises(InputError, match=message):
        synthesize(tiny, args.pop("per_class"), **args)


def test_bad_folders_are_refused(tiny, tmp_path):
    def folder_run(path):
        return synthesize(tiny, None, image_shape=SHAPE, method="folder", source=path)

    with pytest.raises(InputError, match="not found"):
        folder_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .npz or .pt"):
        folder_run(tmp_path / "empty")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "a.npz").write_bytes(b"not an archive")
    with pytest.raises(InputError, match="unreadable"):
        folder_run(tmp_path / "garbage")
    (tmp_path / "labels").mkdir()
    np.savez(tmp_path / "labels" / "a.npz", images=np.zeros((2, *SHAPE), np.float32), labels=np.array([1, 10]))
    with pytest.raises(InputError, match="labels"):
        folder_run(tmp_path / "labels")
    (tmp_path / "shape").mkdir()
    np.savez(tmp_path / "shape" / "a.npz", images=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(InputError, match="shape"):
        folder_run(tmp_path / "shape")
    (tmp_path / "none").mkdir()
    np.savez(tmp_path / "none" / "a.npz", images=np.zeros((0, *SHAPE), np.float32))
    with pytest.raises(InputError, match="no samples"):
        folder_run(tmp_path / "none")


def test_quality_figures():
    assert agreement(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0])) == pytest.approx(200 / 3)
    assert agreement(torch.tensor([1, 2]), torch.tensor([-1, 2])) == 100.0
    assert np.isnan(agreement(torch.tensor([1]), torch.tensor([-1])))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    same = ArrayDataset(torch.randn(1, *SHAPE).repeat(6, 1, 1, 1), torch.tensor([0, 0, 0, 1, 1, 1]), 3)
    assert diversity(model, same) == pytest.approx(0.0, abs=1e-9)
    varied = ArrayDataset(torch.randn(6, *SHAPE), same.labels, 3)
    assert 0.0 < diversity(model, varied) <= 2.0


def test_preview_is_a_png_for_grey_and_colour_images():
    labels = torch.tensor([0, 1, 1, -1])
    grey = render_preview(ArrayDataset(torch.randn(4, *SHAPE), labels, 2), torch.tensor([0, 0, 1, 0]), "grey")
    colour = render_preview(ArrayDataset(torch.randn(4, 3, 8, 8), labels, 2), None, "colour")
    assert grey.startswith(PNG) and colour.startswith(PNG)


def test_cli_synthesize_writes_the_artifact(cli, tiny_digits_checkpoint, tmp_path):
    out = tmp_path / "syn"
    args = ["synthesize", "--model", tiny_digits_checkpoint, "--per-class", 3, "--steps", 5, "--out", out]
    result = cli(*args, "--reference", "digits", "--json")
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["samples"] == 30 and report["method"] == "deepinversion"
    for key in ("agreement", "diversity", "diversity_real", "diversity_ratio", "bn_loss_end", "seconds"):
        assert isinstance(report[key], float), key
    assert len(load_synthetic(out)) == 30 and (out / "preview.png").read_bytes().startswith(PNG)
    assert report["samples_sha256"] == sha256_file(out / "samples.npz")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--per-class", "0"], "--per-class must be at least 1"),
        (["--per-class", "-2"], "--per-class must be at least 1"),
        (["--method", "folder", "--source", "{tmp}/nothing"], "sample folder not found"),
        (["--method", "folder", "--source", "{tmp}/empty"], "holds no .npz or .pt files"),
        (["--method", "folder", "--source", "{tmp}/bad_labels"], "must lie in [0, 10)"),
        (["--method", "magic"], "unknown --method"),
        (["--classes", "3,x"], "comma-separated integers"),
        (["--classes", "12"], "class 12 does not exist"),
    ],
)
def test_cli_synthesize_bad_input_exits_2_and_writes_nothing(cli, tiny_digits_checkpoint, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad_labels").mkdir()
    np.savez(tmp_path / "bad_labels" / "a.npz", images=np.zeros((2, *SHAPE), np.float32), labels=np.array([0, 10]))
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cli("synthesize", "--model", tiny_digits_checkpoint, "--out", out, "--method", "gaussian", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()
