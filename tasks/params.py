"""The schema of params.yaml: every knob of every stage, validated before anything runs.

One section per concern. A params.yaml holds `seed`, `model`, optionally `cluster` and
`schedule`, and exactly the sections its model's kind reads (`ModelKind.sections`, the kind
decided by `kinds.kind_of(model.source)`): a language model's file has no image-data,
zoo-architecture or training section. Unknown keys, a section or `model` key the kind does
not read, wrong types and out-of-range values are refused with one line naming the key
(`load_params`). Checks that need the model itself (its classes, its positions, whether a
library imports) are the kind's `check_run`, at run start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modhifi_core.errors import InputError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(Section):
    dataset: Literal["digits", "cifar10", "fashion-mnist"] = "digits"
    data_dir: str | None = None
    image_size: int = Field(8, ge=4, le=512)
    channels: int = Field(1, ge=1, le=3)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # a seeded stratified subset of the training split (a 60k-image dataset on a CPU budget); null: all
    train_per_class: int | None = Field(None, ge=1, le=1_000_000)


class ModelParams(Section):
    """Where the model comes from. Which keys apply is the kind's (`ModelKind.model_keys`):
    the zoo trains one (`name`, `width`) or starts from `path`; `source` names an
    open-weight model (hf:DIR, torchvision:ARCH / timm:ARCH with `weights`,
    python:PACKAGE.MODULE:FACTORY with `weights` and `input_shape`)."""

    path: str | None = None  # a trained zoo checkpoint to start from; null: train_base trains one
    source: str | None = None
    name: Literal["resnet18", "resnet50", "vgg11", "vgg19", "vit"] = "resnet18"
    width: int = Field(16, ge=1, le=1024)
    # torchvision/timm/python: a .safetensors file, a torch state dict (read weights_only) or a folder modhifi wrote
    weights: str | None = None
    num_classes: int | None = Field(None, ge=1, le=1_000_000)  # torchvision/timm: the constructor's
    image_size: int | None = Field(None, ge=4, le=4096)  # torchvision/timm: the input size; null: 224
    input_shape: list[int] | None = Field(None, min_length=3, max_length=3)  # python: C, H, W of one input


class TrainParams(Section):
    epochs: int = Field(30, ge=1, le=10_000)
    lr: float = Field(0.05, gt=0.0, le=10.0)
    batch_size: int = Field(64, ge=1, le=65_536)
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)


class SynthesizeParams(Section):
    """Calibration samples from the model itself (modhifi_core.synthesis); the inversion
    knobs default to `InversionConfig`'s values (a test keeps them equal)."""

    method: Literal["deepinversion", "gaussian", "folder"] = "deepinversion"
    per_class: int = Field(50, ge=1, le=100_000)
    source: str | None = None  # the sample folder of method "folder"
    steps: int = Field(100, ge=1, le=100_000)
    lr: float = Field(0.1, gt=0.0, le=10.0)
    batch_size: int = Field(500, ge=1, le=65_536)
    bn_weight: float = Field(0.05, ge=0.0, le=1e4)
    first_bn_weight: float = Field(10.0, ge=0.0, le=1e4)
    tv_weight: float = Field(1.0, ge=0.0, le=1e4)
    l2_weight: float = Field(0.01, ge=0.0, le=1e4)

    @model_validator(mode="after")
    def _folder_needs_source(self) -> SynthesizeParams:
        if self.method == "folder" and not self.source:
            raise ValueError("method 'folder' needs synthesize.source (a folder of .npz/.pt samples)")
        return self


class CollectParams(Section):
    """The calibration data ModHiFi scores on (the collect, score and prune stages)."""

    calibration: Literal["synthetic", "real", "gaussian"] = "synthetic"
    samples: int | None = Field(512, ge=1, le=10_000_000)  # a seeded subset; null: all there are
    batch_size: int = Field(128, ge=1, le=65_536)


class PruneParams(Section):
    """ModHiFi-P and its baselines (`modhifi_core.pruning.prune_model`)."""

    method: Literal["modhifi", "magnitude", "l1", "l2", "random"] = "modhifi"
    target_flops: float = Field(0.5, gt=0.0, lt=1.0)  # fraction of the dense FLOPs that remains
    # δ* (scalar, the paper) or least-squares refit (full); null: full for modhifi (measured best), none for baselines
    compensation: Literal["none", "scalar", "full"] | None = None
    score: Literal["saliency", "fidelity"] = "saliency"  # modhifi's selection score: R̃ (the paper's) or s_ci
    compensation_order: Literal["joint", "sequential"] = "joint"  # sequential: best at 8% FLOPs, ~4x slower
    allocation: Literal["uniform", "union"] = "uniform"  # how many channels each group keeps (modhifi)
    rounds: int | None = Field(None, ge=1, le=64)  # null: one round per halving of FLOPs
    ridge: float = Field(1e-4, ge=0.0, le=1.0)  # λ, scaled by the mean Gram diagonal
    round_to: int = Field(1, ge=1, le=256)
    latency_batch: int = Field(64, ge=1, le=65_536)  # batch of the CPU latency measurement
    latency_repeats: int = Field(100, ge=1, le=10_000)  # interleaved dense/pruned timings, median


