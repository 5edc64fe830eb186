"""The CLI commands of a zoo checkpoint (`--model FILE.pt`; `modhifi train` makes one).

Each function takes the adapter, `--out` (already checked by the generic command) and
the options the user gave (typer parameter names; None or an empty list: not given),
fills the rest from `kind.defaults` or the operation's signature, runs the operation,
saves with `kind.save` and returns the metrics to print (with `out` and `sha256`).
Values are validated with the params schema's sections before any work, so a bad one
is refused in one line naming its option.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from modhifi_core.checkpoint import Checkpoint
from modhifi_core.data import DatasetSplits, data_spec, load_from_spec
from modhifi_core.errors import InputError
from modhifi_core.metadata import read_metadata
from modhifi_core.safe_io import sha256_file
from tasks.params import default

# Training holds the weights, their gradients, the SGD momentum and a copy being saved.
TRAINING_COPIES = 4
# The samples exist three times at the end: the result, its normalised copy and the .npz bytes.
SAMPLE_COPIES = 3


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave (None and an empty list: not given)."""
    return {k: v for k, v in options.items() if v is not None and v != []}


def load_model_and_data(
    kind: Any, dataset: str | None = None, data_dir: Path | None = None
) -> tuple[Checkpoint, DatasetSplits]:
    """The kind's checkpoint and its dataset (`dataset`/`data_dir` override the recorded
    ones; a checkpoint without a record gets digits at its input size)."""
    ckpt = kind.load()
    spec = read_metadata(ckpt.metadata).data or data_spec(
        image_size=ckpt.config.image_size, channels=ckpt.config.in_channels
    )
    data = load_from_spec(spec, dataset=dataset, data_dir=str(data_dir) if data_dir else None)
    return ckpt, data


def _saved(kind: Any, loaded: Any, outcome: Any, out: Path) -> dict[str, str]:
    path = kind.save(loaded, outcome.model, out, outcome.metadata.to_dict(), outcome.extra)
    return {"out": str(path), "sha256": sha256_file(path)}


# ---------------------------------------------------------------------------- train
def train(kind: Any, out: Path, options: dict[str, Any]) -> dict:
    """`modhifi train`: train architecture `model` on `dataset` (SGD, cosine schedule,
    seeded); its test accuracy."""
    from modhifi_core.models import ModelConfig, parameter_bytes
    from modhifi_core.operations.train import NATIVE_SHAPES, train_from_params
    from tasks.params import DataParams, ModelParams, TrainParams

    o = given(options)
    data = {k: o[k] for k in ("dataset", "image_size", "train_per_class") if k in o}
    if "data_dir" in o:
        data["data_dir"] = str(o["data_dir"])
    architecture = {k: v for k, v in (("name", o.get("architecture")), ("width", o.get("width"))) if v is not None}
    recipe = {k: o[k] for k in ("epochs", "lr", "batch_size") if k in o}
    DataParams(**data), ModelParams(**architecture), TrainParams(**recipe)  # validated up front
    dataset = data.get("dataset", default(train_from_params, "dataset"))
    size = data.get("image_size", NATIVE_SHAPES[dataset][0])
    channels = NATIVE_SHAPES[dataset][1]
    name = architecture.get("name", default(train_from_params, "name"))
    width = architecture.get("width", default(train_from_params, "width"))
    # counted on the meta device, before anything is allocated; the classifier is negligible
    weights = parameter_bytes(ModelConfig(name=name, in_channels=channels, width=width, image_size=size))
    from kinds.zoo.memory import check_fits_in_memory

    check_fits_in_memory(
        TRAINING_COPIES * weights, f"training {name} of width {width} ({weights // 4:,} float32 parameters)"
    )
    seed = o.get("seed", default(train_from_params, "seed"))
    compute = kind.compute_keywords()
    outcome = train_from_params(**data, channels=channels, **architecture, **recipe, seed=seed, **compute)
    shown = {k: v for k, v in outcome.metrics.items() if k != "per_class_accuracy"}
    return {**shown, "model": name, **_saved(kind, outcome, outcome, out)}


# ---------------------------------------------------------------------------- prune
PRUNE_SETTINGS = ("method", "target_flops", "compensation", "score", "compensation_order", "allocation", "rounds")


