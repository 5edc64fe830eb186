"""`modhifi evaluate`: accuracy (and, with a forget class, the unlearning evidence) of a
model — an adapter over `modhifi_core.operations.evaluate`."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.console import emit


def evaluate(
    model: Path = typer.Option(
        ...,
        "--model",
        help="Checkpoint to evaluate, hf:DIR (a Hugging Face causal LM or image classifier), "
        "torchvision:ARCH or timm:ARCH.",
    ),
    text: str | None = typer.Option(
        None, "--text", help="hf:DIR: held-out text (file or folder): perplexity, or an encoder's agreement."
    ),
    reference: str | None = typer.Option(
        None,
        "--reference",
        help="hf:DIR: the model to compare with (an encoder needs it: embedding cosine and top-10 agreement).",
    ),
    samples: int = typer.Option(16, min=1, help="hf:DIR: windows (an encoder: sentences) of --text to evaluate."),
    length: int = typer.Option(256, min=2, help="hf:DIR: tokens per window."),
    dataset: str | None = typer.Option(None, help="Dataset (default: the one the model was trained on)."),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    forget_class: int | None = typer.Option(
        None, "--forget-class", help="Also report UA, RA, TA, MIA (%) for forgetting class K (default: recorded one)."
    ),
    data: str | None = typer.Option(None, help="Image model: dataset (digits, fashion-mnist, cifar10) or folder."),
    weights: Path | None = typer.Option(None, help="torchvision/timm: weights file (or a folder modhifi wrote)."),
    num_classes: int | None = typer.Option(None, min=1, help="torchvision/timm: the constructor's num_classes."),
    image_size: int | None = typer.Option(None, min=1, help="Image model: input size (default: its config's, or 224)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Test accuracy and per-class accuracy of a checkpoint or an image classifier (and UA, RA, TA, MIA for a
    forgotten class) on --data; perplexity of a Hugging Face causal LM on --text; an encoder's sentence-embedding
    agreement with --reference on --text."""
    from flows.commands.loading import is_image_model

    if is_image_model(str(model)) or (data is not None and str(model).startswith("hf:")):
        image = dict(weights=weights, num_classes=num_classes, image_size=image_size, data_dir=data_dir)
        return evaluate_image(str(model), data, forget_class, image, as_json)
    from modhifi_core.errors import InputError

    if data is not None:
        raise InputError(f"--data is for image classifiers; {model} is not one (a checkpoint takes --dataset)")
    if str(model).startswith("hf:"):
        return evaluate_hf(str(model), text, reference, samples, length, as_json)
    if reference is not None:
        raise InputError(f"--reference is for Hugging Face language models (hf:DIR); {model} is not one")
    from flows.commands.loading import load_model_and_data
    from modhifi_core.metadata import read_metadata
    from modhifi_core.operations.evaluate import evaluate as evaluate_model
    from modhifi_core.splits import forget_split

    ckpt, data = load_model_and_data(model, dataset, data_dir)
    recorded = read_metadata(ckpt.metadata).forgotten
    forgotten = {"class": forget_class} if forget_class is not None else recorded
    split = forget_split(data.train, forgotten) if forgotten else None
    metrics = evaluate_model(ckpt.model, data, split)
    emit({**metrics, "model": str(model), "sha256": ckpt.sha256}, as_json, title=f"evaluation of {model}")


def evaluate_hf(source: str, text: str | None, reference: str | None, samples: int, length: int, as_json: bool) -> None:
    """`modhifi evaluate --model hf:DIR --text FILE [--reference hf:DENSE]`: the
    `evaluate_language_model` operation (a causal LM's perplexity, an encoder's agreement
    with the reference)."""
    from modhifi_core.errors import InputError
    from modhifi_core.operations.evaluate_language_model import evaluate_language_model
    from modhifi_core.sources import load_hf, model_kind

    if text is None:
        raise InputError("--model hf:DIR needs --text FILE (held-out text to evaluate the language model on)")
    kind = model_kind(source)
    if kind == "encoder" and reference is None:
        raise InputError(f"{source} is an encoder, which has no perplexity: give --reference hf:DENSE to compare with")
    if reference is not None and model_kind(reference) != kind:
        other = model_kind(reference)
        raise InputError(f"--reference {reference} is a {other} model and {source} a {kind}: compare one kind")
    loaded = load_hf(source, kind=kind, need_tokenizer=True)
    dense = load_hf(reference, kind=kind).model if reference is not None else None
    options = {"reference": dense, "samples": samples, "length": length}
    result = evaluate_language_model(loaded.model, loaded.tokenizer, text, **options)
    extra = {"reference": reference} if reference is not None else {}
    emit({**result, "model": source, **extra}, as_json, title=f"evaluation of {source}")


def evaluate_image(source: str, data: str | None, forget_class: int | None, image: dict, as_json: bool) -> None:
    """`modhifi evaluate --model hf:DIR | torchvision:ARCH --data D`: accuracy (and the
    unlearning evidence for --forget-class) through the `evaluate` operation."""
    from flows.commands.loading import load_image_data
    from modhifi_core.errors import InputError
    from modhifi_core.operations.evaluate import evaluate as evaluate_model
    from modhifi_core.splits import class_split
    from modhifi_core.vision.sources import classifier, input_shape, load_image_model

    if data is None:
        raise InputError(f"{source} is an image classifier: give --data (a dataset or a folder of labelled samples)")
    loaded = load_image_model(source, image["weights"], image["num_classes"])
    splits = load_image_data(data, input_shape(loaded, image["image_size"]), image["data_dir"])
    network = classifier(loaded)
    split = class_split(splits.train, forget_class) if forget_class is not None else None
    metrics = evaluate_model(network, splits, split)
    emit({**metrics, "model": source, "weights": loaded.weights}, as_json, title=f"evaluation of {source}")
