"""`modhifi prune`: structured pruning of a checkpoint to a FLOPs target (ModHiFi-P or a
baseline) — an adapter over `modhifi_core.operations.prune_checkpoint`; of a Hugging Face
language model over `prune_language_model`; of an open-weight image classifier (hf:DIR,
torchvision:ARCH, timm:ARCH) over `prune_image_classifier`."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.loading import check_output
from flows.console import emit


def prune(
    model: Path = typer.Option(
        ..., "--model", help="Checkpoint to prune (.pt), hf:DIR (a Hugging Face folder), torchvision:ARCH or timm:ARCH."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the pruned checkpoint (.pt; for hf:DIR a folder)."),
    target_flops: float | None = typer.Option(
        None, help="Fraction of the dense FLOPs that remains, in (0, 1) (default 0.5; not for a language model)."
    ),
    method: str = typer.Option("modhifi", help="modhifi, magnitude (= l2), l1, l2 or random."),
    calibration: str = typer.Option(
        "synthetic",
        help="synthetic (made from the model: data-free), real (training images) or gaussian; "
        "an image model also takes a folder of samples.",
    ),
    calibration_samples: int = typer.Option(512, min=1, help="Calibration images to score and recalibrate on."),
    compensation: str | None = typer.Option(None, help="none, scalar or full (default: full for modhifi, else none)."),
    score: str = typer.Option("saliency", help="ModHiFi selection score: saliency (R-tilde, the paper's) or fidelity."),
    compensation_order: str = typer.Option("joint", help="joint or sequential (refits on pruned upstream inputs)."),
    allocation: str = typer.Option("uniform", help="ModHiFi allocation across layers: uniform or union."),
    rounds: int | None = typer.Option(None, min=1, help="Pruning rounds (default: one per halving of FLOPs)."),
    round_to: int = typer.Option(1, min=1, help="Round kept channel counts up to a multiple of this."),
    batch_size: int | None = typer.Option(
        None,
        min=1,
        help="Calibration batch size (default: 128 images of a checkpoint, 32 of an image model, 4 sequences).",
    ),
    latency_repeats: int | None = typer.Option(
        None, min=1, help="Interleaved timed forward passes per model (default: 100 for a checkpoint, else 3)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the calibration subset, gaussian/synthetic data and random."),
    target_params: float | None = typer.Option(
        None, help="hf:DIR: fraction of all parameters that remains (language models, ViT/Swin)."
    ),
    ffn_fraction: float | None = typer.Option(None, help="hf:DIR: fraction of FFN neurons removed per layer."),
    eval_text: str | None = typer.Option(None, help="hf:DIR: held-out text (file or folder) for perplexity."),
    length: int = typer.Option(256, min=2, help="hf:DIR: tokens per calibration sequence."),
    weights: Path | None = typer.Option(None, help="torchvision/timm: weights file (or a folder modhifi wrote)."),
    num_classes: int | None = typer.Option(None, min=1, help="torchvision/timm: the constructor's num_classes."),
    data: str | None = typer.Option(None, help="Image model: dataset (digits, fashion-mnist, cifar10) or folder."),
    data_dir: Path | None = typer.Option(None, help="Image model: folder of the --data dataset's files."),
    image_size: int | None = typer.Option(None, min=1, help="Image model: input size (default: its config's, or 224)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Prune physically and report accuracy (perplexity), FLOPs/params ratios and CPU speed-up.

    A checkpoint: channels (ModHiFi-P or a baseline) to --target-flops. hf:DIR: FFN neurons
    of a Hugging Face transformer (--method modhifi, modhifi-energy, wanda-sp, flap, magnitude or random)
    to --target-params or by --ffn-fraction, calibrated on text:PATH or synthetic
    (self-sampled); the output folder loads with stock transformers. An image classifier
    (hf:DIR, torchvision:ARCH --weights FILE): conv channels of a CNN to --target-flops,
    MLP neurons of a ViT/Swin to --target-flops or --target-params, calibrated data-free
    (synthetic) or on --data / a folder; written back in its source's format."""
    from flows.commands.loading import is_image_model
    from modhifi_core.errors import InputError

    if is_image_model(str(model)):
        if target_flops is not None and target_params is not None:
            raise InputError("give one of --target-flops and --target-params, not both")
        check_output(out, overwrite, folder=True)
        image = dict(weights=weights, num_classes=num_classes, data=data, data_dir=data_dir, image_size=image_size)
        if target_flops is None and target_params is None:
            target_flops = 0.5
        targets = (target_flops, target_params)
        options = dict(method=method, round_to=round_to, seed=seed, batch_size=batch_size or 32)
        options["latency_repeats"] = latency_repeats or 3
        flags = dict(compensation=compensation, score=score, compensation_order=compensation_order)
        flags.update(allocation=allocation, rounds=rounds)
        options["channel_options"] = image_channel_options(method, flags)
        return prune_image(str(model), out, targets, calibration, calibration_samples, image, options, as_json)
    if str(model).startswith("hf:"):
        if target_flops is not None:
            raise InputError("a language model is pruned to --target-params or by --ffn-fraction, not --target-flops")
        hf_args = dict(target_params=target_params, fraction=ffn_fraction, samples=calibration_samples, length=length)
        hf_args.update(eval_text=eval_text, latency_repeats=latency_repeats or 3, batch_size=batch_size or 4, seed=seed)
        check_output(out, overwrite, folder=True)
        return prune_hf(str(model), out, method, calibration, hf_args, as_json)
    if target_params is not None or ffn_fraction is not None:
        raise InputError("a checkpoint is pruned to --target-flops; --target-params/--ffn-fraction are for hf:DIR")
    target_flops = 0.5 if target_flops is None else target_flops
    batch_size, latency_repeats = batch_size or 128, latency_repeats or 100
    from modhifi_core.params import CollectParams, PruneParams

    options = dict(target_flops=target_flops, method=method, compensation=compensation, allocation=allocation)
    options.update(score=score, compensation_order=compensation_order)
    settings = PruneParams(**options, rounds=rounds, round_to=round_to, latency_repeats=latency_repeats)
    CollectParams(calibration=calibration, samples=calibration_samples, batch_size=batch_size)  # validated up front
    check_output(out, overwrite)

    from flows.commands.loading import load_model_and_data
    from modhifi_core.calibration import calibration_set
    from modhifi_core.operations.prune import prune_checkpoint

    ckpt, data = load_model_and_data(model)
    images = calibration_set(calibration, ckpt.model, data, calibration_samples, seed)
    outcome = prune_checkpoint(
        ckpt,
        images,
        data,
        settings,
        calibration_source=calibration,
        seed=seed,
        batch_size=batch_size,
        latency_repeats=latency_repeats,
    )
    sha = outcome.save(out)
    emit({**outcome.metrics, "target_flops": target_flops, "out": str(out), "sha256": sha}, as_json, f"pruned {model}")