def prune(kind: Any, out: Path, options: dict[str, Any]) -> dict:
    """`modhifi prune --model FILE.pt`: channels (ModHiFi-P or a baseline) to `target_flops`."""
    from modhifi_core.calibration import calibration_set
    from modhifi_core.operations.evaluate import check_classes
    from modhifi_core.operations.prune import prune_checkpoint
    from tasks.params import CollectParams, PruneParams

    o = given(options)
    settings = {k: o[k] for k in (*PRUNE_SETTINGS, "round_to", "allow_floor") if k in o}
    settings.setdefault(f"target_{kind.defaults.target}", kind.defaults.target_value)
    batch_size = o.get("batch_size", kind.defaults.batch_size)
    latency_repeats = o.get("latency_repeats", kind.defaults.latency_repeats)
    samples = o.get("calibration_samples", kind.defaults.calibration_samples)
    calibration = o.get("calibration", default(prune_checkpoint, "calibration_source"))
    seed = o.get("seed", default(prune_checkpoint, "seed"))
    PruneParams(**settings, latency_repeats=latency_repeats)  # validated up front
    CollectParams(calibration=calibration, samples=samples, batch_size=batch_size)

    ckpt, data = load_model_and_data(kind)
    check_classes(ckpt.model, data)  # before calibration samples are synthesised
    images = calibration_set(calibration, ckpt.model, data, samples, seed)
    outcome = prune_checkpoint(
        ckpt,
        images,
        data,
        **settings,
        calibration_source=calibration,
        seed=seed,
        batch_size=batch_size,
        latency_repeats=latency_repeats,
    )
    return {**outcome.metrics, "target_flops": settings["target_flops"], **_saved(kind, ckpt, outcome, out)}


# ---------------------------------------------------------------------------- evaluate
def evaluate(kind: Any, out: Path | None, options: dict[str, Any]) -> dict:
    """`modhifi evaluate --model FILE.pt`: test and per-class accuracy on its dataset (or
    `dataset`), and UA, RA, TA, MIA of `forget_class` (default: the recorded one)."""
    from modhifi_core.operations.evaluate import evaluate as evaluate_model
    from modhifi_core.splits import forget_split

    o = given(options)
    ckpt, data = load_model_and_data(kind, o.get("dataset"), o.get("data_dir"))
    recorded = read_metadata(ckpt.metadata).forgotten
    forgotten = {"class": o["forget_class"]} if "forget_class" in o else recorded
    split = forget_split(data.train, forgotten) if forgotten else None
    metrics = evaluate_model(ckpt.model, data, split)
    return {**metrics, "model": str(kind.source), "sha256": ckpt.sha256}


# ---------------------------------------------------------------------------- unlearn
def unlearn(kind: Any, out: Path, options: dict[str, Any]) -> dict:
    """`modhifi unlearn --model FILE.pt`: ModHiFi-U or an Unlearn-Sparse baseline,
    optionally after unstructured pruning; UA, RA, TA, MIA (%) and seconds."""
    from modhifi_core.operations.unlearn import unlearn_checkpoint
    from tasks.params import UnlearnParams

    o = given(options)
    if "sparsity" in o and "prune" not in o:
        raise InputError("--sparsity needs --prune omp|imp|synflow")
    forget_data = o.get("forget_data") or (
        "real" if "forget_random" in o else default(unlearn_checkpoint, "forget_data")
    )
    settings = {"forget_class": o.get("forget_class"), "forget_random": o.get("forget_random")}
    settings.update({k: o[k] for k in ("method", "prune", "sparsity", "retrain_epochs") if k in o})
    settings["hyperparameters"] = o.get("hyperparameter", {})  # `--set` pairs, parsed by the command
    UnlearnParams(**settings, data=forget_data)  # validated up front
    seed = o.get("seed", default(unlearn_checkpoint, "seed"))

    ckpt, splits = load_model_and_data(kind, data_dir=o.get("data_dir"))
    outcome = unlearn_checkpoint(ckpt, splits, **settings, forget_data=forget_data, seed=seed)
    return {**outcome.metrics, **_saved(kind, ckpt, outcome, out)}


