"""Image classifiers: one base kind (`ImageClassifierKind`) whose pipeline stages
(`kinds/image/<stage>.py`, each `run(ws, params, kind)`) and commands (`kinds/image/cli.py`)
work for every image source through the adapter's methods only, and two adapters:

- `HFImageKind` (`image-classification`): a local Hugging Face image classifier
  (`hf:DIR`: ResNet, ConvNeXt, ViT, Swin, ...), written back as a Hugging Face folder
  (`modhifi_core.vision.hf.save_hf_pruned`: stock whenever the config describes it);
- `TorchvisionKind` (`torchvision`): `torchvision:ARCH` / `timm:ARCH` built from its
  library's constructor with `model.weights` (a file, or a folder modhifi wrote), written
  back as `model.safetensors` + `rebuild.json` (`modhifi_core.sources.torchvision_zoo`).

A third adapter, `kinds.python_module.PythonModuleKind`, subclasses the base.

The pipeline of an image kind: train_base (the source recorded, not trained) ->
synthesize (samples made from the model) -> prune (one call of `prune_image_classifier`
on the calibration images) -> unlearn -> evaluate -> report; collect, score and finetune
do not apply (`skipped`). A stage record (`outputs/*/model.pt`, a plain dict read with
`weights_only`, in `tasks.records`' source/folder shapes) is written and read by
`record_base`/`load_base` and `output_record`/`load_output` below: with the adapter's own
load options and the model's input shape, so any image adapter reopens the base and the
outputs the same way and no stage asks which adapter it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from kinds.base import CHANNEL_PRUNING_OPTIONS, KindDefaults, ModelKind, StageSpec
from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file

COLLECT_REASON = (
    "an image classifier is pruned by one call of prune_image_classifier, "
    "which collects its statistics and scores on the calibration images itself (prune stage)"
)
FINETUNE_REASON = (
    "distillation fine-tuning needs a modhifi checkpoint; an open-weight image classifier is not fine-tuned"
)
FORGET_A_CLASS = "unlearn.forget_random: an image classifier forgets a class; give unlearn.forget_class"
CLUSTER_REFUSED = "cluster.address: an image classifier's prune collects its statistics in-process"
DEFAULT_IMAGE_SIZE = 224  # when neither the config nor the caller gives one
FOLDERS = {"pruned": "pruned_hf", "unlearned": "unlearned_hf"}  # model -> its workspace folder artifact
DATA_KEYS = ("data.dataset", "data.data_dir", "data.test_fraction", "data.train_per_class")


@dataclass
class LoadedImage:
    """A loaded image classifier: `model` (in eval mode), `weights` (file name -> sha256 of
    what was read), `input_shape` (C, H, W of one input) and `rebuild` (what the adapter
    needs to write it back in its source's format: the adapter's own business) and
    `components`, what `prune_image_classifier` prunes in it: `channels` or, for an HF
    ViT/DeiT/Swin, `mlp` (neurons)."""

    model: nn.Module
    weights: dict[str, str]
    input_shape: tuple[int, int, int]
    rebuild: dict = field(default_factory=dict)
    components: str = "channels"


def _square(size: int | None) -> tuple[int, int, int]:
    size = int(size or DEFAULT_IMAGE_SIZE)
    return 3, size, size


class ImageClassifierKind(ModelKind):
    """What every image-classifier kind shares: its pipeline, defaults, targets, stages and
    commands, and the stage records. A subclass implements `load`, `open`, `save`,
    `model_options`, `inputs`, and the checks it needs (`check`, `check_run`)."""

    sections: ClassVar[tuple[str, ...]] = (
        "data",
        "synthesize",
        "collect",
        "prune",
        "unlearn",
        "evaluate",
        "compute",
    )
    skipped: ClassVar[dict[str, str]] = {
        "collect": COLLECT_REASON,
        "score": COLLECT_REASON,
        "finetune": FINETUNE_REASON,
    }
    defaults: ClassVar[KindDefaults] = KindDefaults(
        calibration_samples=512, batch_size=32, latency_repeats=3, target="flops", target_value=0.5
    )
    targets: ClassVar[tuple[str, ...]] = ("flops", "params")
    package: ClassVar[str] = "kinds.image"
    output: ClassVar[str] = "folder"
    stages: ClassVar[dict[str, StageSpec]] = {
        "train_base": StageSpec(
            reads=("model_source",),
            params=("model",),
            writes=("base_model",),
            metrics=("base_metrics",),
        ),
        "synthesize": StageSpec(reads=("base_model",), params=("seed", "synthesize"), writes=("synthetic",)),
        "prune": StageSpec(
            reads=("base_model", "synthetic"),
            params=("seed", "collect", "prune", *DATA_KEYS),
            writes=("pruned_model", "pruned_hf"),
            metrics=("pruned_metrics",),
            plots=("pruned_layers",),
        ),
        "unlearn": StageSpec(
            reads=("pruned_model", "pruned_hf", "synthetic"),
            params=("seed", "unlearn", *DATA_KEYS),
            writes=("unlearned_model", "unlearned_hf"),
            metrics=("unlearned_metrics",),
        ),
        "evaluate": StageSpec(
            reads=("base_model", "pruned_model", "pruned_hf", "pruned_metrics", "unlearned_model", "unlearned_hf"),
            params=("seed", "evaluate", *DATA_KEYS),
            metrics=("evaluation",),
            plots=("per_class",),
        ),
        "report": StageSpec(
            reads=(
                "synthetic",
                "pruned_metrics",
                "pruned_layers",
                "unlearned_metrics",
                "evaluation",
                "per_class",
            ),
            params=("model.source", "prune.target_flops"),
            writes=("report",),
        ),
    }
    # typer parameter names each command takes for an image classifier (the source's own
    # options, e.g. `weights`, are added by the adapter)
    PRUNE: ClassVar[tuple[str, ...]] = (*CHANNEL_PRUNING_OPTIONS, "target_params", "data", "data_dir")
    EVALUATE: ClassVar[tuple[str, ...]] = ("data", "data_dir", "forget_class")
    UNLEARN: ClassVar[tuple[str, ...]] = (
        "forget_class",
        "method",
        "hyperparameter",
        "forget_data",
        "seed",
        "data",
        "data_dir",
    )
    source_options: ClassVar[tuple[str, ...]] = ("image_size",)  # the CLI options `load` takes

    @classmethod
    def command_options(cls) -> dict[str, tuple[str, ...]]:
        return {
            "prune": cls.PRUNE + cls.source_options,
            "evaluate": cls.EVALUATE + cls.source_options,
            "unlearn": cls.UNLEARN + cls.source_options,
        }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.options = cls.command_options()

    # ------------------------------------------------------------------ the model
    def load(self, *, device: str = "cpu", **options: Any) -> LoadedImage:
        """The source's classifier (in eval mode on `device`) with its input shape."""
        raise NotImplementedError

    def open(self, folder: Path, input_shape: tuple[int, int, int]) -> LoadedImage:
        """The model in `folder`, which `save` of this adapter wrote (input `input_shape`)."""
        loaded = self.load(weights=folder)
        loaded.input_shape = tuple(input_shape)
        return loaded

    def model_options(self, params: Any, root: Path) -> dict:
        """The `load` options `params.model` gives (paths resolved against `root`)."""
        return {}

    def classifier(self, loaded: LoadedImage) -> nn.Module:
        """`model(images) -> logits`, in eval mode: what the engine calls."""
        from modhifi_core.vision.hf import classifier

        return classifier(loaded.model)

    def describe(self, path: str | Path) -> dict:
        return {"kind": self.name, "source": self.source, "path": str(path)}

    # ------------------------------------------------------------------ checks and inputs
    def check_forget(self, forget_class: int | None, forget_random: float | None = None) -> None:
        """An image classifier forgets one class (`unlearn.forget_class`), not a random fraction."""
        if forget_class is None or forget_random is not None:
            raise InputError(FORGET_A_CLASS)

    def check_run(self, params: Any, root: Path) -> None:
        """What a pipeline run of an image classifier refuses before any stage: a cluster
        address (the prune collects in-process), a forget set other than one class."""
        self.root = root
        if params.cluster.address is not None:
            raise InputError(CLUSTER_REFUSED)
        self.check_forget(params.unlearn.forget_class, params.unlearn.forget_random)

    def inputs(self, params: Any, root: Path) -> dict[str, Path | None]:
        weights = params.model.weights
        return {"model_source": root / Path(weights).expanduser() if weights else None}

    def source_files(self, path: Path) -> list[Path]:
        """A weights file, or the weights and rebuild record of a folder modhifi wrote."""
        from modhifi_core.sources.torchvision_zoo import RECORD_FILE, WEIGHTS_FILE

        return [path] if path.is_file() else [path / WEIGHTS_FILE, path / RECORD_FILE]

    # ------------------------------------------------------------------ stage records
    def record_base(self, ws: Any, params: Any) -> tuple[dict, LoadedImage]:
        """train_base: the model loaded once from the source (weights that do not fit are
        refused here, not three stages later) and recorded (`tasks.records.record_source`:
        its files' sha256, plus the adapter's load options and the input shape)."""
        from tasks.records import record_source

        self.root = ws.root
        options = self.model_options(params, ws.root)
        self.check(**options)
        loaded = self.load(**options)
        extra = {"options": _plain(options), "input_shape": list(loaded.input_shape), **self.record_extra(ws, params)}
        return record_source(ws, params, self, **extra), loaded

    def record_extra(self, ws: Any, params: Any) -> dict:
        """What else a kind's base record holds (nothing here)."""
        return {}

    def load_base(self, ws: Any) -> LoadedImage:
        """The model train_base recorded, refused when its weights no longer hash as recorded."""
        from tasks.records import read_record, source_file

        self.root = ws.root
        record = read_record(ws.artifact("base_model"))
        loaded = self.load(**record["options"])
        loaded.input_shape = tuple(record["input_shape"])
        for name, sha in loaded.weights.items():
            if record["files"].get(name) != sha:
                raise InputError(
                    f"{source_file(record, name)} changed since train_base recorded it; run `modhifi run` again"
                )
        return loaded

    def output_record(self, ws: Any, model: str, parent: str, loaded: LoadedImage, extra: dict | None = None) -> dict:
        """What `model.pt` holds for the `pruned`/`unlearned` folder written from `loaded`:
        where it is, its parent's sha256, the input shape."""
        from tasks.records import FOLDER

        relative = ws.artifact(FOLDERS[model]).relative_to(ws.root).as_posix()
        record = {
            "record": FOLDER,
            "kind": self.name,
            "folder": relative,
            "input_shape": list(loaded.input_shape),
            "metadata": {"parents": {"model": parent}},
        }
        return record | (extra or {})

    def load_output(self, ws: Any, model: str) -> LoadedImage:
        """The `pruned` or `unlearned` folder a stage of this run wrote."""
        from tasks.records import read_record

        self.root = ws.root
        record = read_record(ws.artifact(f"{model}_model"))
        return self.open(ws.artifact(FOLDERS[model]), tuple(record["input_shape"]))


