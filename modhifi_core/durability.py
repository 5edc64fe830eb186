"""The audit of class forgetting (method.md §3): does the forgetting survive

* **BN recalibration** — re-estimating every BatchNorm's running statistics on the
  retained data (reset, cumulative average, no gradients; `batchnorm.recalibrate_batchnorm`);
* **a relearning attack** — a fixed, small number of SGD steps of cross-entropy training on
  retained data only (the forgotten class never appears as a label), in train mode, so BN
  statistics also move. Defaults (`RelearningAttack`): 50 steps, lr 0.01, batch 64,
  momentum 0.9, no weight decay, batches drawn with replacement-free shuffles from a
  generator seeded by `seed` (0).

Both are audit figures reported beside UA/RA/TA/MIA, as UA (100 − accuracy on D_f, %)
of a modified copy; the model passed in is never changed.

Neither tells forgetting from masking: a model whose only change is its classifier row
for the class passes both. `audit_forgetting` does — a few-shot linear probe on the
features (`FeatureProbe`), the forget-data relearning index (`ForgetRelearning`) beside a
head-reset reference, and a verdict on where the forgetting lives (`where_forgetting_lives`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.errors import InputError
from modhifi_core.models import classifier_name
from modhifi_core.models.stages import last_stage
from modhifi_core.splits import ForgetSplit
from modhifi_core.statistics import prunable_layers
from modhifi_core.training import TrainConfig, accuracy, predict


@dataclass(frozen=True)
class RelearningAttack:
    """The relearning attack's hyper-parameters (module docstring)."""

    steps: int = 50
    lr: float = 0.01
    batch_size: int = TrainConfig.batch_size
    momentum: float = TrainConfig.momentum
    seed: int = TrainConfig.seed

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0 or not 0 <= self.momentum < 1:
            raise InputError(
                f"relearning attack needs steps >= 0, batch_size >= 1, lr > 0, 0 <= momentum < 1; got {self}"
            )


def forgetting_after_recalibration(model: nn.Module, split: ForgetSplit, batch_size: int = 256) -> float:
    """UA (%) after re-estimating the BN statistics of a copy of `model` on `split.retain`."""
    probe = copy.deepcopy(model)
    recalibrate_batchnorm(probe, split.retain.images.split(batch_size))
    return 100.0 - accuracy(probe, split.forget)


