"""FLOPs count attention, fused or not (issue 27): every count is checked against a hand
formula of the unfused computation (2 FLOPs per multiply-add; `QKᵀ` and `AV` each
`2·L²·d` per layer), for `nn.MultiheadAttention` (fast path or not), scaled-dot-product
attention, Hugging Face `eager` and `sdpa` attention and the language models' per-token
formula, and the pruners that aim at a FLOPs target reach the hand-counted target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from llm_models import example_inputs, tiny
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modhifi_core import prune
from modhifi_core.errors import InputError
from modhifi_core.pruning.ffn import flops_per_token
from modhifi_core.pruning.flops import count_flops, unfused_attention
from modhifi_core.vision.hf import LogitsOnly
from modhifi_core.vision.mlp import prune_hf_mlp


def attention_flops(tokens: int, width: int) -> int:
    """One unfused self-attention layer: q/k/v and output projections, `QKᵀ` and `AV`."""
    return 2 * tokens * width * 4 * width + 2 * 2 * tokens * tokens * width


class Block(nn.Module):
    """A pre-norm transformer block around `nn.MultiheadAttention` (torchvision's shape)."""

    def __init__(self, width: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.fc1, self.act, self.fc2 = nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViTLike(nn.Module):
    """Patches (a strided conv) -> `nn.MultiheadAttention` blocks -> mean -> a linear head."""

    def __init__(self, width: int = 32, heads: int = 4, mlp: int = 64, depth: int = 2, patch: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp) for _ in range(depth)])
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x).flatten(2).transpose(1, 2)).mean(1))


def vit_like_flops(model: ViTLike, image: int = 16) -> int:
    """The hand count of `model` on one `image`-pixel square image, from its current shapes."""
    conv = model.embed
    tokens = (image // conv.stride[0]) ** 2
    total = 2 * tokens * conv.in_channels * conv.kernel_size[0] ** 2 * conv.out_channels
    for block in model.blocks:
        width = block.attn.embed_dim
        total += attention_flops(tokens, width) + 2 * 2 * tokens * width * block.fc1.out_features
    return total + 2 * model.head.in_features * model.head.out_features


def hf_vit_flops(config: object) -> int:
    """The hand count of an HF ViT classifier (the logits read the CLS token only)."""
    patches = (config.image_size // config.patch_size) ** 2
    tokens, width = patches + 1, config.hidden_size
    total = 2 * patches * config.num_channels * config.patch_size**2 * width
    per_layer = attention_flops(tokens, width) + 2 * 2 * tokens * width * config.intermediate_size
    return total + config.num_hidden_layers * per_layer + 2 * width * config.num_labels


def counted(run: object) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), unfused_attention(), counter:
        run()
    return counter.get_total_flops()


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_is_counted_whole_under_no_grad(need_weights):
    """The fused fast path (`no_grad`, eval) counted nothing, not even the projections."""
    layer, x = nn.MultiheadAttention(64, 4, batch_first=True).eval(), torch.randn(1, 50, 64)
    assert counted(lambda: layer(x, x, x, need_weights=need_weights)) == attention_flops(50, 64)


def test_transformer_encoder_layer_fast_path_is_counted():
    layer, x = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval(), torch.randn(1, 50, 64)
    assert counted(lambda: layer(x)) == attention_flops(50, 64) + 2 * 2 * 50 * 64 * 128


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention_is_counted(causal):
    """The CPU flash kernel is not one `FlopCounterMode` knows; the math backend is."""
    q = torch.randn(1, 4, 50, 16)
    assert counted(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=causal)) == 2 * 2 * 4 * 50 * 50 * 16


def test_unfused_attention_restores_the_fast_path_setting():
    before = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(RuntimeError), unfused_attention():
        assert not torch.backends.mha.get_fastpath_enabled()
        raise RuntimeError
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_count_flops_of_a_vit_like_module_matches_the_hand_count():
    model = ViTLike().eval()
    assert count_flops(model, torch.zeros(1, 3, 16, 16)) == vit_like_flops(model)


def test_pruning_a_vit_like_module_reports_its_true_flops_ratio():
    """Was: reported 0.50, true 0.76 (attention cost nothing, so the target was aimed at
    the MLPs' and embedding's FLOPs alone)."""
    torch.manual_seed(0)
    model = ViTLike().eval()
    result = prune(model, torch.randn(64, 3, 16, 16), target_flops=0.7)
    true_ratio = vit_like_flops(result.model) / vit_like_flops(model)
    assert result.report["flops_ratio"] == pytest.approx(true_ratio, abs=0.01)
    assert true_ratio == pytest.approx(0.7, abs=0.02)


def test_a_vit_like_flops_target_below_the_floor_is_refused_naming_it():
    torch.manual_seed(0)
    with pytest.raises(InputError, match=r"already leaves 0\.\d{3} of the FLOPs") as refused:
        prune(ViTLike().eval(), torch.randn(64, 3, 16, 16), target_flops=0.3)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_hf_vit_counts_the_same_with_eager_and_sdpa_attention(attention):
    model = tiny("vit")
    model.set_attn_implementation(attention)
    assert count_flops(LogitsOnly(model).eval(), torch.zeros(1, 3, 16, 16)) == hf_vit_flops(model.config)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_language_models_per_token_formula_equals_the_count(family, attention):
    model = tiny(family)
    model.set_attn_implementation(attention)
    inputs = example_inputs(family, batch=1, length=16)
    assert counted(lambda: model(**inputs)) == flops_per_token(model, 16) * 16


def test_hf_vit_mlp_pruning_reaches_a_flops_target_by_the_hand_count():
    """HF ViTs run `sdpa` attention by default: the target now counts it."""
    torch.manual_seed(0)
    model = tiny("vit")
    assert model.config._attn_implementation == "sdpa"
    result = prune_hf_mlp(model, torch.randn(16, 3, 16, 16), target_flops=0.8)
    true_ratio = hf_vit_flops(result.model.config) / hf_vit_flops(model.config)
    assert result.report["flops_ratio"] == pytest.approx(true_ratio, abs=1e-9)
    assert 0.75 < true_ratio <= 0.8


def test_a_hf_vit_flops_target_mlp_pruning_cannot_reach_is_refused_with_the_floor():
    model = tiny("vit")
    dense, config = hf_vit_flops(model.config), model.config
    config_one = type(config)(**{**config.to_dict(), "intermediate_size": 1})
    floor = hf_vit_flops(config_one) / dense
    with pytest.raises(InputError, match=rf"out of reach by MLP pruning alone \(at most down to {floor:.3f}\)"):
        prune_hf_mlp(model, torch.randn(16, 3, 16, 16), target_flops=floor - 0.05)
