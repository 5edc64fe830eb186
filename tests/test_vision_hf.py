"""Hugging Face image classifiers (built from configs, random weights) through the
engine: CNNs pruned by `prune_model` via `prune_hf_classifier`, saved and reloaded with
identical outputs; HF ResNets with stock widths (their folders load in stock
transformers, no modhifi import), per-layer widths with the shape record on request;
ConvNeXt's depthwise groups left untouched and named; ViT/Swin MLP layer sets for
ModHiFi-U."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers", reason="the HF vision glue needs transformers")

from transformers import (  # noqa: E402
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from modhifi_core.batchnorm import recalibrate_batchnorm  # noqa: E402
from modhifi_core.errors import InputError  # noqa: E402
from modhifi_core.pruning.coupling import ChannelGroup  # noqa: E402
from modhifi_core.pruning.modhifi_p import FlopsTargetMissed  # noqa: E402
from modhifi_core.vision import (  # noqa: E402
    LogitsOnly,
    load_hf_pruned,
    mlp_output_layers,
    save_hf_pruned,
    stock_shape_difference,
)
from modhifi_core.vision.hf import SHAPES_FILE, check_shape_record  # noqa: E402
from modhifi_core.vision.modify import prune_hf_classifier  # noqa: E402
from modhifi_core.vision.stock_widths import ResNetWidths  # noqa: E402


def images(n: int, size: int = 32, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def tiny_resnet(layer_type: str = "basic") -> ResNetForImageClassification:
    torch.manual_seed(0)
    sizes = [16, 32, 64, 128] if layer_type == "basic" else [32, 64, 128, 256]
    config = ResNetConfig(
        num_channels=1, embedding_size=16, hidden_sizes=sizes, depths=[1, 1, 1, 1], layer_type=layer_type, num_labels=10
    )
    model = ResNetForImageClassification(config).eval()
    # random BN statistics on random inputs, so every channel carries signal
    recalibrate_batchnorm(LogitsOnly(model), images(64).split(16))
    return model


def tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def tiny_swin() -> SwinForImageClassification:
    torch.manual_seed(0)
    config = SwinConfig(
        image_size=16, patch_size=2, num_channels=1, embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4,
        num_labels=10,
    )  # fmt: skip
    return SwinForImageClassification(config).eval()


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def stock_resnet(layer_type: str) -> ResNetForImageClassification:
    """Stage widths where `round_to=8` still leaves each stage several widths to choose
    (a stock width is one per stage); two blocks in stage 0 tie two blocks' inner widths."""
    torch.manual_seed(0)
    sizes = [32, 64, 128] if layer_type == "basic" else [128, 256, 512]
    config = ResNetConfig(
        num_channels=1, embedding_size=32, hidden_sizes=sizes, depths=[2, 1, 1], layer_type=layer_type, num_labels=10
    )
    model = ResNetForImageClassification(config).eval()
    recalibrate_batchnorm(LogitsOnly(model), images(64).split(16))
    return model


STOCK_CASES = [
    (layer_type, method, target, round_to)
    for layer_type in ("basic", "bottleneck")
    for method in ("modhifi", "l2", "random")
    for target in (0.5, 0.25)
    for round_to in (1, 8)
]
PROBE = images(4, seed=1)


@pytest.fixture(scope="module")
def stock_pruned(tmp_path_factory):
    """Every STOCK_CASES case pruned with the default (stock) widths and saved: case ->
    (dense model, pruning result, folder); the pruned logits on PROBE in `expected.pt`."""
    root = tmp_path_factory.mktemp("stock")
    dense = {layer_type: stock_resnet(layer_type) for layer_type in ("basic", "bottleneck")}
    pruned, expected = {}, {}
    for case in STOCK_CASES:
        layer_type, method, target, round_to = case
        result = prune_hf_classifier(dense[layer_type], images(64), method, target_flops=target, round_to=round_to)
        folder = save_hf_pruned(result.model, root / "-".join(map(str, case)))
        pruned[case] = (dense[layer_type], result, folder)
        expected[str(folder)] = logits(result.model, PROBE)
    torch.save({"probe": PROBE, "expected": expected}, root / "expected.pt")
    return pruned, root


def stage_widths(model: ResNetForImageClassification) -> tuple[int, list[set[int]], list[set[int]]]:
    """(stem width, per stage {residual widths}, per stage {inner widths}) of the layers."""
    resnet = model.resnet
    residual, inner = [], []
    for stage in resnet.encoder.stages:
        convs = [[conv.convolution.out_channels for conv in block.layer] for block in stage.layers]
        residual.append({widths[-1] for widths in convs})
        inner.append({width for widths in convs for width in widths[:-1]})
    return resnet.embedder.embedder.convolution.out_channels, residual, inner