def relearned(model: nn.Module, retain: ArrayDataset, attack: RelearningAttack = RelearningAttack()) -> nn.Module:
    """A copy of `model` after `attack.steps` SGD steps of cross-entropy on `retain` only."""
    if len(retain) == 0:
        raise InputError("the relearning attack needs retained data")
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=attack.lr, momentum=attack.momentum)
    generator = torch.Generator().manual_seed(attack.seed)
    device = next(probe.parameters()).device
    order = torch.empty(0, dtype=torch.long)
    for _ in range(attack.steps):
        if len(order) < attack.batch_size:
            order = torch.cat([order, torch.randperm(len(retain), generator=generator)])
        index, order = order[: attack.batch_size], order[attack.batch_size :]
        loss = F.cross_entropy(probe(retain.images[index].to(device)), retain.labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()


def forgetting_after_relearning(
    model: nn.Module, split: ForgetSplit, attack: RelearningAttack = RelearningAttack()
) -> float:
    """UA (%) of `model` after the relearning attack on `split.retain`."""
    return 100.0 - accuracy(relearned(model, split.retain, attack), split.forget)


def durability_metrics(
    model: nn.Module, split: ForgetSplit, attack: RelearningAttack = RelearningAttack()
) -> dict[str, float]:
    """`{"UA_after_bn_recalibration", "UA_after_relearning"}` in percent (module docstring)."""
    return {
        "UA_after_bn_recalibration": forgetting_after_recalibration(model, split),
        "UA_after_relearning": forgetting_after_relearning(model, split, attack),
    }


# --- The forgetting audit: does the class still live in the features? --------------------
#
# The two figures above attack with retained data only; a model whose only change is its
# classifier row for the forget class (a logit mask) passes both (benchmarks/README.md,
# issue 11's control). The figures below attack with what an auditor or adversary with
# the weights and a FEW labelled samples of the class has, as peers measure unlearning
# ("An Illusion of Unlearning?", "Are We Truly Forgetting?": linear probes on hidden
# features; Chundawat et al.'s Anamnesis Index: how fast the class is relearned).


@dataclass(frozen=True)
class FeatureProbe:
    """A few-shot linear probe: a standardised logistic regression (scikit-learn, `C`)
    fitted on the features of `per_class` real training samples of EVERY class (the
    forgotten one included: the attacker labels a few of its samples), scored on the
    held-out (test) samples of the forget class and of the retained classes; the mean over
    `draws` disjoint seeded draws. Few shots on purpose: with hundreds per class a probe
    finds even a never-seen digit in a 9-class model's features (tiny digits model, class
    3: 92% with all training data, 60% with 3 per class, 100% on the original)."""

    per_class: int = 3
    draws: int = 10
    C: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.per_class < 1 or self.draws < 1 or not self.C > 0:
            raise InputError(f"the feature probe needs per_class >= 1, draws >= 1, C > 0; got {self}")


@dataclass(frozen=True)
class ForgetRelearning:
    """The forget-data relearning index (Anamnesis-style): SGD steps (lr, momentum, train
    mode) on batches of `forget_samples` labelled real training samples of the forget class
    (the same ones every step) plus `retain_batch` random retained samples, until more than
    `threshold` % of the held-out (test) samples of the class are classified as it again;
    `max_steps` when that does not happen within them (0 skips the measurement)."""

    forget_samples: int = 5
    retain_batch: int = 59
    lr: float = 0.01
    momentum: float = 0.9
    threshold: float = 50.0
    max_steps: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        ok = self.forget_samples >= 1 and self.retain_batch >= 0 and self.lr > 0 and 0 <= self.momentum < 1
        if not (ok and 0 <= self.threshold < 100 and self.max_steps >= 0):
            raise InputError(
                "forget-data relearning needs forget_samples >= 1, retain_batch >= 0, lr > 0, 0 <= momentum < 1, "
                f"0 <= threshold < 100, max_steps >= 0; got {self}"
            )


# The verdict's rule (`where_forgetting_lives`), in points of probe accuracy and a ratio of steps.
PROBE_GAP = 15.0
RELEARN_FACTOR = 4.0
FORGOTTEN_UA = 50.0
# The verdict in a few words (summaries, tables); `verdict_sentence` gives the figures.
VERDICTS = {
    "features": "forgotten: the class is gone from the features",
    "head": "NOT forgotten: a mask on the output, the features keep the class",
    "not forgotten": "not forgotten: the model still recognises the class",
}


def feature_sites(model: nn.Module, example: Tensor) -> dict[str, str]:
    """The modules whose INPUT the probe reads: `penultimate` — the classifier's (the pooled
    features) — and `last_stage` — the first layer of the last stage (the features before
    the stage ModHiFi-U edits by default, `models.stages.last_stage`)."""
    penultimate = classifier_name(model)
    candidates = [name for name in prunable_layers(model) if name != penultimate]
    if not candidates:
        raise InputError("the model has no scorable layer besides its classifier")
    return {"penultimate": penultimate, "last_stage": last_stage(model, candidates, example)[0]}


@torch.no_grad()
def features(model: nn.Module, images: Tensor, site: str, batch_size: int = 256) -> Tensor:
    """The input of module `site` on `images`, one float vector per image: feature maps
    averaged over positions, token sequences over tokens."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        captured.append(x.flatten(2).mean(2) if x.ndim == 4 else x.mean(1) if x.ndim == 3 else x.flatten(1))

    handle = model.get_submodule(site).register_forward_pre_hook(hook)
    try:
        predict(model, images, batch_size)
    finally:
        handle.remove()
    return torch.cat(captured).cpu() if captured else torch.empty(0)


def probe_accuracy(
    model: nn.Module, train: ArrayDataset, test: ArrayDataset, forget_class: int, site: str, probe: FeatureProbe
) -> dict[str, float]:
    """`{"forget", "retain"}`: the probe's accuracy (%) on the held-out samples of the forget
    class and of the other classes, from the input of module `site` (`FeatureProbe`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    draws = _probe_draws(train.labels, probe)
    chosen = torch.cat([torch.cat(draw) for draw in draws])
    pool = dict(zip(chosen.tolist(), features(model, train.images[chosen], site).numpy()))
    test_features = features(model, test.images, site).numpy()
    labels = test.labels.numpy()
    is_forget = labels == forget_class
    if not is_forget.any() or is_forget.all():
        raise InputError(f"the probe needs held-out samples of class {forget_class} and of other classes")
    forget, retain = [], []
    for draw in draws:
        index = torch.cat(draw).tolist()
        x, y = np.stack([pool[i] for i in index]), train.labels[index].numpy()
        fitted = make_pipeline(StandardScaler(), LogisticRegression(C=probe.C, max_iter=2000)).fit(x, y)
        predicted = fitted.predict(test_features)
        forget.append(100.0 * float(np.mean(predicted[is_forget] == forget_class)))
        retain.append(100.0 * float(np.mean(predicted[~is_forget] == labels[~is_forget])))
    return {"forget": float(np.mean(forget)), "retain": float(np.mean(retain))}


def _probe_draws(labels: Tensor, probe: FeatureProbe) -> list[list[Tensor]]:
    """`probe.draws` disjoint draws of `per_class` indices of every class (fewer draws when
    a class is too small for all of them; at least one)."""
    generator = torch.Generator().manual_seed(probe.seed)
    classes = sorted(set(labels.tolist()))
    orders = [
        torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=generator)]
        for c in classes
    ]
    count = max(1, min(probe.draws, min(len(o) for o in orders) // probe.per_class))
    return [[o[d * probe.per_class : (d + 1) * probe.per_class] for o in orders] for d in range(count)]


def relearning_steps(
    model: nn.Module, train: ArrayDataset, test: ArrayDataset, forget_class: int, relearning: ForgetRelearning
) -> int:
    """The forget-data relearning index of a copy of `model` (`ForgetRelearning`)."""
    held_out = test.of_classes([forget_class]).images
    is_forget = train.labels == forget_class
    generator = torch.Generator().manual_seed(relearning.seed)
    forget = torch.nonzero(is_forget).flatten()
    forget = forget[torch.randperm(len(forget), generator=generator)[: relearning.forget_samples]]
    retain = torch.nonzero(~is_forget).flatten()
    if len(held_out) == 0 or len(forget) == 0:
        raise InputError(f"forget-data relearning needs training and held-out samples of class {forget_class}")
    probe = copy.deepcopy(model)
    optimizer = torch.optim.SGD(probe.parameters(), lr=relearning.lr, momentum=relearning.momentum)
    device = next(probe.parameters()).device
    for step in range(relearning.max_steps):
        if _recognised(probe, held_out, forget_class) > relearning.threshold:
            return step
        index = torch.cat([forget, retain[torch.randint(len(retain), (relearning.retain_batch,), generator=generator)]])
        probe.train()
        loss = F.cross_entropy(probe(train.images[index].to(device)), train.labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return relearning.max_steps


def _recognised(model: nn.Module, images: Tensor, forget_class: int) -> float:
    return 100.0 * float((predict(model, images).argmax(1) == forget_class).float().mean())


def head_reset(model: nn.Module, forget_class: int, seed: int = 0) -> nn.Module:
    """A copy of `model` whose classifier row (weights and bias) for `forget_class` is
    re-initialised as a fresh `nn.Linear`'s (seeded): a model whose head never saw the
    class and whose features did — the reference a data-free run has in place of Retrain."""
    reset = copy.deepcopy(model)
    layer = reset.get_submodule(classifier_name(reset))
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(layer.weight[0].numel())
    with torch.no_grad():
        row = torch.rand(layer.weight[forget_class].shape, generator=generator) * 2 * bound - bound
        layer.weight[forget_class] = row.to(layer.weight)
        if layer.bias is not None:
            layer.bias[forget_class] = float(torch.rand(1, generator=generator)) * 2 * bound - bound
    return reset


def audit_forgetting(
    model: nn.Module,
    data: DatasetSplits,
    forget_class: int,
    original: nn.Module | None = None,
    probe: FeatureProbe = FeatureProbe(),
    relearning: ForgetRelearning = ForgetRelearning(),
) -> dict:
    """Where the forgetting of `forget_class` lives, on real data (training samples for the
    probe and the relearning, the test set held out):

    * `probe_forget_accuracy` / `probe_retain_accuracy` (%): the few-shot probe on the
      penultimate features; `probe_stage_forget_accuracy` / `probe_stage_retain_accuracy`:
      the same on the last stage's input;
    * `relearn_forget_steps`: the forget-data relearning index (`ForgetRelearning`);
    * with the `original` (the model before unlearning): `original_probe_forget_accuracy`,
      `original_probe_stage_forget_accuracy`, `original_relearn_forget_steps`,
      `head_reset_relearn_forget_steps` (the reference: `head_reset` of the original) and
      `relearn_forget_steps_after_head_reset` (the same relearning of `head_reset` of the
      model: what its features alone give back, whatever was done to its class row);
    * `forgetting_lives_in` ("features", "head" or "not forgotten") by
      `where_forgetting_lives`, `forgetting_in_features` (1.0/0.0, for MLflow) and
      `forgetting_verdict` (`VERDICTS`).

    Neither model is changed."""
    sites = feature_sites(model, data.train.images[:1])
    audit: dict = {}
    for prefix, network in (("", model), ("original_", original)):
        if network is None:
            continue
        for key, site in (("probe", sites["penultimate"]), ("probe_stage", sites["last_stage"])):
            measured = probe_accuracy(network, data.train, data.test, forget_class, site, probe)
            audit[f"{prefix}{key}_forget_accuracy"] = measured["forget"]
            if not prefix:
                audit[f"{key}_retain_accuracy"] = measured["retain"]
        if relearning.max_steps > 0:
            audit[f"{prefix}relearn_forget_steps"] = relearning_steps(
                network, data.train, data.test, forget_class, relearning
            )
    if original is not None and relearning.max_steps > 0:
        for key, network in (
            ("head_reset_relearn_forget_steps", original),
            ("relearn_forget_steps_after_head_reset", model),
        ):
            reset = head_reset(network, forget_class, relearning.seed)
            audit[key] = relearning_steps(reset, data.train, data.test, forget_class, relearning)
    audit["relearn_forget_steps_cap"] = relearning.max_steps
    audit["relearn_forget_samples"] = relearning.forget_samples
    ua = 100.0 - _recognised(model, data.train.of_classes([forget_class]).images, forget_class)
    audit["forgetting_lives_in"] = where_forgetting_lives(ua, audit)
    audit["forgetting_in_features"] = float(audit["forgetting_lives_in"] == "features")
    audit["forgetting_verdict"] = VERDICTS[audit["forgetting_lives_in"]]
    return audit


def where_forgetting_lives(ua: float, audit: dict) -> str:
    """The audit's verdict, a rule over its figures:

    * "not forgotten" — UA < `FORGOTTEN_UA` (50): the model still classifies the class;
    * "features" — the few-shot probe decodes the forget class at least `PROBE_GAP` (15)
      points worse than the retained classes from the same penultimate features, OR, where
      the original was given, the model with its class row reset needs at least
      `RELEARN_FACTOR` (4) times the steps of the original with its class row reset to
      relearn the class from a few labelled samples: the features lost it. Resetting the
      row first makes the relearning figure blind to how a mask was made (negated, zeroed,
      a bias pushed down: each then relearns exactly like the reference);
    * "head" — otherwise: the features still carry the class (decoded as well as the
      others, relearned about as fast as by a model whose only change is its classifier
      row): the forgetting is a mask on the output, which a probe or a few labelled samples
      undo.

    The thresholds were set on the tiny test model (class 3; tests/test_forgetting_audit.py)
    and the default digits model (seed 0, classes 0, 3, 6, 7; benchmarks/README.md). Probe:
    the negated or zeroed row and ModHiFi-U's default keep the class (95-100%, gap < 5), a
    model trained without it drops to 60-72% on classes 2, 3, 8, 9 but stays at 85-97% on
    0, 1, 4, 5, 6, 7 (distinctive digits a 9-class model's features still separate) — hence
    the relearning figure: steps after the row reset, over the reference's: masks 1.0,
    ModHiFi-U's default 1.6-2.7, trained without the class 4.6-8.3.
    """
    if ua < FORGOTTEN_UA:
        return "not forgotten"
    in_features = audit["probe_retain_accuracy"] - audit["probe_forget_accuracy"] >= PROBE_GAP
    reference = audit.get("head_reset_relearn_forget_steps")
    if reference is not None:
        in_features |= audit["relearn_forget_steps_after_head_reset"] >= RELEARN_FACTOR * max(reference, 1)
    return "features" if in_features else "head"


def verdict_sentence(audit: dict) -> str:
    """The verdict in words, with the figures it rests on (for reports, summaries, lineage)."""
    lead = {
        "features": "The forgetting lives in the features",
        "head": "The forgetting lives only in the head (a mask on the output, not forgetting)",
        "not forgotten": "The class is not forgotten",
    }[audit["forgetting_lives_in"]]
    before = audit.get("original_probe_forget_accuracy")
    text = (
        f"{lead}: a linear probe on the penultimate features, fitted on a few labelled samples of every class, "
        f"recognises {audit['probe_forget_accuracy']:.0f}% of the held-out forget-class samples (retained classes "
        f"{audit['probe_retain_accuracy']:.0f}%{'' if before is None else f'; before unlearning {before:.0f}%'})"
    )
    if "relearn_forget_steps" in audit:
        steps, cap = audit["relearn_forget_steps"], audit["relearn_forget_steps_cap"]
        took = f"more than {cap}" if steps >= cap else str(steps)
        text += f"; {took} SGD steps on {audit['relearn_forget_samples']} labelled samples of it bring it back"
        if "head_reset_relearn_forget_steps" in audit:
            text += (
                f"; with its class row of the classifier reset, {audit['relearn_forget_steps_after_head_reset']} "
                f"(the original with its row reset: {audit['head_reset_relearn_forget_steps']})"
            )
    return text + "."
