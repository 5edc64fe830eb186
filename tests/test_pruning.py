"""ModHiFi-P and its baselines: union rule, coupled groups, lossless surgery, FLOPs
targets, compensation in the model, BN recalibration, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.errors import InputError
from modhifi_core.fidelity import compensation, kernel_slices
from modhifi_core.models import ModelConfig, build_model, classifier_name
from modhifi_core.pruning import prune_model
from modhifi_core.pruning.compensation import full_compensation, scalar_compensation
from modhifi_core.pruning.coupling import Coupling, close
from modhifi_core.pruning.flops import count_flops, flops_by_layer
from modhifi_core.pruning.importance import union_rule_levels
from modhifi_core.pruning.plan import FlopsModel
from modhifi_core.statistics import collect_kept_gram, collect_statistics, kept_gram, layer_statistics
from modhifi_core.training import accuracy


@pytest.fixture(scope="module")
def trained(tiny_digits_checkpoint):
    ckpt = load_checkpoint(tiny_digits_checkpoint)
    return ckpt.model, load_from_spec(ckpt.metadata["data"])


def random_keep(coupling: Coupling, fraction: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    kept = {}
    for group in coupling.groups:
        count = max(1, int(group.size * fraction))
        kept[group.root] = torch.randperm(group.size, generator=generator)[:count].sort().values
    return kept


@pytest.mark.parametrize("seed", range(4))
def test_union_rule_levels_reproduce_the_union_of_top_k_sets(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(6, 11, generator=generator, dtype=torch.float64) ** 3
    levels = union_rule_levels(scores)
    for k in range(1, 12):
        union = set(scores.argsort(dim=1, descending=True)[:, :k].flatten().tolist())
        assert set(torch.nonzero(levels <= k / 11 + 1e-12).flatten().tolist()) == union
    assert levels.min() > 0 and levels.max() <= 1


MODELS = [
    ModelConfig(name="resnet18", width=4, image_size=8),
    ModelConfig(name="resnet50", width=4, image_size=8),
    ModelConfig(name="vgg11", width=4, image_size=8),
    ModelConfig(name="vit", width=16, image_size=8, vit_depth=2),
]


@pytest.mark.parametrize("config", MODELS, ids=[c.name for c in MODELS])
def test_physical_removal_equals_the_dense_model_with_dropped_inputs_zeroed(config):
    torch.manual_seed(0)
    model = build_model(config).double().eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong channel would show
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    protected = [classifier_name(model)]
    coupling = Coupling(model, images[:1], protected)
    assert coupling.groups
    kept = random_keep(coupling, 0.5, seed=1)
    masked = build_model(config).double().eval()
    masked.load_state_dict(model.state_dict())
    Coupling(masked, images[:1], protected).mask(kept)
    coupling.prune(kept)
    with torch.no_grad():
        torch.testing.assert_close(model(images), masked(images), rtol=1e-10, atol=1e-10)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in masked.parameters())


def test_residual_channels_form_one_group_and_protected_dims_stay():
    model = build_model(ModelConfig(name="resnet18", width=4, image_size=8)).eval()
    coupling = Coupling(model, torch.randn(1, 1, 8, 8), protected=["fc"])
    stage4 = next(g for g in coupling.groups if "fc" in g.consumers)
    assert {"layer4.0.conv2", "layer4.1.conv2", "layer4.0.shortcut.0"} <= set(stage4.producers)
    assert {"layer4.1.conv1", "fc"} <= set(stage4.consumers)
    assert not any("fc" in g.producers for g in coupling.groups)
    coupling.prune({g.root: torch.arange(1) for g in coupling.groups})
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    assert model.fc.in_features == 1 and model.layer4[1].conv2.out_channels == 1
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_predicted_flops_equal_the_measured_flops_after_surgery():
    model = build_model(ModelConfig(name="resnet50", width=4, image_size=8)).eval()
    example = torch.randn(1, 1, 8, 8)
    coupling = Coupling(model, example, protected=["fc"])
    total, per_layer = flops_by_layer(model, example)
    kept = random_keep(coupling, 0.4, seed=2)
    predicted = FlopsModel(model, coupling.groups, total, per_layer)(kept)
    coupling.prune(kept)
    assert predicted == pytest.approx(count_flops(model, example), rel=1e-9)


@pytest.mark.parametrize("method", ["modhifi", "l1", "l2", "random"])
def test_every_method_reaches_the_flops_target_and_recalibrates_batchnorm(trained, method):
    model, data = trained
    calibration = data.train.images[:256]
    result = prune_model(model, calibration, method, target_flops=0.5)
    report = result.report
    assert abs(report["flops_ratio"] - 0.5) <= 0.02
    measured = count_flops(result.model, calibration) / count_flops(model, calibration)
    assert report["flops_ratio"] == pytest.approx(measured)
    assert report["params_ratio"] < 1
    assert model.conv1.out_channels == 8, "the input model must stay dense"
    assert accuracy(result.model, data.test) > 30  # not collapsed to chance (10%)
    # The last step was BN recalibration on the calibration batches: redoing it changes nothing.
    again = copy.deepcopy(result.model)
    recalibrate_batchnorm(again, calibration.split(128))
    bn = result.model.layer2[0].bn1
    torch.testing.assert_close(again.layer2[0].bn1.running_mean, bn.running_mean, rtol=0, atol=0)
    assert not torch.equal(bn.running_var[:4], model.layer2[0].bn1.running_var[:4])
    layer = report["layers"]["layer2.0.conv1"]
    assert layer["out_channels"][0] == 16 and layer["out_channels"][1] == bn.num_features


def test_aggressive_targets_iterate_and_stay_within_tolerance(trained):
    model, data = trained
    calibration = data.train.images[:256]
    for target, rounds in ((0.25, 2), (0.15, 3)):
        report = prune_model(model, calibration, "modhifi", target_flops=target, compensation="full").report
        assert len(report["rounds"]) == rounds
        assert abs(report["flops_ratio"] - target) <= 0.02
        assert [r["flops_ratio"] for r in report["rounds"]] == sorted(r["flops_ratio"] for r in report["rounds"])[::-1]


def test_keep_fraction_with_union_allocation_is_the_paper_rule(trained):
    model, data = trained
    calibration = data.train.images[:128]
    # At 0.5 the union of 8-channel layers' top-4 sets over their consumers is often every
    # channel (this model: FLOPs ratio 1.0 on one machine, < 1 on another); 0.2 still removes.
    result = prune_model(model, calibration, "modhifi", target_flops=None, keep_fraction=0.2, allocation="union")
    assert result.report["rounds"][0]["keep_fraction"] == 0.2
    # A consumer with many outputs keeps more than the fraction of its inputs under the union rule.
    assert result.model.fc.in_features > 0.2 * 64
    assert result.report["flops_ratio"] < 1


def test_round_to_gives_channel_counts_in_multiples(trained):
    model, data = trained
    result = prune_model(model, data.train.images[:128], "l2", target_flops=0.5, round_to=2)
    for name, layer in result.report["layers"].items():
        if name != "conv1":
            assert layer["in_channels"][1] % 2 == 0, name


@pytest.mark.parametrize(
    "kernel,ridge,rtol",
    [
        (3, 1e-4, 1e-9),  # per-output solves: exactly the spec's δ*
        (1, 0.0, 1e-7),  # 1x1: one shared factorisation, identical without a ridge (ridges differ in form)
    ],
)
def test_pipeline_scalar_compensation_equals_the_raw_form(kernel, ridge, rtol):
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 4, kernel, padding=kernel // 2).double()
    x = torch.randn(5, 6, 7, 7, dtype=torch.float64) + 0.2
    kept = torch.tensor([0, 2, 3, 5])
    stats = layer_statistics(layer, x)
    gram = kept_gram(layer, x, kept)
    expected = torch.stack([compensation(layer, x, c, kept.tolist(), ridge=ridge, centered=True) for c in range(4)])
    before = kernel_slices(layer)[:, kept].clone()
    scalar_compensation(layer, stats, gram, kept, centered=True, ridge=ridge)
    torch.testing.assert_close(kernel_slices(layer)[:, kept], before * expected.unsqueeze(-1), rtol=rtol, atol=1e-12)


def test_full_refit_is_the_least_squares_fit_of_the_dense_output():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3).double()
    x = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    with torch.no_grad():
        target = layer(x)
    kept = torch.tensor([1, 2, 4])
    stats, gram = layer_statistics(layer, x), kept_gram(layer, x, kept)
    full_compensation(layer, stats, gram, kept, feeds_batchnorm=False, ridge=0.0)
    design = torch.cat([x[:, kept], torch.ones(200, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, target).solution  # affine least squares
    torch.testing.assert_close(layer.weight[:, kept].detach(), solution[:3].T, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(layer.bias.detach(), solution[3], rtol=1e-8, atol=1e-10)


def test_compensation_in_the_model_reduces_the_reconstruction_error(trained):
    model, data = trained
    images = data.train.images[:128].double()
    dense = build_model(ModelConfig(name="resnet18", width=8, image_size=8)).double().eval()
    dense.load_state_dict(model.state_dict())
    name = "layer3.0.conv2"
    layer = dense.get_submodule(name)
    kept = torch.arange(0, 32, 2)
    stats = collect_statistics(dense, [images], [name])[name]
    gram = collect_kept_gram(dense, [images], {name: kept})[name]
    inputs = []
    handle = layer.register_forward_hook(lambda m, a, o: inputs.append(a[0]))
    with torch.no_grad():
        dense(images)
    handle.remove()
    with torch.no_grad():
        target = layer(inputs[0])

    def error(weight_kept):
        pruned = nn.Conv2d(16, 32, 3, padding=1, bias=False).double()
        with torch.no_grad():
            pruned.weight.copy_(weight_kept)
            out = pruned(inputs[0][:, kept])
        centred = (out - out.mean((0, 2, 3), keepdim=True)) - (target - target.mean((0, 2, 3), keepdim=True))
        return float(centred.square().sum())

    plain = error(layer.weight[:, kept].detach())
    errors = {}
    for mode, apply in (("scalar", scalar_compensation), ("full", full_compensation)):
        twin = nn.Conv2d(32, 32, 3, padding=1, bias=False).double()
        twin.load_state_dict(layer.state_dict())
        apply(twin, stats, gram, kept, True, 1e-4)
        errors[mode] = error(twin.weight[:, kept].detach())
    assert errors["full"] <= errors["scalar"] <= plain


def test_bad_targets_and_data_are_refused_before_anything_changes(trained):
    model, data = trained
    images = data.train.images[:64]
    for target in (0.0, -0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(InputError, match="strictly between 0 and 1"):
            prune_model(model, images, "modhifi", target_flops=target)
    with pytest.raises(InputError, match=r"below this architecture's floor of 0\.\d{3}.*--allow-floor"):
        prune_model(model, images, "l2", target_flops=0.001)
    with pytest.raises(InputError, match="calibration data is empty"):
        prune_model(model, images[:0], "modhifi", target_flops=0.5)
    broken = images.clone()
    broken[3, 0, 2, 2] = float("nan")
    with pytest.raises(InputError, match="NaN or inf"):
        prune_model(model, broken, "modhifi", target_flops=0.5)
    with pytest.raises(InputError, match="exactly one of"):
        prune_model(model, images, "modhifi", target_flops=0.5, keep_fraction=0.5)
    with pytest.raises(InputError, match="unknown pruning method"):
        prune_model(model, images, "taylor", target_flops=0.5)
    with pytest.raises(InputError, match="compensation must be"):
        prune_model(model, images, "modhifi", target_flops=0.5, compensation="magic")
    assert model.conv1.out_channels == 8


def test_non_finite_activations_name_the_layer(trained):
    model, data = trained
    broken = build_model(ModelConfig(name="resnet18", width=8, image_size=8)).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.layer2[1].bn1.running_var.fill_(-1.0)
    with pytest.raises(InputError, match="layer2.1.conv2"):
        prune_model(broken, data.train.images[:32], "modhifi", target_flops=0.5)


class GroupedNet(nn.Module):
    """A ResNeXt-like block: the grouped conv's channels cannot be scored."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise(self.grouped(torch.relu(self.bn0(self.stem(x)))))
        x = torch.relu(self.mid(torch.relu(self.bn1(x))))
        return self.fc(x.mean((2, 3)))