# ---------------------------------------------------------------------------- synthesize
def synthesize(kind: Any, out: Path, options: dict[str, Any]) -> dict:
    """`modhifi synthesize --model FILE.pt`: class-balanced labelled samples made from the
    checkpoint alone, written as a dataset folder; how the model judges them."""
    from modhifi_core import synthesis

    o = given(options)
    method = o.get("method", default(synthesis.synthesize, "method"))
    if method not in synthesis.METHODS:
        raise InputError(f"unknown --method {method!r}; choose one of {', '.join(synthesis.METHODS)}")
    per_class = o.get("per_class")
    if per_class is not None and per_class < 1:
        raise InputError(f"--per-class must be at least 1, got {per_class}")
    source = o.get("source")
    if (source is not None) != (method == "folder"):
        raise InputError("--source DIR goes with --method folder, and only with it")
    synthesis.check_output_folder(out)
    wanted = parse_classes(o.get("classes"))

    config = synthesis.InversionConfig(**{k: o[k] for k in ("steps", "lr", "batch_size") if k in o})
    ckpt = kind.load()
    shape = (ckpt.config.in_channels, ckpt.config.image_size, ckpt.config.image_size)
    real = None
    if "reference" in o:
        spec = ckpt.metadata.get("data") or data_spec(
            image_size=ckpt.config.image_size, channels=ckpt.config.in_channels
        )
        real = load_from_spec(spec, dataset=o["reference"]).train
    if per_class is None and method != "folder":
        per_class = default(synthesis.synthesize, "per_class")
    if method != "folder":
        from kinds.zoo.memory import check_fits_in_memory

        count = per_class * (len(wanted) if wanted else ckpt.config.num_classes)
        needed = SAMPLE_COPIES * count * (4 * shape[0] * shape[1] * shape[2] + 8)
        check_fits_in_memory(needed, f"synthesising {count:,} samples of shape {shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # result.warnings are printed below, once
        result = synthesis.synthesize(
            ckpt.model,
            per_class,
            image_shape=shape,
            method=method,
            classes=wanted,
            config=config,
            seed=o.get("seed", default(synthesis.synthesize, "seed")),
            source=source,
            reference=real,
        )
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    manifest = synthesis.save_synthetic(result, out, parents={"model": ckpt.sha256})
    return {
        "method": method,
        "samples": len(result.samples),
        "per_class": per_class,
        "classes": result.classes,
        **result.quality,
        "seconds": result.seconds,
        "out": str(out),
        "preview": str(Path(out) / "preview.png"),
        "samples_sha256": manifest["samples_sha256"],
        "warnings": list(result.warnings),
    }


def parse_classes(text: str | None) -> list[int] | None:
    """'3' or '0,1,2' -> [3] or [0, 1, 2]; None stays None (all classes)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--classes must be comma-separated integers, got {text!r}") from None


# ---------------------------------------------------------------------------- finetune
def finetune(kind: Any, out: Path, options: dict[str, Any]) -> dict:
    """`modhifi finetune --model FILE.pt`: distil from `teacher` on synthetic samples
    (data-free) or cross-entropy on real data; accuracy before and after. A model that is
    (or descends from) an unlearned one is fine-tuned on the retained classes with
    BatchNorm frozen (the forgotten class is read from its metadata)."""
    from modhifi_core.operations.finetune import finetune_checkpoint
    from modhifi_core.synthesis.artifact import load_synthetic, samples_digest
    from tasks.params import FinetuneParams

    o = given(options)
    source, folder, dataset = parse_data(o.get("data", default(finetune_checkpoint, "finetune_data")))
    settings = {k: o[k] for k in ("epochs", "lr", "temperature", "batch_size", "batchnorm", "per_class") if k in o}
    FinetuneParams(**settings, data=source)  # validated up front
    teacher = o.get("teacher")
    if source == "synthetic" and teacher is None:
        raise InputError("distillation on synthetic data needs --teacher (the original model)")

    student, splits = load_model_and_data(kind, dataset, o.get("data_dir"))
    guide = kind.load(teacher) if teacher is not None else None
    samples = load_synthetic(folder, num_classes=student.config.num_classes) if folder is not None else None
    parents = {"synthetic": samples_digest(folder)} if folder is not None else {}
    outcome = finetune_checkpoint(
        student,
        guide,
        splits,
        **settings,
        finetune_data=source,
        samples=samples,
        forget_class=o.get("forget_class"),
        seed=o.get("seed", default(finetune_checkpoint, "seed")),
        parents=parents,
    )
    return {**outcome.metrics, **_saved(kind, student, outcome, out)}


def parse_data(text: str) -> tuple[str, Path | None, str | None]:
    """`--data` as (source, sample folder, dataset): 'synthetic:DIR', 'synthetic', 'real'
    (the model's own dataset) or a dataset name (real data of that dataset)."""
    from modhifi_core.data import DATASETS

    if text.startswith("synthetic:"):
        folder = Path(text.removeprefix("synthetic:"))
        if not folder.is_dir():
            raise InputError(f"synthetic sample folder not found: {folder}")
        return "synthetic", folder, None
    if text in ("synthetic", "real"):
        return text, None, None
    if text in DATASETS:
        return "real", None, text
    raise InputError(
        f"--data must be synthetic, synthetic:DIR, real or a dataset ({', '.join(DATASETS)}), got {text!r}"
    )