def _plain(options: dict) -> dict:
    """Load options as a record holds them (paths as strings, shapes as lists)."""
    return {
        k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
        for k, v in options.items()
        if v is not None
    }


# ---------------------------------------------------------------------------- Hugging Face


class HFImageKind(ImageClassifierKind):
    """`hf:DIR`: a local Hugging Face image classifier (ResNet, ConvNeXt, ViT, Swin, ...)."""

    name: ClassVar[str] = "image-classification"
    model_keys: ClassVar[tuple[str, ...]] = ("source",)

    def folder(self, root: Path | None = None) -> Path:
        from kinds import hf_folder

        return hf_folder(self.source, root)

    def model_section(self) -> dict:
        return {"source": f"hf:{self.folder().resolve()}"}

    def check(self, *, folder: str | Path | None = None, **options: Any) -> None:
        from modhifi_core.sources.huggingface import check_folder, model_kind

        path = Path(folder) if folder is not None else self.folder(self.root)
        check_folder(path)
        kind = model_kind(path)
        if kind != self.name:
            raise InputError(f"{path} holds a {kind} model, not an image classifier")

    def load(
        self, *, device: str = "cpu", folder: str | Path | None = None, image_size: int | None = None
    ) -> LoadedImage:
        """The classifier in the source folder (or `folder`: one `save` wrote); its input
        from the config (`image_size` overrides the size; a CNN config has none: 224)."""
        from modhifi_core.sources.huggingface import check_folder, weights_digest
        from modhifi_core.vision.hf import LAYERNORM_TRANSFORMERS, load_hf_pruned

        path = Path(folder) if folder is not None else self.folder(self.root)
        self.check(folder=path)
        _, files, _ = check_folder(path)
        model = load_hf_pruned(path).to(device)
        config = model.config
        channels = int(getattr(config, "num_channels", 3) or 3)
        size = image_size or getattr(config, "image_size", None) or DEFAULT_IMAGE_SIZE
        height, width = (size[0], size[-1]) if isinstance(size, (list, tuple)) else (size, size)
        shape = (channels, int(height), int(width))
        if image_size is not None:
            _check_input_size(model, shape, path, device)
        components = "mlp" if config.model_type in LAYERNORM_TRANSFORMERS else "channels"
        return LoadedImage(model, weights_digest(files), shape, {"folder": path}, components)

    def open(self, folder: Path, input_shape: tuple[int, int, int]) -> LoadedImage:
        loaded = self.load(folder=folder)
        loaded.input_shape = tuple(input_shape)
        return loaded

    def save(self, loaded: LoadedImage, model: nn.Module, out: str | Path, lineage: dict) -> Path:
        from modhifi_core.vision.hf import save_hf_pruned

        return save_hf_pruned(model, out, source=loaded.rebuild["folder"], lineage=lineage)

    def classifier(self, loaded: LoadedImage) -> nn.Module:
        from modhifi_core.vision.hf import LogitsOnly

        return LogitsOnly(loaded.model).eval()

    def model_options(self, params: Any, root: Path) -> dict:
        return {"folder": self.folder(root)}

    def inputs(self, params: Any, root: Path) -> dict[str, Path | None]:
        return {"model_source": self.folder(root)}

    def source_files(self, path: Path) -> list[Path]:
        """The folder's config, weight, preprocessor and tokenizer files."""
        from modhifi_core.sources.huggingface import TOKENIZER_FILES, check_folder

        _, weights, _ = check_folder(path)
        extra = [path / name for name in ("config.json", *TOKENIZER_FILES) if (path / name).is_file()]
        return sorted({*weights, *extra})

    def check_run(self, params: Any, root: Path) -> None:
        """Also: a forget class the classifier does not have (its config's `id2label`), a
        shape record (`modhifi_shapes.json` of a pruned folder) that would not load."""
        from modhifi_core.vision.hf import check_shape_record

        super().check_run(params, root)
        folder = self.folder(root)
        self.check(folder=folder)
        check_shape_record(folder)
        config = json.loads((folder / "config.json").read_text())
        classes = len(config.get("id2label") or {}) or int(config.get("num_labels") or 0)
        forget = params.unlearn.forget_class
        if classes and forget >= classes:
            raise InputError(
                f"unlearn.forget_class: {forget} is not a class of {folder} (it has {classes}: 0-{classes - 1})"
            )


