"""`modhifi prune/evaluate/unlearn --model hf:DIR` on image classifiers: tiny HF ResNet and
ViT folders trained here on digits (seconds), an untrained Swin, each CLI path end to end
(outputs reloaded and measured again), and every bad input as one line with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers", reason="the HF image commands need transformers")

from transformers import (  # noqa: E402
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    GPT2Config,
    GPT2LMHeadModel,
    SwinConfig,
    SwinForImageClassification,
)
from vision_models import trained_resnet, trained_vit  # noqa: E402

from modhifi_core.safe_io import sha256_file  # noqa: E402
from modhifi_core.training import accuracy  # noqa: E402
from modhifi_core.vision import LogitsOnly, load_hf_pruned  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory, digits):
    """hf folders: `resnet`, `vit` (trained on digits), `swin`, `convnext` (random, 16 px), `gpt2` (a causal LM)."""
    root = tmp_path_factory.mktemp("vision_cli")
    trained_resnet(digits).save_pretrained(root / "resnet")
    trained_vit(digits).save_pretrained(root / "vit")
    torch.manual_seed(0)
    swin = SwinConfig(
        image_size=16, patch_size=2, num_channels=1, embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4,
        num_labels=10,
    )  # fmt: skip
    SwinForImageClassification(swin).eval().save_pretrained(root / "swin")
    convnext = ConvNextConfig(
        num_channels=1, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10, image_size=16
    )
    ConvNextForImageClassification(convnext).eval().save_pretrained(root / "convnext")
    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0)
    ).save_pretrained(root / "gpt2")
    return root


def lineage(folder) -> dict:
    return json.loads((folder / "modhifi.json").read_text())


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def test_resnet_pruned_data_free_to_a_flops_target_then_evaluated_again(cli, folders, tmp_path, digits):
    out = tmp_path / "pruned"
    result = cli(
        "prune", "--model", f"hf:{folders / 'resnet'}", "--target-flops", 0.6, "--calibration", "synthetic",
        "--calibration-samples", 64, "--data", "digits", "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["components"] == "channels" and report["flops_ratio"] == pytest.approx(0.6, abs=0.02)
    assert report["params_ratio"] < 0.8 and report["latency_speedup"] > 0 and report["seconds"] > 0
    assert report["dense_test_accuracy"] > 90 and report["test_accuracy"] > 80, "data-free pruning keeps the model"
    record = lineage(out)
    assert record["operation"] == "prune" and record["params"]["target_flops"] == 0.6
    assert record["parents"]["model"] == {"model.safetensors": sha256_file(folders / "resnet" / "model.safetensors")}
    assert "seconds" not in record["metrics"] and "latency_speedup" not in record["metrics"], "no timings in lineage"
    # one width per stage, written into the config: a stock folder
    assert report["stock_config"] is True and not (out / "modhifi_shapes.json").exists()
    stock = AutoModelForImageClassification.from_pretrained(str(out), local_files_only=True).eval()
    assert stock.config.hidden_sizes[-1] < 32 and stock.resnet.embedder.embedder.convolution.out_channels < 16
    assert accuracy(LogitsOnly(stock).eval(), digits.test) == pytest.approx(report["test_accuracy"], abs=1e-6)
    again = cli("evaluate", "--model", f"hf:{out}", "--data", "digits", "--json")
    assert again.returncode == 0, again.stderr
    assert again.json()["test_accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-6)
    # a folder of labelled samples is data too: here the digits test split
    samples = tmp_path / "samples"
    samples.mkdir()
    np.savez(samples / "test.npz", images=digits.test.images.numpy(), labels=digits.test.labels.numpy())
    on_folder = cli("evaluate", "--model", f"hf:{out}", "--data", samples, "--json")
    assert on_folder.returncode == 0, on_folder.stderr
    assert on_folder.json()["test_accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-6)


def test_a_cnn_takes_the_channel_pruner_options(cli, folders, tmp_path):
    """--compensation (like --score, --rounds, ...) reaches the channel pruner of an HF CNN:
    no refit and the least-squares refit keep the same channels but not the same weights."""
    outs = {}
    for compensation in ("none", "full"):
        outs[compensation] = out = tmp_path / compensation
        args = ("prune", "--model", f"hf:{folders / 'resnet'}", "--target-flops", 0.6, "--calibration-samples", 64)
        result = cli(*args, "--compensation", compensation, "--latency-repeats", 1, "--out", out, "--json")
        assert result.returncode == 0, result.stderr
    none, full = (load_file(outs[c] / "model.safetensors") for c in ("none", "full"))
    assert {k: v.shape for k, v in none.items()} == {k: v.shape for k, v in full.items()}
    assert any(not torch.equal(none[k], full[k]) for k in none)


def test_vit_mlp_neurons_pruned_to_a_params_target_load_in_stock_transformers(cli, folders, tmp_path, digits):
    out = tmp_path / "vit-pruned"
    result = cli(
        "prune", "--model", f"hf:{folders / 'vit'}", "--target-params", 0.75, "--calibration", "real",
        "--calibration-samples", 128, "--data", "digits", "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["components"] == "mlp" and report["stock_config"] is True
    assert 0.7 <= report["params_ratio"] <= 0.75 and report["flops_ratio"] < 1
    assert report["test_accuracy"] > report["dense_test_accuracy"] - 10
    assert not (out / "modhifi_shapes.json").exists()
    stock = AutoModelForImageClassification.from_pretrained(str(out), local_files_only=True).eval()
    widths = {m.out_features for n, m in stock.named_modules() if n.endswith("mlp.fc1")}
    assert widths == {stock.config.intermediate_size} and stock.config.intermediate_size < 64
    assert accuracy(LogitsOnly(stock).eval(), digits.test) == pytest.approx(report["test_accuracy"], abs=1e-6)


def test_swin_mlp_pruned_to_a_flops_target_keeps_a_stock_mlp_ratio(cli, folders, tmp_path):
    out, calibration = tmp_path / "swin-pruned", tmp_path / "calibration"
    calibration.mkdir()  # a folder of unlabelled samples calibrates too
    np.savez(calibration / "x.npz", images=np.random.default_rng(0).standard_normal((24, 1, 16, 16), dtype=np.float32))
    result = cli(
        "prune", "--model", f"hf:{folders / 'swin'}", "--target-flops", 0.7, "--calibration", calibration,
        "--calibration-samples", 16, "--method", "wanda-sp", "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["stock_config"] is True and 0.65 <= report["flops_ratio"] <= 0.7
    stock = AutoModelForImageClassification.from_pretrained(str(out), local_files_only=True).eval()
    fc1 = [m.out_features for n, m in stock.named_modules() if n.endswith("fc1")]
    assert fc1[-1] == 2 * fc1[0] < 2 * 64, "each stage keeps the same fraction (mlp_ratio * dim)"
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(stock, x), logits(load_hf_pruned(out), x), rtol=0, atol=0)


def test_convnext_reaches_its_flops_target_and_names_what_stays_untouched(cli, folders, tmp_path):
    out = tmp_path / "convnext-pruned"
    result = cli(
        "prune", "--model", f"hf:{folders / 'convnext'}", "--target-flops", 0.8, "--calibration", "gaussian",
        "--calibration-samples", 16, "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["flops_ratio"] == pytest.approx(0.8, abs=0.02)
    assert any("LayerNorm" in reason for reason in report["untouched"].values()), report["untouched"]
    # per-layer MLP widths (a stock ConvNeXt would need its LayerNorm'd residual stream pruned)
    assert report["stock_config"] is False and (out / "modhifi_shapes.json").is_file()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert logits(load_hf_pruned(out), x).shape == (2, 10)


def test_resnet_forgets_a_class_data_free_and_evaluate_sees_it(cli, folders, tmp_path):
    out = tmp_path / "unlearned"
    result = cli(
        "unlearn", "--model", f"hf:{folders / 'resnet'}", "--forget-class", 3, "--data", "digits", "--out", out,
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["method"] == "modhifi" and report["data"] == "synthetic"
    assert report["before_UA"] < 5 and report["UA"] > 50, "ModHiFi-U (zero, last stage) forgets class 3"
    assert report["RA"] > 80 and {"TA", "MIA", "before_RA", "seconds"} <= set(report)
    assert lineage(out)["operation"] == "unlearn" and lineage(out)["params"]["forget_class"] == 3
    assert not (out / "modhifi_shapes.json").exists(), "same shapes: a stock folder"
    again = cli("evaluate", "--model", f"hf:{out}", "--data", "digits", "--forget-class", 3, "--json")
    assert again.returncode == 0, again.stderr
    assert again.json()["UA"] == pytest.approx(report["UA"], abs=1e-6)


def test_vit_unlearning_negates_only_mlp_fc2_weights(cli, folders, tmp_path):
    out = tmp_path / "vit-unlearned"
    result = cli(
        "unlearn", "--model", f"hf:{folders / 'vit'}", "--forget-class", 3, "--data", "digits", "--out", out,
        "--set", "fraction=0.2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.json()["UA"] >= result.json()["before_UA"]
    before = dict(load_hf_pruned(folders / "vit").named_parameters())
    after = dict(AutoModelForImageClassification.from_pretrained(str(out), local_files_only=True).named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert len(changed) == 2 and all(name.endswith("mlp.fc2.weight") for name in changed), changed
    for name in changed:
        flipped = before[name] != after[name]
        torch.testing.assert_close(after[name][flipped], -before[name][flipped], rtol=0, atol=0)
        assert 0 < flipped.float().mean() <= 0.25, "the forget class's HiFi components, fraction 0.2 per output"


BAD = [
    (["prune", "--model", "hf:{root}/nope", "--out", "{tmp}/o"], "does not exist"),
    (["evaluate", "--model", "hf:{root}/nope", "--data", "digits"], "does not exist"),
    (["evaluate", "--model", "hf:{root}/gpt2", "--data", "digits"],
     "--data is not an option of modhifi evaluate for a causal-lm model"),
    (["unlearn", "--model", "hf:{root}/gpt2", "--forget-class", "1", "--data", "digits", "--out", "{tmp}/o"],
     "modhifi unlearn does not apply to a causal-lm model"),
    (["unlearn", "--model", "hf:{root}/resnet", "--forget-class", "12", "--data", "digits", "--out", "{tmp}/o"],
     "forget class 12 does not exist"),
    (["evaluate", "--model", "hf:{root}/vit", "--data", "digits", "--forget-class", "10"], "does not exist"),
    (["unlearn", "--model", "hf:{root}/vit", "--forget-class", "1", "--out", "{tmp}/o"], "give --data"),
    (["evaluate", "--model", "hf:{root}/vit"], "give --data"),
    (["evaluate", "--model", "hf:{root}/vit", "--data", "{tmp}/nowhere"], "neither a dataset"),
    (["prune", "--model", "hf:{root}/resnet", "--target-params", "0.5", "--out", "{tmp}/o"], "takes --target-flops"),
    (["prune", "--model", "hf:{root}/vit", "--target-flops", "0.1", "--out", "{tmp}/o"], "out of reach"),
    (["prune", "--model", "hf:{root}/vit", "--method", "l2", "--out", "{tmp}/o"], "unknown method 'l2'"),
    (["prune", "--model", "hf:{root}/resnet", "--calibration", "real", "--out", "{tmp}/o"], "needs --data"),
    (["prune", "--model", "hf:{root}/resnet", "--weights", "{tmp}/w.pt", "--out", "{tmp}/o"],
     "--weights is not an option of modhifi prune for a image-classification model"),
    (["prune", "--model", "torchvision:resnet18", "--out", "{tmp}/o"], "needs --weights FILE"),
    (["unlearn", "--model", "hf:{root}/resnet", "--forget-random", "0.1", "--data", "digits", "--out", "{tmp}/o"],
     "--forget-random is not an option of modhifi unlearn for a image-classification model"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD, ids=[f"{a[0]}-{m[:24]}" for a, m in BAD])
def test_bad_image_input_is_one_line_and_writes_nothing(cli, folders, tmp_path, args, message):
    result = cli(*[a.format(root=folders, tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_a_calibration_folder_gives_a_seeded_subset_of_its_samples_in_order(tmp_path):
    """`--calibration FOLDER` of an image command: `samples` of the folder's images drawn by
    the seed (`calibration.seeded_subset`, the pipeline's draw too), in their file order; all
    of them when fewer; a folder of another image shape is one line."""

    from kinds.image.data import image_calibration
    from modhifi_core.calibration import seeded_subset
    from modhifi_core.data import load_sample_folder
    from modhifi_core.errors import InputError

    images = np.arange(12 * 3 * 4 * 4, dtype=np.float32).reshape(12, 3, 4, 4)
    np.savez(tmp_path / "samples.npz", images=images, labels=np.arange(12) % 3)
    picked = image_calibration(str(tmp_path), None, (3, 4, 4), None, 5, seed=7)
    first_pixel = picked.images[:, 0, 0, 0].tolist()
    assert len(picked) == 5 and first_pixel == sorted(first_pixel)
    assert torch.equal(picked.images, seeded_subset(load_sample_folder(tmp_path), 5, 7).images)
    assert not torch.equal(picked.images, image_calibration(str(tmp_path), None, (3, 4, 4), None, 5, seed=8).images)
    assert len(image_calibration(str(tmp_path), None, (3, 4, 4), None, 50, seed=7)) == 12
    with pytest.raises(InputError, match=r"samples of shape \(3, 4, 4\), the model takes \(3, 8, 8\)"):
        image_calibration(str(tmp_path), None, (3, 8, 8), None, 5, seed=7)


@pytest.mark.parametrize(
    "model, args, message",
    [
        (
            "image",
            ["--target-flops", "0.5", "--target-params", "0.8"],
            "give exactly one of target_flops and target_params",
        ),
        ("language", ["--target-flops", "0.5"], "--target-flops is not an option of modhifi prune for a causal-lm"),
        ("checkpoint", ["--target-params", "0.8"], "--target-params is not an option of modhifi prune for a zoo"),
    ],
)
def test_a_target_the_model_kind_does_not_take_is_one_line(cli, model, args, message, tmp_path, tiny_digits_checkpoint):
    """No target is dropped silently: both targets for an image model, --target-flops for a
    language model, --target-params for a checkpoint are refused before anything is pruned."""
    from llm_models import tiny
    from transformers import ResNetConfig, ResNetForImageClassification

    if model == "image":
        ResNetForImageClassification(
            ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)
        ).save_pretrained(tmp_path / "m")
    elif model == "language":
        tiny("llama").save_pretrained(tmp_path / "m")
    source = str(tiny_digits_checkpoint) if model == "checkpoint" else f"hf:{tmp_path / 'm'}"
    result = cli("prune", "--model", source, *args, "--out", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr[-800:]
    assert not (tmp_path / "out").exists()
