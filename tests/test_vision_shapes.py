"""Shape records (modhifi_core.sources.rebuild): a pruned network rebuilt from a dense
build + the record + its state dict gives the same outputs; bad records are refused."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model, config_for
from modhifi_core.pruning import prune_model
from modhifi_core.sources.rebuild import apply_shape_record, module_shapes, shape_record


def rebuilt(dense_factory, pruned: nn.Module) -> nn.Module:
    record = shape_record(pruned, dense_factory())
    model = apply_shape_record(dense_factory(), record)
    model.load_state_dict(pruned.state_dict(), strict=True)
    return model.eval()


def test_pruned_zoo_resnet_rebuilds_exactly_and_matches_layer_shapes():
    torch.manual_seed(0)
    config = ModelConfig(name="resnet18", width=8, image_size=8)
    model = build_model(config).eval()
    images = torch.randn(64, 1, 8, 8)
    pruned = prune_model(model, images, "l2", target_flops=0.5).model
    record = shape_record(pruned, build_model(config))
    assert record, "pruning at 50% FLOPs must resize some layers"
    # the same layers as the zoo checkpoint's own mechanism (weight shapes; convs keep groups=1)
    assert {k: v["weight"] for k, v in record.items()} == config_for(pruned, config).layer_shapes
    again = rebuilt(lambda: build_model(config), pruned)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x), rtol=0, atol=0)


class DepthwiseBlock(nn.Module):
    """conv -> BN -> depthwise conv -> LayerNorm over channels -> linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.LayerNorm(16)
        self.gn = nn.GroupNorm(4, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.dw(torch.relu(self.bn(self.conv(x)))))
        return self.head(self.norm(x.mean((2, 3))))


def test_depthwise_groups_layernorm_and_groupnorm_are_recorded_and_restored():
    torch.manual_seed(0)
    model = DepthwiseBlock().eval()
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    graph.get_pruning_group(model.conv, tp.prune_conv_out_channels, [0, 3, 5, 9]).prune()
    record = shape_record(model, DepthwiseBlock())
    assert record["dw"] == {"weight": [12, 1, 3, 3], "groups": 12}
    assert record["norm"] == {"weight": [12]} and record["gn"] == {"weight": [12]}
    again = rebuilt(DepthwiseBlock, model)
    assert again.dw.groups == 12 and again.dw.in_channels == 12 and again.norm.normalized_shape == (12,)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_unpruned_network_has_an_empty_record():
    assert shape_record(DepthwiseBlock(), DepthwiseBlock()) == {}
    assert module_shapes(DepthwiseBlock())["dw"] == {"weight": [16, 1, 3, 3], "groups": 16}


@pytest.mark.parametrize(
    "record, message",
    [
        ({"absent": {"weight": [3]}}, "does not have"),
        ({"conv": {"weight": [8, 3, 3]}}, "invalid weight shape"),
        ({"conv": {"weight": [8, 3, 3, 0]}}, "invalid weight shape"),
        ({"conv": [8, 3, 3, 3]}, "invalid weight shape"),
        ({"dw": {"weight": [10, 1, 3, 3], "groups": 4}}, "invalid groups"),
        ({"gn": {"weight": [10]}}, "not divisible"),
        ({"": {"weight": [1]}}, "unsupported type"),
        ([["conv", [1]]], "mapping"),
    ],
)
def test_bad_records_are_refused(record, message):
    with pytest.raises(InputError, match=message):
        apply_shape_record(DepthwiseBlock(), record)