@pytest.mark.parametrize("case", STOCK_CASES, ids=["-".join(map(str, c)) for c in STOCK_CASES])
def test_hf_resnet_pruned_with_stock_widths_is_its_new_config(stock_pruned, case):
    layer_type, _, target, round_to = case
    dense, result, folder = stock_pruned[0][case]
    assert abs(result.report["flops_ratio"] - target) <= 0.02
    assert result.report["width_rule"] == "stock" and not stock_shape_difference(result.model)
    assert not (folder / SHAPES_FILE).exists(), "a stock folder"
    config = result.model.config
    stem, residual, inner = stage_widths(result.model)
    assert stem == config.embedding_size and residual == [{width} for width in config.hidden_sizes]
    reduction = 4 if layer_type == "bottleneck" else 1
    assert inner == [{width // reduction} for width in config.hidden_sizes], "one inner width per stage"
    assert sum(config.hidden_sizes) < sum(dense.config.hidden_sizes), "the stages are pruned"
    if round_to == 8:
        assert all(width % (8 * reduction) == 0 for width in config.hidden_sizes) and stem % 8 == 0
    assert dense.config.hidden_sizes == stock_resnet(layer_type).config.hidden_sizes, "the input is untouched"
    again = load_hf_pruned(folder)  # the stock path: no shape record
    torch.testing.assert_close(logits(again, PROBE), logits(result.model, PROBE), rtol=0, atol=0)


def test_stock_width_folders_load_in_stock_transformers_without_modhifi(stock_pruned):
    """One fresh interpreter, outside the repo, never importing modhifi: each folder through
    `AutoModelForImageClassification.from_pretrained`, logits against the pruned models'.
    The weights and the network are the same; only the other process's thread count may
    sum the convolutions in another order, hence a float32 rounding tolerance."""
    _, root = stock_pruned
    script = textwrap.dedent(
        """
        import json, sys
        import torch
        from transformers import AutoModelForImageClassification
        data = torch.load(sys.argv[1], weights_only=True)
        worst = {}
        for folder, expected in data["expected"].items():
            model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
            with torch.no_grad():
                got = model(pixel_values=data["probe"]).logits
            assert got.shape == expected.shape, (folder, got.shape)
            worst[folder] = float((got - expected).abs().max() / expected.abs().max())
        assert not any(name.startswith("modhifi") for name in sys.modules), "modhifi was imported"
        print(json.dumps(worst))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script, str(root / "expected.pt")], cwd=root, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    worst = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(worst) == len(STOCK_CASES) and max(worst.values()) <= 1e-5, worst


def test_free_widths_write_the_shape_record_and_reload_through_modhifi(tmp_path):
    model = stock_resnet("bottleneck")
    result = prune_hf_classifier(model, images(64), "modhifi", target_flops=0.5, widths="free")
    assert abs(result.report["flops_ratio"] - 0.5) <= 0.02 and result.report["width_rule"] == "free"
    assert result.report["shape_record"], "pruning resizes layers"
    assert result.model.resnet.embedder.embedder.convolution.in_channels == 1, "image channels are never pruned"
    assert result.model.classifier[-1].out_features == 10, "classes are never pruned"
    assert result.model.config.hidden_sizes == model.config.hidden_sizes, "the config is the dense one"
    assert stock_shape_difference(result.model), "per-layer widths a ResNet config cannot say"
    folder = save_hf_pruned(result.model, tmp_path / "pruned")
    assert (folder / SHAPES_FILE).is_file()
    check_shape_record(folder)  # what `modhifi run` checks at start passes a good record
    again = load_hf_pruned(folder)
    torch.testing.assert_close(logits(again, PROBE), logits(result.model, PROBE), rtol=0, atol=0)


def test_stock_widths_that_miss_the_target_fall_back_to_free_widths_unless_asked(tmp_path):
    """Two narrow stages (the CLI's digits ResNet at 8 px): one width step moves the FLOPs
    by ~6%, so stock widths land at 0.478 for 0.5; by default the pruning says so and
    keeps per-layer widths, `widths="stock"` refuses."""
    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10
    )
    model = ResNetForImageClassification(config).eval()
    x = images(64, size=8)
    recalibrate_batchnorm(LogitsOnly(model), x.split(16))
    with pytest.warns(UserWarning, match="with stock widths .*per-layer widths instead"):
        result = prune_hf_classifier(model, x, "modhifi", target_flops=0.5)
    assert abs(result.report["flops_ratio"] - 0.5) <= 0.02 and result.report["width_rule"] == "free"
    assert "cannot be met" in result.report["stock_widths_missed"]
    assert (save_hf_pruned(result.model, tmp_path / "free") / SHAPES_FILE).is_file()
    with pytest.raises(FlopsTargetMissed, match="with stock widths"):
        prune_hf_classifier(model, x, "modhifi", target_flops=0.5, widths="stock")


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        (lambda: stock_resnet("basic"), {"allocation": "union", "widths": "stock"}, "stock widths need uniform"),
        (lambda: stock_resnet("basic"), {"widths": "tied"}, "widths must be one of stock, free"),
        (
            lambda: ConvNextForImageClassification(ConvNextConfig(num_channels=1, hidden_sizes=[8, 16, 32, 64])),
            {"widths": "stock"},
            "stock widths exist for HF resnet models, not 'convnext'",
        ),
    ],
    ids=["union", "unknown", "convnext"],
)
def test_stock_widths_refuse_what_they_cannot_describe(factory, options, message):
    with pytest.raises(InputError, match=message):
        prune_hf_classifier(factory(), images(8), "modhifi", target_flops=0.5, **options)


def test_union_allocation_keeps_free_widths_by_default():
    result = prune_hf_classifier(stock_resnet("basic"), images(64), "modhifi", target_flops=0.5, allocation="union")
    assert result.report["width_rule"] == "free" and stock_shape_difference(result.model)


def group(root: str, size: int, *producers: str) -> ChannelGroup:
    return ChannelGroup(root, size, {}, list(producers), None)


@pytest.mark.parametrize(("strides", "stem"), [(False, 15), (True, 16)])
def test_a_stem_with_a_shortcut_keeps_a_width_other_than_stage_0(strides, stem):
    """Stage 0's first block has a shortcut conv only because the stem (16) and stage 0
    (32) differ, unless it strides: equal pruned widths would build no shortcut."""
    prefix = "model.resnet.encoder.stages.0.layers.0"
    groups = [
        group("stem", 16, "model.resnet.embedder.embedder.convolution"),
        group("res", 32, f"{prefix}.layer.1.convolution", f"{prefix}.shortcut.convolution"),
        group("inner", 32, f"{prefix}.layer.0.convolution"),
    ]
    counts = ResNetWidths("basic", 1, stem_strides=strides)(groups, {"stem": 16, "res": 16, "inner": 16})
    assert counts == {"stem": stem, "res": 16, "inner": 16}


def test_a_group_no_resnet_rule_describes_is_refused():
    groups = [group("odd", 8, "model.resnet.encoder.stages.0.layers.0.layer.0.convolution", "model.other.conv")]
    with pytest.raises(InputError, match="fits no HF ResNet stock width"):
        ResNetWidths("basic")(groups, {"odd": 4})


def test_unpruned_folder_loads_in_stock_transformers(tmp_path):
    model = tiny_resnet()
    folder = save_hf_pruned(model, tmp_path / "dense")
    stock = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True).eval()
    x = images(2, seed=2)
    torch.testing.assert_close(logits(stock, x), logits(model, x), rtol=0, atol=0)


def test_convnext_prunes_mlp_neurons_and_names_the_layernormed_depthwise_groups(tmp_path):
    torch.manual_seed(0)
    config = ConvNextConfig(num_channels=1, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10)
    model = ConvNextForImageClassification(config).eval()
    result = prune_hf_classifier(model, images(32), "l2", target_flops=None, keep_fraction=0.5)
    assert result.report["width_rule"] == "free", "no stock widths: the residual stream is not pruned exactly"
    untouched = result.report["untouched_groups"]
    # the depthwise convs' channels are the LayerNorm'd residual stream's
    assert any("LayerNorm" in reason for reason in untouched.values()), untouched
    pruned_layers = set(result.report["shape_record"])
    assert any(name.endswith("pwconv1") for name in pruned_layers)
    for name, module in result.model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            assert module.weight.shape == model.get_submodule(name).weight.shape, f"depthwise {name} changed"
    folder = save_hf_pruned(result.model, tmp_path / "convnext")
    assert (folder / SHAPES_FILE).is_file(), "per-layer MLP widths: the shape record"
    check_shape_record(folder)
    again = load_hf_pruned(folder)
    x = images(2, seed=3)
    torch.testing.assert_close(logits(again, x), logits(result.model, x), rtol=0, atol=0)


def test_layernorm_transformers_are_refused_by_the_channel_pruner():
    with pytest.raises(InputError, match="MLP neurons only"):
        prune_hf_classifier(tiny_vit(), images(8, 16), "l2", target_flops=0.5)


@pytest.mark.parametrize("factory, count", [(tiny_vit, 3), (tiny_swin, 3)])
def test_mlp_output_layers_are_the_fc2_of_every_block(factory, count):
    model = factory()
    names = mlp_output_layers(model)
    assert len(names) == count
    wrapper = LogitsOnly(model)
    for name in names:
        layer = wrapper.get_submodule(name)
        # fc2 reads the MLP neurons (4x... here 2x-4x the stream) and writes the stream
        assert layer.in_features > layer.out_features
    assert not any("attention" in name for name in names)
    with pytest.raises(InputError, match="no residual-stream MLP"):
        mlp_output_layers(tiny_resnet())


def test_modhifi_u_on_a_vit_negates_hifi_components_of_every_mlp_fc2_only():
    import math

    from modhifi_core.data import ArrayDataset
    from modhifi_core.splits import class_split
    from modhifi_core.vision.modify import unlearn_hf_classifier

    model = tiny_vit()
    before = {name: p.detach().clone() for name, p in LogitsOnly(model).named_parameters()}
    x = images(40, 16, seed=4)
    labels = torch.arange(40) % 10
    split = class_split(ArrayDataset(x, labels, 10), 3)
    result = unlearn_hf_classifier(model, split, fraction=0.1)
    fc2 = mlp_output_layers(model)
    assert result.log["layers"] == list(fc2) and result.log["edit"] == "negate"
    assert isinstance(result.model, ViTForImageClassification)
    after = dict(LogitsOnly(result.model).named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in LogitsOnly(model).named_parameters()), "input untouched"
    for name, old in before.items():
        new = after[name].detach()
        layer = name.rsplit(".", 1)[0]
        if layer in fc2 and name.endswith("weight"):
            changed = new != old
            # every output keeps all but its top ceil(0.1 * 64) = 7 inputs; those flip sign
            assert changed.sum(1).tolist() == [math.ceil(0.1 * old.shape[1])] * old.shape[0]
            torch.testing.assert_close(new[changed], -old[changed], rtol=0, atol=0)
        else:
            assert torch.equal(new, old), f"{name} must not change"


def test_modhifi_u_retain_centre_ranks_by_the_forget_deviation_from_the_retain_mean_output():
    """`centre="retain"`: m_c = the mean bias-free fc2 output over the retain images, and
    the HiFi set of output c = its top inputs by E_f <A_ci, Y_c - m_c>, recomputed here
    from hooked activations."""
    import math

    from modhifi_core.data import ArrayDataset
    from modhifi_core.splits import class_split
    from modhifi_core.unlearning.modhifi_u import retain_centres
    from modhifi_core.vision.modify import unlearn_hf_classifier

    model = tiny_vit()
    wrapper = LogitsOnly(model).eval()
    x = images(40, 16, seed=5)
    split = class_split(ArrayDataset(x, torch.arange(40) % 10, 10), 2)
    name = mlp_output_layers(model)[-1]
    layer = wrapper.get_submodule(name)
    seen = {}
    handle = layer.register_forward_hook(lambda m, args, out: seen.__setitem__("h", args[0].detach().double()))
    with torch.no_grad():
        wrapper(split.retain.images)
        retain_h = seen["h"]
        wrapper(split.forget.images)
        forget_h = seen["h"]
    handle.remove()
    weight = layer.weight.detach().double()
    centre = (retain_h @ weight.T).mean((0, 1))  # bias-free Y_c averaged over samples and tokens
    torch.testing.assert_close(retain_centres(wrapper, split.retain.images, [name])[name], centre)
    contributions = forget_h.unsqueeze(-1) * weight.T  # A_ci per token: (N, T, c_in, c_out)
    output = forget_h @ weight.T - centre  # Y_c - m_c: (N, T, c_out)
    score = torch.einsum("ntic,ntc->ci", contributions, output) / len(forget_h)
    k = math.ceil(0.2 * weight.shape[1])
    expected = torch.zeros_like(score, dtype=torch.bool).scatter_(1, torch.topk(score, k, dim=1).indices, True)
    result = unlearn_hf_classifier(model, split, layers=(name,), fraction=0.2, centre="retain")
    negated = LogitsOnly(result.model).get_submodule(name).weight.detach().double() == -weight
    assert result.log["centre"] == "retain"
    assert torch.equal(negated, expected)
    plain = unlearn_hf_classifier(model, split, layers=(name,), fraction=0.2)
    plain_negated = LogitsOnly(plain.model).get_submodule(name).weight.detach().double() == -weight
    assert not torch.equal(plain_negated, negated), "the centre changes which components are chosen"
    with pytest.raises(InputError, match="centre='retain' centres the saliency score; it needs score='saliency'"):
        unlearn_hf_classifier(model, split, centre="retain", score="fidelity")
