"""The pipeline's stages on an open-weight image classifier: a Hugging Face folder
(`model.source: hf:DIR` whose config is an image classifier by
`modhifi_core.sources.model_kind`: ResNet, ConvNeXt, ViT, Swin, ...) or a torchvision/timm
network (`model.source: torchvision:ARCH` / `timm:ARCH` with `model.weights`). dvc.yaml's
paths are the zoo's; what each holds here:

- train_base: `outputs/base/model.pt` records the source (an HF folder: its kind and its
  files' sha256, `tasks.records.record_hf_source`, the same record as a language model's; a
  torchvision/timm network: the architecture, the weights' sha256, the constructor
  arguments and the input size, `tasks.image.base.run`); nothing is trained;
- synthesize: the zoo's sample artifact, made from the model (`modhifi_core.synthesis`:
  DeepInversion matches a BatchNorm network's statistics; a LayerNorm ViT/Swin has none, so
  class cross-entropy and image priors only, as `modhifi prune --model hf:DIR` does);
- collect, score: skipped (`COLLECT_REASON`): `prune_image_classifier` collects and scores
  on the calibration images itself;
- prune: one call of `prune_image_classifier` on `collect.calibration` images;
  `outputs/pruned/hf/` in the source's format (`save_image_model`: a Hugging Face folder, or
  a torchvision/timm network's `model.safetensors` + `rebuild.json`) with `modhifi.json`
  (`model.pt` records it);
- unlearn: `unlearn_image_classifier` forgets `unlearn.forget_class` from the pruned model,
  data-free on the synthesize stage's samples by default; `outputs/unlearned/hf/`, the same way;
- finetune: skipped (`FINETUNE_REASON`);
- evaluate: test and per-class accuracy of the base, pruned and unlearned models on
  `data.dataset` resized to the model's input, the unlearned model's UA/RA/TA/MIA.
"""

from __future__ import annotations

from pathlib import Path

from modhifi_core.data import DatasetSplits, load_dataset
from modhifi_core.errors import InputError
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json
from modhifi_core.vision.sources import ImageModel, input_shape, load_image_model
from tasks.inputs import input_path, is_zoo_source
from tasks.params import Params
from tasks.records import read_record
from tasks.workspace import Workspace

KIND = "image-classification"
COLLECT_REASON = (
    "an image classifier is pruned by one call of prune_image_classifier, "
    "which collects its statistics and scores on the calibration images itself (prune stage)"
)
FINETUNE_REASON = (
    "distillation fine-tuning needs a modhifi checkpoint; an open-weight image classifier is not fine-tuned"
)
FOLDERS = {"pruned": "pruned_hf", "unlearned": "unlearned_hf"}  # model -> its workspace folder artifact
ZOO_SOURCE, ZOO_FOLDER = "zoo-source", "zoo-folder"  # the record kinds of a torchvision/timm network


def is_image(ws: Workspace, params: Params) -> bool:
    """Whether `model.source` names an image classifier: a torchvision/timm architecture,
    or a Hugging Face folder of that kind."""
    from modhifi_core.sources import model_kind

    if is_zoo_source(params.model.source):
        return True
    folder = input_path(ws, params, "model_source")
    return folder is not None and model_kind(folder) == KIND


def skipped(ws: Workspace, model: str, metrics: str | None, reason: str) -> dict:
    """A stage that does not apply: a record in place of its model (with `reason`) and
    `skipped` metrics (when it has a metrics file)."""
    atomic_torch_save(ws.artifact(model), {"record": "skipped", "reason": reason})
    if metrics is not None:
        atomic_write_json(ws.artifact(metrics), {"skipped": reason})
    return {"skipped": reason}


def load_base(ws: Workspace) -> ImageModel:
    """The source model train_base recorded (an HF folder, or a torchvision/timm network
    with its recorded input size), refused when its weights no longer hash as recorded."""
    record = read_record(ws.artifact("base_model"))
    if record["record"] == ZOO_SOURCE:
        loaded = load_image_model(record["source"], record["path"], record["num_classes"])
        loaded.image_size = record["image_size"]
    else:
        loaded = load_image_model(f"hf:{record['path']}")
    for name, sha in loaded.weights.items():
        if record["files"].get(name) != sha:
            raise InputError(
                f"{source_file(record, name)} changed since train_base recorded it; run `modhifi run` again"
            )
    return loaded


def source_file(record: dict, name: str) -> Path:
    """Where file `name` of train_base's source record lies: in the source folder, or the
    weights file itself."""
    path = Path(record["path"])
    return path if path.name == name and not path.is_dir() else path / name


def load_output(ws: Workspace, model: str) -> ImageModel:
    """The `pruned` or `unlearned` folder a stage of this run wrote (its record says the
    source format, and a torchvision/timm network's input size)."""
    folder = ws.artifact(FOLDERS[model])
    record = read_record(ws.artifact(f"{model}_model"))
    if record["record"] != ZOO_FOLDER:
        return load_image_model(f"hf:{folder}")
    loaded = load_image_model(record["source"], folder)
    loaded.image_size = record["image_size"]
    return loaded


def evaluation_data(params: Params, loaded: ImageModel) -> DatasetSplits:
    """`data.dataset` (from `data.data_dir` where it needs one) resized to the model's input."""
    d = params.data
    channels, height, width = input_shape(loaded)
    if height != width:
        raise InputError(f"the model takes {height}x{width} images; data.dataset is resized to square images only")
    data_dir = Path(d.data_dir) if d.data_dir else None
    return load_dataset(
        d.dataset,
        image_size=height,
        channels=channels,
        test_fraction=d.test_fraction,
        data_dir=data_dir,
        train_per_class=d.train_per_class,
    )


def folder_record(ws: Workspace, model: str, parent: str, loaded: ImageModel, extra: dict | None = None) -> dict:
    """What `model.pt` holds for a model written as a folder from `loaded`'s source: where it
    is, its parent's sha256; for a torchvision/timm network also the source and input size."""
    relative = ws.artifact(FOLDERS[model]).relative_to(ws.root).as_posix()
    record = {"record": "hf-folder", "folder": relative, "metadata": {"parents": {"model": parent}}}
    if is_zoo_source(loaded.source):
        record |= {"record": ZOO_FOLDER, "source": loaded.source, "image_size": loaded.image_size}
    return record | (extra or {})
