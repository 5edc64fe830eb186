"""Operation `unlearn`: forget a class or a random fraction of the training samples.

The model-level operation is `modhifi_core.unlearning.unlearn(model, split, method,
masks, **hyperparameters)` (ModHiFi-U and the Unlearn-Sparse baselines, one call shape).
`unlearn_checkpoint` is that operation on a loaded checkpoint, as every adapter runs it:
the forget split, optional unstructured pruning first (prune-then-unlearn), the data the
method sees (synthetic samples — data-free — or the real split), the evidence before
and after (UA, RA, TA, MIA-Efficacy on the real data) and the metadata recording what
was forgotten.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from typing import Any

import torch

from modhifi_core.checkpoint import Checkpoint
from modhifi_core.checks import check_forget_set
from modhifi_core.compute import place, requested
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.durability import ForgetRelearning, audit_forgetting
from modhifi_core.errors import InputError
from modhifi_core.metadata import ModelMetadata, read_metadata
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.models import build_model
from modhifi_core.operations.outcome import Outcome
from modhifi_core.splits import ForgetSplit, class_split, forget_split
from modhifi_core.training import TrainConfig
from modhifi_core.unlearning import unlearn
from modhifi_core.unlearning.logit_mask import FORGETTING as LOGIT_MASK
from modhifi_core.unstructured import Masks, prune_unstructured

# The methods that score samples of the forget class only (data-free: synthetic ones of it).
FORGET_SAMPLE_METHODS = ("modhifi", "logit-mask")


def unlearn_checkpoint(
    source: Checkpoint,
    data: DatasetSplits,
    *,
    forget_class: int | None = None,
    forget_random: float | None = None,
    method: str = "modhifi",
    forget_data: str = "synthetic",
    hyperparameters: dict[str, Any] | None = None,
    prune: str | None = None,
    sparsity: float = 0.95,
    retrain_epochs: int | None = None,
    samples: ArrayDataset | None = None,
    seed: int = 0,
    parents: dict[str, str] | None = None,
    executor: Executor | None = None,
    device: str | None = None,
    dtype: str | None = None,
    relearning: ForgetRelearning = ForgetRelearning(),
) -> Outcome:
    """Unlearn the forget set — class `forget_class`, or a seeded random fraction
    `forget_random` of the training samples (give one) — from `source.model` with `method`
    (ModHiFi-U or an Unlearn-Sparse baseline, with its `hyperparameters`), after
    unstructured pruning `prune` (`omp`, `imp` or `synflow`) to `sparsity` when given,
    retraining `retrain_epochs` (default: the model's training recipe).

    With `forget_data == "synthetic"` the method sees only `samples` (labelled synthetic
    samples of every class; made from the model now when None); with `real` the real
    training split. Retrain uses the model's training recipe unless hyper-parameters
    override it. Metrics: UA, RA, TA, MIA (%) after, `before_*` on the source model,
    `seconds` (the unlearning step), `prune_seconds`; for a class, where the forgetting
    lives (`durability.audit_forgetting` against the model before unlearning, forget-data
    relearning per `relearning`) and, when the method's edit is a logit mask (method
    `logit-mask`, ModHiFi-U's `logit_mask`), `forgetting_is_logit_mask` — recorded in the
    metadata, so the lineage says so. `executor`: where ModHiFi-U's statistics passes run
    (`modhifi_core.unlearning.unlearn`); the result is the same."""
    check_forget_set(forget_class, forget_random, forget_data)
    place(source.model, requested(device, dtype))
    hyperparameters = dict(hyperparameters or {})
    settings = dict(forget_class=forget_class, forget_random=forget_random, method=method, data=forget_data)
    settings.update(hyperparameters=hyperparameters, prune=prune, sparsity=sparsity, retrain_epochs=retrain_epochs)
    meta = read_metadata(source.metadata)
    forgotten = {"class": forget_class} if forget_class is not None else {"fraction": forget_random, "seed": seed}
    split = forget_split(data.train, forgotten)
    if split.forget.num_classes != source.config.num_classes:
        raise InputError(f"the model has {source.config.num_classes} classes, the dataset {split.forget.num_classes}")
    network, masks, prune_seconds = source.model, Masks.from_extra(source.extra, source.model), None
    if prune is not None:
        prune_start = time.perf_counter()
        network, masks, _ = prune_unstructured(
            network,
            data.train,
            prune,
            sparsity,
            init_state=_initial_state(source, meta, seed),
            retrain=TrainConfig(**{**meta.recipe, **({"epochs": retrain_epochs} if retrain_epochs else {})}),
        )
        prune_seconds = time.perf_counter() - prune_start
    method_split = split
    if forget_data == "synthetic":
        method_split, hyperparameters = synthetic_inputs(
            network, samples, data, forget_class=forget_class, method=method, hyperparameters=hyperparameters, seed=seed
        )
    if method == "retrain":
        hyperparameters = {**meta.recipe, **hyperparameters}
    result = unlearn(network, method_split, method, masks=masks, executor=executor, **hyperparameters)
    before = unlearning_metrics(source.model, split, data.test)
    after = unlearning_metrics(result.model, split, data.test)
    evidence = {**after, **{f"before_{k}": v for k, v in before.items()}}
    if forget_class is not None:
        evidence.update(audit_forgetting(result.model, data, forget_class, network, relearning=relearning))
    forgotten["method"] = method
    if result.log.get("forgetting") == LOGIT_MASK:
        forgotten["logit_mask"] = evidence["forgetting_is_logit_mask"] = True
    metadata = meta.derive(
        "unlearn",
        source.sha256,
        parents=parents or {},
        params={**settings, "seed": seed, "hyperparameters": result.log["hyperparameters"]},
        forgotten=forgotten,
        metrics={"forget": split.describe(), **evidence},
        report=result.log,
    )
    metrics = {
        "method": method,
        "forget": split.describe(),
        "data": forget_data,
        "sparsity": None if masks is None else masks.sparsity,
        **evidence,
        "seconds": result.seconds,
        "prune_seconds": prune_seconds,
    }
    return Outcome(result.model, source.config, metadata, metrics, extra={} if masks is None else masks.to_extra())


def synthetic_inputs(
    model: torch.nn.Module,
    samples: ArrayDataset | None,
    data: DatasetSplits,
    *,
    forget_class: int,
    method: str = "modhifi",
    hyperparameters: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[ForgetSplit, dict]:
    """The split and hyper-parameters of a data-free run: ModHiFi-U scores synthetic
    samples of the forget class (passed as `forget_images`; with `contrastive`, synthetic
    retain samples as `retain_images`) and never touches the real split it is given for
    the evidence; the baselines train on the synthetic split. Without `samples`,
    `synthesize`'s default count per class are synthesised from `model` (for plain ModHiFi-U,
    of the forget class only)."""
    hyperparameters = dict(hyperparameters or {})
    k = forget_class
    modhifi_only_forget = method in FORGET_SAMPLE_METHODS and not hyperparameters.get("contrastive")
    if samples is None:
        from modhifi_core.synthesis import synthesize

        classes = [k] if modhifi_only_forget else None
        made = synthesize(model, image_shape=data.image_shape, classes=classes, seed=seed)
        samples = made.samples
    if samples.image_shape != data.image_shape:
        raise InputError(f"synthetic samples have shape {samples.image_shape}, the model takes {data.image_shape}")
    if method not in FORGET_SAMPLE_METHODS:
        return class_split(samples, k), hyperparameters
    hyperparameters["forget_images"] = samples.of_classes([k]).images
    if not modhifi_only_forget:
        hyperparameters["retain_images"] = samples.of_classes([c for c in range(samples.num_classes) if c != k]).images
    return forget_split(data.train, {"class": k}), hyperparameters


def _initial_state(source: Checkpoint, meta: ModelMetadata, seed: int) -> dict:
    """The rewinding point of OMP/IMP and SynFlow's start: the architecture freshly
    initialised with the training seed (the recipe's, else `seed`) — the model's own
    initialisation when modhifi trained it (for a channel-pruned model, a fresh
    initialisation of its pruned shape)."""
    torch.manual_seed(meta.recipe.get("seed", seed))
    return build_model(source.config).state_dict()