class UnlearnParams(Section):
    """What to forget (a class, or a seeded random fraction of the training samples),
    with which method, seeing which data; optionally after unstructured pruning."""

    forget_class: int | None = Field(3, ge=0)
    forget_random: float | None = Field(None, gt=0.0, lt=1.0)
    method: Literal["modhifi", "retrain", "ft", "ga", "rl", "ff", "iu", "l1sparse"] = "modhifi"
    data: Literal["synthetic", "real"] = "synthetic"  # what the method sees; metrics use real data
    hyperparameters: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    prune: Literal["omp", "imp", "synflow"] | None = None  # prune-then-unlearn (Unlearn-Sparse)
    sparsity: float = Field(0.95, ge=0.0, lt=1.0)  # fraction of prunable weights zeroed by `prune`
    retrain_epochs: int | None = Field(None, ge=1, le=10_000)  # pruning's retraining; null: the recipe's

    @model_validator(mode="after")
    def _one_forget_set(self) -> UnlearnParams:
        if (self.forget_class is None) == (self.forget_random is None):
            raise ValueError(
                "give exactly one forget set: forget_class (--forget-class K) or forget_random (--forget-random F)"
            )
        if self.forget_random is not None and self.data == "synthetic":
            raise ValueError("random forgetting names real training samples: it needs data real (--forget-data real)")
        return self


class FinetuneParams(Section):
    """Distillation on synthetic samples (data-free) or cross-entropy on the real training set."""

    data: Literal["synthetic", "real"] = "synthetic"
    epochs: int = Field(3, ge=0, le=10_000)
    lr: float | None = Field(None, gt=0.0, le=10.0)  # null: 0.001 with frozen BatchNorm, else 0.01
    temperature: float = Field(4.0, gt=0.0, le=100.0)
    batch_size: int = Field(64, ge=1, le=65_536)
    # null: frozen for an unlearned model (recalibrating undoes the unlearning), else recalibrate
    batchnorm: Literal["recalibrate", "frozen"] | None = None
    per_class: int = Field(50, ge=1, le=100_000)  # samples synthesised per class when none are given


class EvaluateParams(Section):
    """The audit of an unlearned model: does the forgetting survive a relearning attack
    (`relearn_steps` SGD steps on retained data only)? BN recalibration is always audited."""

    relearn_steps: int = Field(50, ge=0, le=100_000)
    relearn_lr: float = Field(0.01, gt=0.0, le=10.0)


class ClusterParams(Section):
    """Where the collect, prune and unlearn stages compute activation statistics: null
    (this process), `local` (a Dask LocalCluster of `workers` processes, started and closed
    by the stage) or the `tcp://host:port` of a running Dask scheduler (docs/cluster.md)."""

    address: str | None = None
    workers: int = Field(2, ge=1, le=4096)


class LanguageParams(Section):
    """The run of a Hugging Face causal LM or text encoder (`model.source: hf:DIR`):
    calibration windows (`text:PATH`, or `self`: sampled from a causal LM with seeded
    `temperature`/`top_p`), FFN pruning as `prune_language_model` takes it, and on held-out
    `eval_text` perplexity (causal LM) or sentence-embedding agreement (encoder). What
    needs the model's config (its kind, its positions) is checked at run start
    (`tasks.inputs.check_model_fits`)."""

    calibration: str = "self"  # self (data-free: sampled from the model) or text:PATH (a file or folder)
    samples: int = Field(128, ge=1, le=1_000_000)  # calibration sequences N
    length: int = Field(256, ge=2, le=65_536)  # tokens per sequence L (calibration and evaluation)
    temperature: float = Field(1.0, gt=0.0, le=10.0)  # self-sampling
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    prompt: Literal["bos", "random"] = "bos"  # self-sampling: each sequence starts at BOS or a random token
    eval_text: str | None = None  # held-out text (a file or folder) to evaluate on; needed with model.source
    eval_samples: int = Field(16, ge=1, le=1_000_000)  # held-out windows (causal LM) or sentences (encoder)
    method: Literal["modhifi", "modhifi-energy", "wanda-sp", "flap", "magnitude", "random"] = "modhifi"
    target_params: float | None = Field(0.8, gt=0.0, lt=1.0)  # fraction of all parameters that remains
    ffn_fraction: float | None = Field(None, gt=0.0, lt=1.0)  # or: fraction of FFN neurons removed per layer
    batch_size: int = Field(4, ge=1, le=4096)  # sequences per forward
    latency_repeats: int = Field(3, ge=0, le=1000)  # interleaved dense/pruned forwards of one sequence

    @model_validator(mode="after")
    def _consistent(self) -> LanguageParams:
        if self.calibration != "self" and not self.calibration.startswith("text:"):
            raise ValueError(f"calibration must be self or text:PATH, got {self.calibration!r}")
        if (self.target_params is None) == (self.ffn_fraction is None):
            raise ValueError("give exactly one of target_params and ffn_fraction")
        return self


