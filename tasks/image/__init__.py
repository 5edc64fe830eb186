"""The pipeline's stages on a Hugging Face image classifier (`model.source: hf:DIR` whose
config is an image classifier by `modhifi_core.sources.model_kind`: ResNet, ConvNeXt, ViT,
Swin, ...). dvc.yaml's paths are the zoo's; what each holds here:

- train_base: `outputs/base/model.pt` records the source folder, its kind and its files'
  sha256 (`tasks.lm.base.run`, the same record as a language model's; not trained);
- synthesize: the zoo's sample artifact, made from the model (`modhifi_core.synthesis`:
  DeepInversion matches a BatchNorm network's statistics; a LayerNorm ViT/Swin has none, so
  class cross-entropy and image priors only, as `modhifi prune --model hf:DIR` does);
- collect, score: skipped (`COLLECT_REASON`): `prune_image_classifier` collects and scores
  on the calibration images itself;
- prune: one call of `prune_image_classifier` on `collect.calibration` images;
  `outputs/pruned/hf/` in the source's format with `modhifi.json` (`model.pt` records it);
- unlearn: `unlearn_image_classifier` forgets `unlearn.forget_class` from the pruned model,
  data-free on the synthesize stage's samples by default; `outputs/unlearned/hf/`;
- finetune: skipped (`FINETUNE_REASON`);
- evaluate: test and per-class accuracy of the base, pruned and unlearned models on
  `data.dataset` resized to the model's input, the unlearned model's UA/RA/TA/MIA.
"""

from __future__ import annotations

from pathlib import Path

from modhifi_core.data import DatasetSplits, load_dataset
from modhifi_core.errors import InputError
from modhifi_core.params import Params
from modhifi_core.vision.sources import ImageModel, input_shape, load_image_model
from tasks.inputs import input_path
from tasks.lm import read_record
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


def is_image(ws: Workspace, params: Params) -> bool:
    """Whether `model.source` names a Hugging Face image classifier."""
    from modhifi_core.sources import model_kind

    folder = input_path(ws, params, "model_source")
    return folder is not None and model_kind(folder) == KIND


def load_base(ws: Workspace) -> ImageModel:
    """The source model train_base recorded, refused when its weights no longer hash as recorded."""
    record = read_record(ws.artifact("base_model"))
    loaded = load_image_model(f"hf:{record['path']}")
    for name, sha in loaded.weights.items():
        if record["files"].get(name) != sha:
            raise InputError(f"{record['path']}/{name} changed since train_base recorded it; run `modhifi run` again")
    return loaded


def load_output(ws: Workspace, model: str) -> ImageModel:
    """The `pruned` or `unlearned` folder a stage of this run wrote."""
    return load_image_model(f"hf:{ws.artifact(FOLDERS[model])}")


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


def folder_record(ws: Workspace, model: str, parent: str, extra: dict | None = None) -> dict:
    """What `model.pt` holds for a model written as a folder: where it is, its parent's sha256."""
    relative = ws.artifact(FOLDERS[model]).relative_to(ws.root).as_posix()
    return {"record": "hf-folder", "folder": relative, "metadata": {"parents": {"model": parent}}, **(extra or {})}
