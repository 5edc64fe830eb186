"""Hugging Face image classifiers (built from configs, random weights) through the
engine: CNNs pruned by `prune_model` via `prune_hf_classifier`, saved and reloaded with
identical outputs; ConvNeXt's depthwise groups left untouched and named; ViT/Swin MLP
layer sets for ModHiFi-U."""

from __future__ import annotations

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
from modhifi_core.vision import (  # noqa: E402
    LogitsOnly,
    load_hf_pruned,
    mlp_output_layers,
    save_hf_pruned,
)
from modhifi_core.vision.modify import prune_hf_classifier  # noqa: E402


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


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_hf_resnet_pruned_to_flops_target_reloads_identically(tmp_path, layer_type):
    model = tiny_resnet(layer_type)
    result = prune_hf_classifier(model, images(64), "modhifi", target_flops=0.5)
    assert abs(result.report["flops_ratio"] - 0.5) <= 0.02
    assert isinstance(result.model, ResNetForImageClassification), "the HF model comes back, unwrapped"
    assert result.report["shape_record"], "pruning resizes layers"
    assert result.model.resnet.embedder.embedder.convolution.in_channels == 1, "image channels are never pruned"
    assert result.model.classifier[-1].out_features == 10, "classes are never pruned"
    folder = save_hf_pruned(result.model, tmp_path / "pruned")
    again = load_hf_pruned(folder)
    x = images(4, seed=1)
    torch.testing.assert_close(logits(again, x), logits(result.model, x), rtol=0, atol=0)
    # the input model is untouched
    assert model.resnet.embedder.embedder.convolution.out_channels == 16


def test_unpruned_folder_loads_in_stock_transformers(tmp_path):
    model = tiny_resnet()
    folder = save_hf_pruned(model, tmp_path / "dense")
    stock = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True).eval()
    x = images(2, seed=2)
    torch.testing.assert_close(logits(stock, x), logits(model, x), rtol=0, atol=0)


def test_convnext_prunes_mlp_neurons_and_names_the_depthwise_groups(tmp_path):
    torch.manual_seed(0)
    config = ConvNextConfig(num_channels=1, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10)
    model = ConvNextForImageClassification(config).eval()
    result = prune_hf_classifier(model, images(32), "l2", target_flops=None, keep_fraction=0.5)
    untouched = result.report["untouched_groups"]
    assert any("depthwise" in reason for reason in untouched.values())
    pruned_layers = set(result.report["shape_record"])
    assert any(name.endswith("pwconv1") for name in pruned_layers)
    for name, module in result.model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            assert module.weight.shape == model.get_submodule(name).weight.shape, f"depthwise {name} changed"
    again = load_hf_pruned(save_hf_pruned(result.model, tmp_path / "convnext"))
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
