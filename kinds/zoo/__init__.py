"""The zoo kind: modhifi's own checkpoints (`model.source: null`; `model.path: FILE.pt` or
none, then `train_base` trains one; on the CLI `--model FILE.pt`).

A zoo checkpoint is one `.pt` file (config + weights + metadata, `modhifi_core.checkpoint`)
that every stage of the pipeline applies to: it is trained here, synthesised from,
pruned, unlearned, fine-tuned and evaluated on the real data its metadata names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from kinds.base import CHANNEL_PRUNING_OPTIONS, KindDefaults, ModelKind, StageSpec
from modhifi_core.errors import InputError


class ZooKind(ModelKind):
    name: ClassVar[str] = "zoo"
    sections: ClassVar[tuple[str, ...]] = (
        "data",
        "train",
        "synthesize",
        "collect",
        "prune",
        "unlearn",
        "finetune",
        "evaluate",
        "compute",
    )
    skipped: ClassVar[dict[str, str]] = {}
    defaults: ClassVar[KindDefaults] = KindDefaults(
        calibration_samples=512, batch_size=128, latency_repeats=100, target="flops", target_value=0.5
    )
    targets: ClassVar[tuple[str, ...]] = ("flops",)
    package: ClassVar[str] = "kinds.zoo"
    output: ClassVar[str] = "file"
    model_keys: ClassVar[tuple[str, ...]] = ("source", "path", "name", "width")  # source: null
    stages: ClassVar[dict[str, StageSpec]] = {
        "train_base": StageSpec(
            params=("seed", "data", "model.path", "model.name", "model.width", "train"),
            writes=("base_model",),
            metrics=("base_metrics",),
        ),
        "synthesize": StageSpec(reads=("base_model",), params=("seed", "synthesize"), writes=("synthetic",)),
        "collect": StageSpec(
            reads=("base_model", "synthetic"), params=("seed", "collect", "cluster"), writes=("statistics",)
        ),
        "score": StageSpec(
            reads=("base_model", "statistics"), params=("prune.score",), writes=("scores",), plots=("scores_csv",)
        ),
        "prune": StageSpec(
            reads=("base_model", "synthetic", "statistics", "scores"),
            params=("seed", "collect", "prune", "cluster"),
            writes=("pruned_model",),
            metrics=("pruned_metrics",),
            plots=("pruned_layers",),
        ),
        "unlearn": StageSpec(
            reads=("pruned_model", "synthetic"),
            params=("seed", "unlearn", "cluster"),
            writes=("unlearned_model",),
            metrics=("unlearned_metrics",),
        ),
        "finetune": StageSpec(
            reads=("base_model", "unlearned_model", "synthetic"),
            params=("seed", "finetune"),
            writes=("final_model",),
            metrics=("final_metrics",),
        ),
        "evaluate": StageSpec(
            reads=("base_model", "pruned_model", "pruned_metrics", "unlearned_model", "final_model"),
            params=("seed", "evaluate"),
            metrics=("evaluation",),
            plots=("per_class",),
        ),
        "report": StageSpec(
            reads=(
                "evaluation",
                "per_class",
                "pruned_metrics",
                "pruned_layers",
                "unlearned_metrics",
                "scores",
                "synthetic",
            ),
            params=("prune.target_flops", "unlearn.method", "unlearn.data", "finetune.epochs"),
            writes=("report",),
        ),
    }
    # CLI command -> the options (typer parameter names) a zoo checkpoint takes
    options: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": (
            "dataset",
            "data_dir",
            "architecture",  # --model: resnet18, resnet50, vgg11, vgg19 or vit
            "width",
            "image_size",
            "train_per_class",
            "epochs",
            "lr",
            "batch_size",
            "seed",
        ),
        "prune": CHANNEL_PRUNING_OPTIONS,
        "evaluate": ("dataset", "data_dir", "forget_class"),
        "unlearn": (
            "forget_class",
            "forget_random",
            "method",
            "prune",
            "sparsity",
            "retrain_epochs",
            "hyperparameter",
            "forget_data",
            "seed",
            "data_dir",
        ),
        "synthesize": ("per_class", "method", "source", "classes", "steps", "lr", "batch_size", "reference", "seed"),
        "finetune": (
            "teacher",
            "data",
            "epochs",
            "forget_class",
            "lr",
            "batchnorm",
            "temperature",
            "batch_size",
            "per_class",
            "seed",
            "data_dir",
        ),
    }

    # ------------------------------------------------------------------ the model
    def check(self, **options: Any) -> None:
        """A `--model FILE.pt` that is not a file is refused in one line."""
        if self.source is not None:
            from modhifi_core.checkpoint import check_checkpoint_file

            check_checkpoint_file(Path(self.source))

    def load(self, path: str | Path | None = None, *, device: str = "cpu", **options: Any) -> Any:
        """The checkpoint at `path` (default: this kind's source), loaded safely
        (`modhifi_core.checkpoint.load_checkpoint`: weights_only, digest verified)."""
        from modhifi_core.checkpoint import load_checkpoint

        path = path if path is not None else self.source
        if path is None:
            raise InputError("no checkpoint given: --model FILE.pt (or model.path in params.yaml)")
        return load_checkpoint(path, device)

    def save(self, loaded: Any, model: Any, out: str | Path, lineage: dict, extra: dict | None = None) -> Path:
        """Write `model` as a checkpoint at `out` (atomically): `loaded` is what it was
        made from (a `Checkpoint`, or anything with the dense `config`; changed layer
        shapes are recorded), `lineage` its metadata (`ModelMetadata.to_dict()`), `extra`
        tensors saved beside the weights (a sparse model's masks)."""
        from modhifi_core.checkpoint import save_checkpoint

        save_checkpoint(out, model, loaded.config, lineage, extra or None)
        return Path(out)

    def model_section(self) -> dict:
        """A checkpoint is `model.path` (absolute); no source: the zoo model trained on digits."""
        return {"source": None} if self.source is None else {"path": str(Path(self.source).resolve()), "source": None}

    def describe(self, path: str | Path) -> dict:
        """The architecture, classes, input, the operation that made it and its sha256."""
        from modhifi_core.metadata import read_metadata

        ckpt = self.load(path)
        config = ckpt.config
        return {
            "kind": self.name,
            "path": str(path),
            "sha256": ckpt.sha256,
            "architecture": config.name,
            "num_classes": config.num_classes,
            "input_shape": [config.in_channels, config.image_size, config.image_size],
            "operation": read_metadata(ckpt.metadata).operation,
        }

    # ------------------------------------------------------------------ runs
    def inputs(self, params: Any, root: Path) -> dict[str, Path | None]:
        """A zoo run reads no external input: the checkpoint of `model.path` is copied in
        (and hashed) by `train_base`."""
        return {}

    def source_files(self, path: Path) -> list[Path]:
        """A zoo checkpoint is one file."""
        return [Path(path)]

    def check_run(self, params: Any, root: Path) -> None:
        """`model.path`, when given, must be a file (relative to the workspace `root`)."""
        path = params.model.path
        if path is not None and not (Path(root) / Path(path).expanduser()).is_file():
            raise InputError(f"model.path: checkpoint not found: {path}")
