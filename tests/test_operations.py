"""The operations are the one implementation every adapter calls: the public API works on
a network the zoo does not have, and the checkpoint-level operations carry what earlier
operations recorded (the forgotten class, the training recipe, the chosen compensation)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import data_spec, load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.prune import prune_checkpoint, pruning_options
from modhifi_core.operations.train import train_from_params
from modhifi_core.operations.unlearn import unlearn_checkpoint


class Branchy(nn.Module):
    """Not a zoo model: a BN stem, two branches joined by concatenation, a residual add."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width // 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(width + width // 2, width, 3, padding=1), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        x = torch.relu(self.mix(y) + x)
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def branchy():
    torch.manual_seed(0)
    return Branchy().eval(), torch.randn(96, 3, 8, 8)


@pytest.mark.parametrize("compensation", ["none", "full"])
def test_public_prune_on_a_foreign_network_prunes_the_concatenated_branches(branchy, compensation):
    from modhifi_core import prune

    model, inputs = branchy
    before = copy.deepcopy(model.state_dict())
    result = prune(model, inputs, target_flops=0.5, compensation=compensation)
    assert abs(result.report["flops_ratio"] - 0.5) <= 0.02
    assert result.report["untouched_groups"] == {}
    layers = result.report["layers"]
    assert layers["a.0"]["out_channels"][1] < 32 and layers["b.0"]["out_channels"][1] < 16
    kept_a, kept_b = layers["a.0"]["out_channels"][1], layers["b.0"]["out_channels"][1]
    assert layers["mix.0"]["in_channels"][1] == kept_a + kept_b  # the concat consumer lost both branches' channels
    assert result.model(inputs[:4]).shape == (4, 5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the caller's model is untouched"


def test_calibration_as_tensor_batches_or_dataloader_gives_the_same_model(branchy):
    from modhifi_core import prune

    model, inputs = branchy
    as_tensor = prune(model, inputs, target_flops=0.5, batch_size=32).model
    as_batches = prune(model, list(inputs.split(32)), target_flops=0.5).model
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, torch.zeros(96)), batch_size=32)
    as_loader = prune(model, loader, target_flops=0.5).model
    x = inputs[:8]
    assert torch.allclose(as_tensor(x), as_batches(x)) and torch.allclose(as_tensor(x), as_loader(x))