# ---------------------------------------------------------------------------- torchvision / timm


def _check_input_size(model: nn.Module, shape: tuple[int, int, int], path: Path, device: str) -> None:
    """`InputError` unless `model` takes one input of `shape` (a ViT's position embeddings
    fix its image size; a CNN takes sizes down to its total stride), tried on zeros."""
    import torch

    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        size = f"{shape[1]}x{shape[2]}"
        raise InputError(f"--image-size {shape[1]}: {path} does not take {size} images ({first})") from None


class TorchvisionKind(ImageClassifierKind):
    """`torchvision:ARCH` / `timm:ARCH` + weights (a `.safetensors` file, a state dict read
    with `weights_only`, or a folder modhifi wrote); nothing is downloaded."""

    name: ClassVar[str] = "torchvision"
    source_options: ClassVar[tuple[str, ...]] = ("weights", "num_classes", "image_size")
    model_keys: ClassVar[tuple[str, ...]] = ("source", *source_options)

    def check(self, *, weights: str | Path | None = None, **options: Any) -> None:
        """The library imports and has the architecture; weights are given and exist."""
        from modhifi_core.sources.torchvision_zoo import check_source, parse_source

        parse_source(str(self.source))
        if weights is None:
            raise InputError(f"{self.source} needs --weights FILE (safetensors or a state dict); nothing is downloaded")
        if not Path(weights).exists():
            raise InputError(f"weights {weights} does not exist")
        check_source(str(self.source))

    def load(
        self,
        *,
        device: str = "cpu",
        weights: str | Path | None = None,
        num_classes: int | None = None,
        image_size: int | None = None,
    ) -> LoadedImage:
        """The network built with `num_classes` (default: the architecture's) and `weights`
        loaded strictly; a folder `save` wrote is rebuilt from its `rebuild.json`."""
        from modhifi_core.sources import torchvision_zoo as zoo

        source = str(self.source)
        zoo.parse_source(source)
        if weights is None:
            raise InputError(f"{source} needs --weights FILE (safetensors or a state dict); nothing is downloaded")
        weights = Path(weights)
        if weights.is_dir():
            build_kwargs = self._folder_record(weights)
            recorded = build_kwargs.get("num_classes")
            if num_classes is not None and num_classes != recorded:
                raise InputError(
                    f"--num-classes {num_classes}: the model in {weights} was built with "
                    f"{'num_classes=' + str(recorded) if recorded is not None else 'the architecture default'} "
                    "(its rebuild.json); leave --num-classes out for a folder modhifi wrote"
                )
            model = zoo.load_zoo_folder(weights)
            digest = {zoo.WEIGHTS_FILE: sha256_file(weights / zoo.WEIGHTS_FILE)}
        else:
            build_kwargs = {} if num_classes is None else {"num_classes": num_classes}
            model = zoo.load_zoo_model(source, weights, **build_kwargs)
            digest = {weights.name: sha256_file(weights)}
        return LoadedImage(model.to(device).eval(), digest, _square(image_size), {"build_kwargs": build_kwargs})

    def _folder_record(self, folder: Path) -> dict:
        """The constructor arguments `rebuild.json` in `folder` records; refuses another source."""
        from modhifi_core.sources.torchvision_zoo import RECORD_FILE

        try:
            record = json.loads((folder / RECORD_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            raise InputError(f"--weights {folder} is a folder without a readable {RECORD_FILE}") from None
        if not isinstance(record, dict) or record.get("source") != self.source:
            recorded = record.get("source") if isinstance(record, dict) else None
            raise InputError(f"--weights {folder} holds a {recorded} model, not {self.source}")
        return dict(record.get("build_kwargs") or {})

    def open(self, folder: Path, input_shape: tuple[int, int, int]) -> LoadedImage:
        loaded = self.load(weights=folder)
        loaded.input_shape = tuple(input_shape)
        return loaded

    def save(self, loaded: LoadedImage, model: nn.Module, out: str | Path, lineage: dict) -> Path:
        from modhifi_core.sources.torchvision_zoo import save_zoo_model

        build_kwargs = loaded.rebuild["build_kwargs"]
        return save_zoo_model(model, str(self.source), out, build_kwargs=build_kwargs, lineage=lineage)

    def model_options(self, params: Any, root: Path) -> dict:
        m = params.model
        return {
            "weights": self.inputs(params, root)["model_source"],
            "num_classes": m.num_classes,
            "image_size": m.image_size,
        }

    def check_run(self, params: Any, root: Path) -> None:
        """Also: weights given and existing, the library importing here, the architecture in it."""
        super().check_run(params, root)
        self.check(weights=self.inputs(params, root)["model_source"])