class ScheduleParams(Section):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


class Params(Section):
    """The whole params.yaml."""

    seed: int = Field(0, ge=0)
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    synthesize: SynthesizeParams = SynthesizeParams()
    collect: CollectParams = CollectParams()
    prune: PruneParams = PruneParams()
    unlearn: UnlearnParams = UnlearnParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    cluster: ClusterParams = ClusterParams()
    language: LanguageParams = LanguageParams()
    schedule: ScheduleParams = ScheduleParams()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem raises `InputError` with one line.

    Refused up front: an empty file, a missing top-level section (every section of
    `Params` must be written out, so what runs is what the file says), a key given twice
    at any level (plain YAML keeps the last one silently), and any invalid value. A
    params.yaml left rewritten by a killed `modhifi sweep` is first restored from the
    sweep's backup (see `restore_interrupted_sweep`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"params file not found: {path}")
    restore_interrupted_sweep(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or "")
        what = problem if problem.startswith("duplicated key") else f"not valid YAML ({problem or 'unreadable'})"
        raise InputError(f"{path}: {what}{where}") from None
    if raw is None:
        raise InputError(f"{path} is empty; it must hold seed, model and the sections of its model's kind")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    check_sections(raw, str(path), path.parent)
    return validate_params(raw, source=str(path), root=path.parent)


COMMON = ("seed", "model")  # every params.yaml holds these
OPTIONAL = ("cluster", "schedule")  # any kind may set these; defaults otherwise


def check_sections(raw: dict, source: str, root: Path) -> None:
    """Refuse a section or `model` key that the kind of `model.source` does not read, and
    a missing section it does (so what runs is what the file says), in one line."""
    from kinds import kind_of

    model = raw.get("model")
    if not isinstance(model, dict):
        raise InputError(f"{source}: missing section model (it names the model: source, or the zoo's name)")
    kind = kind_of(model.get("source"), root)
    wanted = (*COMMON, *kind.sections)
    for name in raw:
        if name not in wanted and name not in OPTIONAL:
            if name not in Params.model_fields:
                raise InputError(f"{source}: unknown section {name!r}")
            raise InputError(
                f"{source}: section {name!r} is not read by a {kind.name} model (its sections: {', '.join(wanted)})"
            )
    missing = [name for name in wanted if name not in raw]
    if missing:
        raise InputError(f"{source}: missing section(s) {', '.join(missing)} (a {kind.name} model reads them)")
    for key in model:
        if key not in kind.model_keys and key in ModelParams.model_fields:
            raise InputError(
                f"{source}: model.{key} is not read for a {kind.name} model "
                f"(its model keys: {', '.join(kind.model_keys)})"
            )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicated key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def sweep_backup_path(params_file: Path) -> Path:
    """Where `modhifi sweep` keeps the user's params.yaml while it runs a sweep point."""
    return params_file.with_name(f".{params_file.name}.sweep-backup.json")


def restore_interrupted_sweep(params_file: Path) -> bool:
    """Put back the user's params.yaml if a sweep was killed while a point's values were
    in it (its backup exists and the sweep's process is gone); returns whether it did.
    A live sweep's backup is left alone: its stages read the point's values on purpose."""
    import json
    import sys

    from modhifi_core.safe_io import atomic_write_text

    backup = sweep_backup_path(params_file)
    if not backup.is_file():
        return False
    try:
        record = json.loads(backup.read_text())
        pid, text = int(record["pid"]), str(record["params"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{backup}: unreadable sweep backup; check {params_file} by hand and delete it") from None
    if _process_alive(pid):
        return False
    atomic_write_text(params_file, text)
    backup.unlink()
    print(f"warning: restored {params_file} from the backup of an interrupted sweep (pid {pid})", file=sys.stderr)
    return True


def _process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed but not yet reaped, does not)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def validate_params(raw: dict, source: str = "params", root: Path | None = None) -> Params:
    """`raw` as `Params`; relative model and text paths are checked against `root`."""
    try:
        return Params.model_validate(raw, context={"root": str(root or Path("."))})
    except ValidationError as exc:
        raise InputError(f"{source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError, as_option: bool = False) -> str:
    """The first error as 'key.path: what was expected (got value)' (`as_option`: the key
    as the command-line option it came from, `--key-name`)."""
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if as_option and err["loc"]:
        key = "--" + str(err["loc"][-1]).replace("_", "-")
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if err["type"] == "value_error":  # a model validator's own sentence
        reason = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{key}: {reason}" if err["loc"] else reason
    got = err.get("input")
    return f"{key}: {err['msg'].lower()} (got {got!r})"