def test_l2_with_full_compensation_from_params_is_honoured(tiny_digits_checkpoint):
    settings = dict(method="l2", compensation="full", target_flops=0.5)
    assert pruning_options(**settings)["compensation"] == "full"
    assert pruning_options(method="l2")["compensation"] == "none"
    assert pruning_options(method="modhifi")["compensation"] == "full"
    ckpt = load_checkpoint(tiny_digits_checkpoint)
    data = load_from_spec(read_metadata(ckpt.metadata).data)
    calibration = data.train.subset(torch.arange(128))
    full = prune_checkpoint(ckpt, calibration, data, **settings, calibration_source="real", latency_repeats=1)
    plain = prune_checkpoint(
        load_checkpoint(tiny_digits_checkpoint), calibration, data, method="l2", calibration_source="real"
    )
    assert full.metadata.report["compensation"] == "full" and plain.metadata.report["compensation"] == "none"
    assert full.metadata.params["compensation"] == "full"
    x = data.test.images[:16]
    assert not torch.allclose(full.model(x), plain.model(x)), "the refit changed the kept weights"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint made by the train operation (what train_base writes) with a 2-epoch recipe."""
    outcome = train_from_params(width=4, epochs=2, seed=0)
    path = tmp_path_factory.mktemp("trained") / "base.pt"
    outcome.save(path)
    return path


def test_retrain_uses_the_recipe_of_a_train_base_checkpoint(trained):
    source = load_checkpoint(trained)
    data = load_from_spec(data_spec())
    outcome = unlearn_checkpoint(source, data, forget_class=2, method="retrain", forget_data="real")
    used = outcome.metadata.params["hyperparameters"]
    assert used["epochs"] == 2 and used["lr"] == pytest.approx(0.05), "the base model's recipe, not Retrain's defaults"
    assert outcome.metadata.recipe == read_metadata(source.metadata).recipe


def test_cli_finetune_of_a_pipeline_unlearned_model_keeps_the_class_forgotten(cli, trained, tmp_path):
    source = load_checkpoint(trained)
    data = load_from_spec(data_spec())
    unlearned = unlearn_checkpoint(source, data, forget_class=3, forget_data="real")  # as the stage runs it
    path = tmp_path / "unlearned.pt"
    unlearned.save(path)
    out = tmp_path / "final.pt"
    result = cli("finetune", "--model", path, "--data", "real", "--epochs", 1, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["forget_class"] == 3 and report["batchnorm"] == "frozen", "it saw the unlearning"
    assert report["samples"] == int((data.train.labels != 3).sum()), "only retained classes were used"
    final = read_metadata(load_checkpoint(out).metadata)
    assert final.forgotten == {"class": 3, "method": "modhifi"} and final.parents["model"] == unlearned.save(path)


def test_collect_statistics_on_an_executor_equals_the_single_process_sums(branchy):
    from concurrent.futures import ThreadPoolExecutor

    from modhifi_core import collect_statistics

    model, inputs = branchy
    alone = collect_statistics(model, inputs, batch_size=16)
    with ThreadPoolExecutor(2) as pool:
        sharded = collect_statistics(model, inputs, batch_size=16, executor=pool)
    assert set(sharded.layers) == set(alone.layers) and sharded.samples == alone.samples
    for name, stats in alone.layers.items():
        assert torch.allclose(sharded.layers[name].cross, stats.cross, rtol=1e-10, atol=0)


def _kept_head_inputs(dense: nn.Module, pruned: nn.Module) -> list[int]:
    """The dense head's input channels the pruned head still reads (its columns are the
    dense ones at the kept channels when nothing was compensated)."""
    columns = dense.head.weight.T
    return [j for j, column in enumerate(columns) if any(torch.equal(column, c) for c in pruned.head.weight.T)]


@pytest.mark.parametrize("kind", ["saliency", "fidelity"])
def test_pruning_from_the_score_operations_scores_gives_the_identical_model(branchy, kind):
    from modhifi_core import collect_statistics, prune, score

    model, inputs = branchy
    statistics = collect_statistics(model, inputs, batch_size=32)
    scores = score(model, statistics, kind)
    options = {"target_flops": 0.3, "batch_size": 32, "score": kind}  # two rounds: the second re-scores
    given = prune(model, inputs, statistics=statistics, scores=scores, **options)
    itself = prune(model, inputs, **options)
    assert given.report["first_round_scores"] == "given" and itself.report["first_round_scores"] == "computed"
    assert len(given.report["rounds"]) == 2 and given.report["layers"] == itself.report["layers"]
    mine, theirs = given.model.state_dict(), itself.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_given_scores_decide_the_kept_channels(branchy):
    from modhifi_core import collect_statistics, prune, score

    model, inputs = branchy
    statistics = collect_statistics(model, inputs, batch_size=32)
    scores = score(model, statistics)
    flipped = copy.deepcopy(scores)
    flipped.layers = {name: s.flip(1) for name, s in scores.layers.items()}  # each output ranks its inputs reversed
    options = {"target_flops": 0.5, "batch_size": 32, "compensation": "none", "statistics": statistics}
    honest = prune(model, inputs, scores=scores, **options).model
    permuted = prune(model, inputs, scores=flipped, **options).model
    assert _kept_head_inputs(model, honest) != _kept_head_inputs(model, permuted)


def _drop_first(scores):
    return dict(list(scores.items())[1:])


@pytest.mark.parametrize(
    ("corrupt", "options", "message"),
    [
        (lambda s: s, {"score": "fidelity"}, "are saliency scores, but pruning ranks by fidelity"),
        (lambda s: s, {"method": "l2"}, "apply to modhifi only"),
        (_drop_first, {}, "do not match the model's prunable layers"),
        (lambda s: {k: v[:, 1:] for k, v in s.items()}, {}, "expected finite"),
        (lambda s: {k: v * float("nan") for k, v in s.items()}, {}, "expected finite"),
    ],
)
def test_mismatched_scores_are_refused(branchy, corrupt, options, message):
    from modhifi_core import collect_statistics, prune, score
    from modhifi_core.errors import InputError
    from modhifi_core.operations.statistics import ModelScores

    model, inputs = branchy
    statistics = collect_statistics(model, inputs, batch_size=32)
    scores = score(model, statistics)
    bad = ModelScores(scores.kind, corrupt(scores.layers))
    with pytest.raises(InputError, match=message):
        prune(model, inputs, statistics=statistics, scores=bad, batch_size=32, **options)


def test_a_scores_file_of_another_format_is_refused():
    from modhifi_core.errors import InputError
    from modhifi_core.operations.statistics import ModelScores

    with pytest.raises(InputError, match="not a modhifi scores file"):
        ModelScores.from_payload({"conv": torch.zeros(2, 2)})  # the plain per-layer dict written before the kind
    with pytest.raises(InputError, match="not a modhifi scores file"):
        ModelScores.from_payload({"kind": "energy", "layers": {}})
