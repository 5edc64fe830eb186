"""`modhifi prune | evaluate | unlearn --model SOURCE` on an image classifier (any image
kind: `hf:DIR`, `torchvision:ARCH` / `timm:ARCH` + `--weights`, `python:...` + `--weights
--input-shape`), per the CLI contract: `command(kind, out, options) -> metrics`, where
`options` holds the typer options the user gave (None or absent: not given). Defaults
come from `kind.defaults` and the operation's signature; the model is loaded and written
back by the adapter (`kind.load`, `kind.save`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modhifi_core.errors import InputError
from tasks.params import default

CALIBRATION = "synthetic"  # data-free unless told otherwise
CHANNEL_FLAGS = ("compensation", "score", "compensation_order", "allocation", "rounds", "allow_floor")


def _given(options: dict, key: str, default: Any = None) -> Any:
    value = options.get(key)
    return default if value is None else value


def _load(kind: Any, options: dict) -> Any:
    """The model, loaded by the adapter with the source options the user gave (`--weights`, ...)."""
    return kind.load(**{key: options[key] for key in kind.source_options if options.get(key) is not None})


def prune(kind: Any, out: Path, options: dict) -> dict:
    """`modhifi prune`: conv channels of a CNN to --target-flops, MLP neurons of a ViT/Swin
    to --target-flops or --target-params (`prune_image_classifier`), calibrated data-free
    (synthetic), on gaussian noise, on --data (real) or a folder of samples; written back
    in the source's format."""
    from kinds.image.data import image_calibration, load_image_data
    from modhifi_core.checks import check_fraction, check_one_given
    from modhifi_core.metadata import modification_record
    from modhifi_core.operations.prune_image_classifier import check_options, prune_image_classifier

    d = kind.defaults
    targets = {"flops": options.get("target_flops"), "params": options.get("target_params")}
    given = [name for name, value in targets.items() if value is not None]
    if len(given) > 1:
        check_one_given(target_flops=targets["flops"], target_params=targets["params"])
    for name in given:
        kind.check_target(name)
        check_fraction(f"target_{name}", targets[name])  # before the model is read
    if not given:
        targets[d.target] = d.target_value
    op = prune_image_classifier
    method = _given(options, "method", default(op, "method"))
    settings = {
        "method": method,
        "round_to": _given(options, "round_to", default(op, "round_to")),
        "seed": _given(options, "seed", default(op, "seed")),
        "batch_size": _given(options, "batch_size", d.batch_size),
        "latency_repeats": _given(options, "latency_repeats", d.latency_repeats),
    }
    flags = {key: options[key] for key in CHANNEL_FLAGS if options.get(key) is not None}
    settings["channel_options"] = channel_options(method, flags)
    calibration = _given(options, "calibration", CALIBRATION)
    samples = _given(options, "calibration_samples", d.calibration_samples)

    loaded = _load(kind, options)
    shape = loaded.input_shape
    settings["components"] = loaded.components
    check_options(
        loaded.model, method, targets["flops"], targets["params"], loaded.components, shape, settings["round_to"]
    )
    data = options.get("data")
    splits = load_image_data(data, shape, options.get("data_dir")) if data else None
    images = image_calibration(calibration, kind.classifier(loaded), shape, splits, samples, settings["seed"])
    result = op(
        loaded.model,
        images,
        target_flops=targets["flops"],
        target_params=targets["params"],
        test=splits.test if splits is not None else None,
        **settings,
    )
    used = {**settings, "target_flops": targets["flops"], "target_params": targets["params"]}
    used.update(calibration=calibration, calibration_samples=len(images), data=data, image_size=list(shape))
    lineage = modification_record("prune", {"model": loaded.weights}, used, result.metrics)
    folder = kind.save(loaded, result.model, out, lineage)
    return {**result.metrics, "out": str(folder)}


def channel_options(method: str, flags: dict) -> dict:
    """The channel pruner's flags for a CNN (validated as prune params); none for a ViT/Swin
    method of MLP neurons, which `check_options` judges once the model is loaded."""
    from modhifi_core.operations.prune import METHODS
    from modhifi_core.operations.prune_image_classifier import channel_options as pruner_options
    from tasks.params import PruneParams

    if method not in METHODS:
        return {}
    settings = PruneParams(method=method, **flags).model_dump(exclude={"latency_batch", "latency_repeats"})
    return pruner_options(**settings)


def evaluate(kind: Any, out: Path | None, options: dict) -> dict:
    """`modhifi evaluate`: accuracy on --data (and the unlearning evidence for --forget-class)
    through the `evaluate` operation."""
    from kinds.image.data import load_image_data
    from modhifi_core.operations.evaluate import evaluate as evaluate_model
    from modhifi_core.splits import class_split

    data = options.get("data")
    if data is None:
        raise InputError(
            f"{kind.source} is an image classifier: give --data (a dataset or a folder of labelled samples)"
        )
    loaded = _load(kind, options)
    splits = load_image_data(data, loaded.input_shape, options.get("data_dir"))
    forget_class = options.get("forget_class")
    split = class_split(splits.train, forget_class) if forget_class is not None else None
    metrics = evaluate_model(kind.classifier(loaded), splits, split)
    return {**metrics, "model": kind.source, "weights": loaded.weights}


def unlearn(kind: Any, out: Path, options: dict) -> dict:
    """`modhifi unlearn --forget-class K --data D`: `unlearn_image_classifier` (data-free on
    samples made from the model unless --forget-data real), written back in the source's
    format. `options["hyperparameter"]`: the parsed `--set KEY=VALUE` pairs."""
    from kinds.image.data import load_image_data
    from modhifi_core.metadata import modification_record
    from modhifi_core.operations.unlearn_image_classifier import unlearn_image_classifier as op

    forget_class = options.get("forget_class")
    if forget_class is None:
        raise InputError("give --forget-class K (the class to forget)")
    data = options.get("data")
    if data is None:
        raise InputError(
            f"{kind.source} is an image classifier: give --data (the real data the evidence is measured on)"
        )
    settings = {
        "method": _given(options, "method", default(op, "method")),
        "forget_data": _given(options, "forget_data", default(op, "forget_data")),
        "hyperparameters": dict(options.get("hyperparameter") or {}),
        "seed": _given(options, "seed", default(op, "seed")),
    }
    loaded = _load(kind, options)
    splits = load_image_data(data, loaded.input_shape, options.get("data_dir"))
    result = op(loaded.model, splits, forget_class, **settings)
    used = {**settings, "forget_class": forget_class, "data": data, "log": result.log}
    lineage = modification_record("unlearn", {"model": loaded.weights}, used, result.metrics)
    folder = kind.save(loaded, result.model, out, lineage)
    return {**result.metrics, "out": str(folder)}