def image_channel_options(method: str, flags: dict) -> dict:
    """The channel pruner's flags for a CNN (validated as prune params); none for a ViT/Swin
    method of MLP neurons, which `check_options` judges once the model is loaded."""
    from modhifi_core.operations.prune import METHODS
    from modhifi_core.operations.prune_image_classifier import channel_options
    from modhifi_core.params import PruneParams

    return channel_options(PruneParams(method=method, **flags)) if method in METHODS else {}


def prune_hf(source: str, out: Path, method: str, calibration: str, options: dict, as_json: bool) -> None:
    """`modhifi prune --model hf:DIR`: an adapter over `prune_language_model`."""
    from modhifi_core.operations.prune_language_model import check_options, prune_language_model, save_language_model

    check_options(method, calibration, options["target_params"], options["fraction"])
    from modhifi_core.sources import load_hf
    from modhifi_core.sources.huggingface import weights_digest

    loaded = load_hf(source, need_tokenizer=True)
    result = prune_language_model(loaded.model, loaded.tokenizer, calibration, method=method, **options)
    parents = {"model": weights_digest(loaded.weights)}
    folder = save_language_model(result, out, loaded, "prune", parents, {"method": method, **options})
    emit({**result.metrics, "out": str(folder)}, as_json, f"pruned {source}")


def prune_image(
    source: str,
    out: Path,
    targets: tuple[float | None, float | None],
    calibration: str,
    samples: int,
    image: dict,
    options: dict,
    as_json: bool,
) -> None:
    """`modhifi prune --model hf:DIR | torchvision:ARCH`: an adapter over `prune_image_classifier`."""
    from flows.commands.loading import image_calibration, load_image_data
    from modhifi_core.metadata import modification_record
    from modhifi_core.operations.prune_image_classifier import check_options, prune_image_classifier
    from modhifi_core.vision.sources import classifier, input_shape, load_image_model, save_image_model

    loaded = load_image_model(source, image["weights"], image["num_classes"])
    shape = input_shape(loaded, image["image_size"])
    check_options(loaded.model, options["method"], *targets, image_shape=shape, round_to=options["round_to"])
    data = load_image_data(image["data"], shape, image["data_dir"]) if image["data"] else None
    images = image_calibration(calibration, classifier(loaded), shape, data, samples, options["seed"])
    result = prune_image_classifier(
        loaded.model,
        images,
        target_flops=targets[0],
        target_params=targets[1],
        test=data.test if data is not None else None,
        **options,
    )
    params = {**options, "target_flops": targets[0], "target_params": targets[1], "calibration": calibration}
    params.update(calibration_samples=len(images), data=image["data"], image_size=list(shape))
    lineage = modification_record("prune", {"model": loaded.weights}, params, result.metrics)
    folder = save_image_model(result.model, loaded, out, lineage)
    emit({**result.metrics, "out": str(folder)}, as_json, f"pruned {source}")