def test_unsupported_layers_are_named_and_left_untouched():
    torch.manual_seed(0)
    model = GroupedNet().eval()
    images = torch.randn(32, 1, 8, 8)
    with pytest.warns(UserWarning, match="left untouched.*grouped conv"):
        result = prune_model(model, images, "modhifi", target_flops=0.75)
    assert result.report["unsupported_layers"] == {"grouped": "grouped conv (groups=2)"}
    assert "grouped" in " ".join(result.report["untouched_groups"].values())
    assert result.model.grouped.weight.shape == model.grouped.weight.shape
    assert result.model.stem.out_channels == 8
    assert result.model.mid.out_channels < 16 or result.model.pointwise.out_channels < 16
    assert result.model(images).shape == (32, 10)


class GhostNet(nn.Module):
    """MobileNet/GhostNet-like: a depthwise conv whose output is concatenated with its input
    (a ghost module), a depthwise conv inside an inverted residual, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(6)
        self.cheap = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn1 = nn.BatchNorm2d(6)
        self.expand = nn.Conv2d(12, 16, 1)
        self.bn2 = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn3 = nn.BatchNorm2d(16)
        self.project = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = torch.relu(self.bn0(self.stem(x)))
        ghost = torch.cat([primary, torch.relu(self.bn1(self.cheap(primary)))], dim=1)
        inner = torch.relu(self.bn3(self.depthwise(torch.relu(self.bn2(self.expand(ghost))))))
        return self.fc((ghost + self.project(inner)).mean((2, 3)))


def test_groups_through_depthwise_convs_and_concatenations_are_pruned_exactly():
    torch.manual_seed(0)
    model = GhostNet().double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    coupling = Coupling(model, images[:1], ["fc"])
    assert not coupling.skipped, coupling.skipped
    assert {"cheap", "depthwise"} <= {name for g in coupling.groups for name in g.producers}
    assert not {"cheap", "depthwise"} & set(coupling.consumer_layers())  # nothing scored on them
    ghost = next(g for g in coupling.groups if "stem" in g.producers)
    assert sorted(t.tolist() for t in ghost.ties) == [[j, j + 6] for j in range(6)]  # primary j makes cheap j
    kept = close(random_keep(coupling, 0.4, seed=3), coupling.groups)
    assert all(len(kept[ghost.root][kept[ghost.root] < 6]) * 2 == len(kept[ghost.root]) for _ in [0])
    total, per_layer = flops_by_layer(model, images[:1])
    predicted = FlopsModel(model, coupling.groups, total, per_layer)(kept)
    masked = copy.deepcopy(model)
    Coupling(masked, images[:1], ["fc"]).mask(kept)
    coupling.prune(kept)
    assert model.depthwise.out_channels == model.depthwise.groups < 16
    with torch.no_grad():
        torch.testing.assert_close(model(images), masked(images), rtol=1e-10, atol=1e-10)
    assert predicted == pytest.approx(count_flops(model, images[:1]), rel=1e-9)


def test_depthwise_groups_reach_the_target_without_untouched_groups():
    torch.manual_seed(0)
    images = torch.randn(32, 1, 8, 8)
    result = prune_model(GhostNet().eval(), images, "modhifi", target_flops=0.5)
    assert result.report["untouched_groups"] == {}
    assert result.report["flops_ratio"] == pytest.approx(0.5, abs=0.02)
    assert result.model(images).shape == (32, 10)


def test_a_target_below_the_floor_is_refused_with_the_floor_or_pruned_to_it():
    torch.manual_seed(0)
    images = torch.randn(16, 1, 8, 8)
    with pytest.raises(InputError, match=r"target_flops 0.01 is below this architecture's floor of (0\.\d{3})") as info:
        prune_model(GroupedNet().eval(), images, "l2", target_flops=0.01)
    assert "2 channel groups cannot be pruned exactly" in str(info.value) and "\n" not in str(info.value)
    floor = float(str(info.value).split("floor of ")[1].split(":")[0])
    with pytest.warns(UserWarning, match="left untouched"):
        result = prune_model(GroupedNet().eval(), images, "l2", target_flops=0.01, allow_floor=True)
    assert result.report["flops_floor"] == pytest.approx(floor, abs=1e-3)
    assert result.report["flops_ratio"] == pytest.approx(floor, abs=0.02)
    assert result.report["target_flops"] == 0.01
    assert result.model.pointwise.out_channels == 1 and result.model.mid.out_channels == 1


# --- saliency score, BN centre, compensation order -------------------------------------------


def small_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1, bias=True),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Conv2d(5, 4, (1, 3), padding=(0, 1), bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()


def warmed(net: nn.Module, images: torch.Tensor) -> nn.Module:
    recalibrate_batchnorm(net, [images])
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_output_centre_is_the_following_bn_running_mean_minus_the_bias():
    images = torch.randn(16, 2, 6, 6, dtype=torch.float64)
    net = warmed(small_bn_net(), images)
    coupling = Coupling(net, images[:1], ["11"])
    assert torch.equal(coupling.output_centre("0"), net[1].running_mean.double())
    torch.testing.assert_close(coupling.output_centre("3"), (net[4].running_mean - net[3].bias).double().detach())
    assert coupling.output_centre("11") is None  # the classifier: no BN follows


def test_saliency_ranking_uses_the_bn_centre():
    from modhifi_core.fidelity import saliency_order_scores, saliency_scores
    from modhifi_core.pruning.modhifi_p import saliency_importance

    images = torch.randn(16, 2, 6, 6, dtype=torch.float64)
    net = warmed(small_bn_net(), images)
    coupling = Coupling(net, images[:1], ["11"])
    stats = collect_statistics(net, [images], coupling.consumer_layers())
    importance = saliency_importance(net, coupling, stats)
    inputs = []
    handle = net[6].register_forward_hook(lambda m, a, o: inputs.append(a[0]))
    with torch.no_grad():
        net(images)
    handle.remove()
    expected = saliency_scores(net[6], inputs[0], net[7].running_mean)
    got = importance.scores[net[6]]
    assert torch.equal(got.argsort(1), expected.argsort(1))
    torch.testing.assert_close(got, saliency_order_scores(stats["6"], net[6], net[7].running_mean))


def layer_io(net: nn.Module, layer: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    captured = {}
    handle = layer.register_forward_hook(lambda m, a, o: captured.update(x=a[0], y=o))
    with torch.no_grad():
        net.eval()(images)
    handle.remove()
    return captured["x"], captured["y"]


def test_sequential_full_refit_fits_dense_outputs_on_the_pruned_upstream_inputs():
    from modhifi_core.pruning.compensation import sequential_compensation

    images = torch.randn(24, 2, 6, 6, dtype=torch.float64)
    net = warmed(small_bn_net(), images)
    dense = copy.deepcopy(net)
    coupling = Coupling(net, images[:1], ["11"])
    kept = {group.root: torch.arange(0, group.size, 2) for group in coupling.groups}
    kept_inputs = coupling.kept_inputs(kept)
    assert set(kept_inputs) == {"3", "6", "11"}
    sequential_compensation(
        net, [images[:12], images[12:]], kept_inputs, lambda: coupling.mask(kept), coupling.feeds_batchnorm, "full", 0.0
    )
    # Layer "6": refit on its inputs in the (masked, upstream-refit) net towards the dense output.
    x, _ = layer_io(net, net[6], images)
    _, target = layer_io(dense, dense[6], images)
    index = kept_inputs["6"]
    patches = F.unfold(x[:, index], (1, 3), padding=(0, 1))  # (n, |C|·3, P)
    design = patches.permute(0, 2, 1).reshape(-1, patches.shape[1])
    goal = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])
    design, goal = design - design.mean(0), goal - goal.mean(0)  # BN follows: centred fit
    solution = torch.linalg.lstsq(design, goal).solution.T  # (c_out, |C|·3)
    torch.testing.assert_close(net[6].weight[:, index].reshape(4, -1).detach(), solution, rtol=1e-7, atol=1e-9)
    dropped = torch.ones(5, dtype=torch.bool)
    dropped[index] = False
    assert (net[6].weight[:, dropped] == 0).all()


@pytest.mark.parametrize("score", ["saliency", "fidelity"])
@pytest.mark.parametrize("order", ["joint", "sequential"])
def test_scores_and_orders_prune_to_the_target_and_beat_no_compensation(trained, score, order):
    model, data = trained
    calibration = data.train.images[:128]
    result = prune_model(model, calibration, "modhifi", target_flops=0.5, score=score, compensation_order=order)
    assert abs(result.report["flops_ratio"] - 0.5) <= 0.02
    assert (result.report["score"], result.report["compensation_order"]) == (score, order)
    assert accuracy(result.model, data.test) > 50.0


def test_new_options_are_refused_with_one_line(trained):
    model, data = trained
    with pytest.raises(InputError, match="score must be one of saliency, fidelity"):
        prune_model(model, data.train.images[:32], "modhifi", score="energy")
    with pytest.raises(InputError, match="compensation_order must be one of joint, sequential"):
        prune_model(model, data.train.images[:32], "modhifi", compensation_order="backwards")


def test_baselines_without_recalibration_keep_the_bn_statistics_of_kept_channels(trained):
    model, data = trained
    result = prune_model(model, data.train.images[:64], "l2", target_flops=0.5, recalibrate=False)
    assert result.report["bn_recalibration"] is False
    before, after = model.get_submodule("bn1"), result.model.get_submodule("bn1")
    assert after.num_batches_tracked == before.num_batches_tracked
