"""Where an open-weight image classifier comes from and how a modified one is written back
in its source's own format, with the lineage beside it.

    loaded = load_image_model("hf:DIR")                                   # a HF folder
    loaded = load_image_model("torchvision:resnet18", weights="w.safetensors", num_classes=10)
    save_image_model(pruned, loaded, "out/", lineage={...})

* `hf:DIR`: a local Hugging Face image classifier (the kind read from its config by
  `modhifi_core.sources.huggingface.model_kind`; a language model is refused), loaded by
  `load_hf_pruned` (a stock folder, or one with modhifi's shape record). Written back by
  `save_hf_pruned`: a stock folder whenever the config describes the model.
* `torchvision:ARCH` / `timm:ARCH` + `weights`: a weights file (safetensors, or a state
  dict through `weights_only=True`) or a folder `save_zoo_model` wrote. Written back as
  `model.safetensors` + `rebuild.json` (`modhifi_core.sources.torchvision_zoo`) and
  `modhifi.json`.

`classifier(loaded)` is the module the engine calls (`model(images) -> logits`): the HF
model behind `LogitsOnly`, or the zoo network itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file
from modhifi_core.vision.hf import LogitsOnly, load_hf_pruned, save_hf_pruned

DEFAULT_IMAGE_SIZE = 224  # when neither the config nor the caller gives one


@dataclass
class ImageModel:
    """A loaded image classifier: `model` (the HF model, or the zoo network), `source`
    (`hf:DIR`, `torchvision:ARCH`, `timm:ARCH`), `weights` (file name -> sha256 of what
    was read), `build_kwargs` (zoo constructor arguments), `folder` (the HF folder),
    `image_size` (the input size a caller gives a zoo network, which records none; None: 224)."""

    model: nn.Module
    source: str
    weights: dict[str, str]
    build_kwargs: dict = field(default_factory=dict)
    folder: Path | None = None
    image_size: int | None = None

    @property
    def is_hf(self) -> bool:
        return self.source.startswith("hf:")


def is_image_source(source: str) -> bool:
    """Whether `source` names a torchvision/timm architecture (`hf:` folders are told
    apart by `model_kind`)."""
    return str(source).startswith(("torchvision:", "timm:"))


def load_image_model(source: str, weights: str | Path | None = None, num_classes: int | None = None) -> ImageModel:
    """The image classifier `source` names, in eval mode. `weights` and `num_classes`
    (the constructor's, default the architecture's) apply to torchvision/timm sources only."""
    source = str(source)
    if source.startswith("hf:"):
        if weights is not None or num_classes is not None:
            raise InputError("--weights and --num-classes are for torchvision:ARCH / timm:ARCH; hf:DIR holds both")
        return _load_hf(source)
    if is_image_source(source):
        return _load_zoo(source, weights, num_classes)
    raise InputError(f"an image model source is hf:DIR, torchvision:ARCH or timm:ARCH, got {source!r}")


def _load_hf(source: str) -> ImageModel:
    from modhifi_core.sources.huggingface import check_folder, model_kind, parse_hf_source, weights_digest

    folder = parse_hf_source(source)
    _, files, _ = check_folder(folder)
    kind = model_kind(folder)
    if kind != "image-classification":
        raise InputError(f"{folder} holds a {kind} model, not an image classifier")
    return ImageModel(load_hf_pruned(folder), source, weights_digest(files), folder=folder)


def _load_zoo(source: str, weights: str | Path | None, num_classes: int | None) -> ImageModel:
    from modhifi_core.sources import torchvision_zoo as zoo

    zoo.parse_source(source)
    if weights is None:
        raise InputError(f"{source} needs --weights FILE (safetensors or a state dict); nothing is downloaded")
    weights = Path(weights)
    if weights.is_dir():
        record = _zoo_record(weights, source)
        recorded = record.get("num_classes")
        if num_classes is not None and num_classes != recorded:
            raise InputError(
                f"--num-classes {num_classes}: the model in {weights} was built with "
                f"{'num_classes=' + str(recorded) if recorded is not None else 'the architecture default'} "
                "(its rebuild.json); leave --num-classes out for a folder modhifi wrote"
            )
        model = zoo.load_zoo_folder(weights)
        return ImageModel(model, source, {zoo.WEIGHTS_FILE: sha256_file(weights / zoo.WEIGHTS_FILE)}, record)
    build_kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = zoo.load_zoo_model(source, weights, **build_kwargs)
    return ImageModel(model, source, {weights.name: sha256_file(weights)}, build_kwargs)


def _zoo_record(folder: Path, source: str) -> dict:
    """The constructor arguments `rebuild.json` in `folder` records; refuses another source."""
    from modhifi_core.sources.torchvision_zoo import RECORD_FILE

    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError(f"--weights {folder} is a folder without a readable {RECORD_FILE}") from None
    if not isinstance(record, dict) or record.get("source") != source:
        recorded = record.get("source") if isinstance(record, dict) else None
        raise InputError(f"--weights {folder} holds a {recorded} model, not {source}")
    return dict(record.get("build_kwargs") or {})


def classifier(loaded: ImageModel | nn.Module) -> nn.Module:
    """`model(images) -> logits`, in eval mode: the HF model behind `LogitsOnly`."""
    model = loaded.model if isinstance(loaded, ImageModel) else loaded
    return (LogitsOnly(model) if hasattr(model, "config") else model).eval()


def input_shape(loaded: ImageModel, image_size: int | None = None) -> tuple[int, int, int]:
    """The model's input `(C, H, W)`: channels and size from the HF config (`image_size`,
    else `loaded.image_size`, overrides the size; a CNN config has none, then 224), 3
    channels for a zoo network."""
    config = getattr(loaded.model, "config", None)
    channels = int(getattr(config, "num_channels", 3) or 3)
    size = image_size or loaded.image_size or getattr(config, "image_size", None) or DEFAULT_IMAGE_SIZE
    if isinstance(size, (list, tuple)):
        return channels, int(size[0]), int(size[-1])
    return channels, int(size), int(size)


def save_image_model(model: nn.Module, loaded: ImageModel, folder: str | Path, lineage: dict) -> Path:
    """Write `model` (made from `loaded`) to `folder` in its source's format with
    `modhifi.json` = `lineage` + code version + weight hash. Returns the folder, written
    atomically (an existing one is replaced once the new one is complete)."""
    if loaded.is_hf:
        return save_hf_pruned(model, folder, source=loaded.folder, lineage=lineage)
    from modhifi_core.sources.torchvision_zoo import save_zoo_model

    return save_zoo_model(model, loaded.source, folder, build_kwargs=loaded.build_kwargs, lineage=lineage)
