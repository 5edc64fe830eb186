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

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from modhifi_core.checks import check_forget_set, check_fraction, check_one_target
from modhifi_core.errors import InputError


def default(source: Any, name: str) -> Any:
    """The default of `name` where it is written once: `source` (an object, or `"module:attr"`
    naming one) is a function or a dataclass (the default of its parameter `name`,
    `inspect.signature`) or an object such as a kind's `defaults` (its attribute `name`)."""
    if isinstance(source, str):
        module, _, path = source.partition(":")
        source = importlib.import_module(module)
        for part in path.split("."):
            source = getattr(source, part)
    if callable(source):
        return inspect.signature(source).parameters[name].default
    return getattr(source, name)


def default_of(source: str, name: str) -> Callable[[], Any]:
    """`default(source, name)` as a `default_factory`, so the schema never restates a
    default. Read lazily, when a params file leaves the key out: a zoo run imports no
    language code, and the stages' DVC deps (their import closures) do not grow by every
    operation the schema names."""

    def read() -> Any:
        return default(source, name)

    read.__qualname__ = f"default_of({source!r}, {name!r})"
    return read


def _is_fraction(value: float | None, info: ValidationInfo) -> float | None:
    if value is not None:
        check_fraction(info.field_name, value)
    return value


Fraction = Annotated[float, AfterValidator(_is_fraction)]  # strictly between 0 and 1: `check_fraction`

ZOO = "kinds.zoo:ZooKind.defaults"
LANGUAGE = "kinds.language:CausalLMKind.defaults"
TRAIN = "modhifi_core.operations.train:train_from_params"
SYNTHESIZE = "modhifi_core.synthesis:synthesize"
INVERSION = "modhifi_core.synthesis:InversionConfig"
PRUNE = "modhifi_core.operations.prune:prune_checkpoint"
UNLEARN = "modhifi_core.operations.unlearn:unlearn_checkpoint"
FINETUNE = "modhifi_core.operations.finetune:finetune_checkpoint"
RELEARN = "modhifi_core.durability:RelearningAttack"
RELEARN_FORGET = "modhifi_core.durability:ForgetRelearning"
PRUNE_LM = "modhifi_core.operations.prune_language_model:prune_language_model"
SAMPLE_LM = "modhifi_core.language.sampling:sample_sequences"
COMPUTE = "modhifi_core.compute:resolve"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(Section):
    dataset: Literal["digits", "cifar10", "fashion-mnist"] = Field(default_factory=default_of(TRAIN, "dataset"))
    data_dir: str | None = None
    image_size: int = Field(8, ge=4, le=512)
    channels: int = Field(1, ge=1, le=3)
    test_fraction: Fraction = Field(default_factory=default_of(TRAIN, "test_fraction"))
    # a seeded stratified subset of the training split (a 60k-image dataset on a CPU budget); null: all
    train_per_class: int | None = Field(None, ge=1, le=1_000_000)


class ModelParams(Section):
    """Where the model comes from. Which keys apply is the kind's (`ModelKind.model_keys`):
    the zoo trains one (`name`, `width`) or starts from `path`; `source` names an
    open-weight model (hf:DIR, torchvision:ARCH / timm:ARCH with `weights`,
    python:PACKAGE.MODULE:FACTORY with `weights` and `input_shape`)."""

    path: str | None = None  # a trained zoo checkpoint to start from; null: train_base trains one
    source: str | None = None
    name: Literal["resnet18", "resnet50", "vgg11", "vgg19", "vit"] = Field(default_factory=default_of(TRAIN, "name"))
    width: int = Field(default_factory=default_of(TRAIN, "width"), ge=1, le=1024)
    # torchvision/timm/python: a .safetensors file, a torch state dict (read weights_only) or a folder modhifi wrote
    weights: str | None = None
    num_classes: int | None = Field(None, ge=1, le=1_000_000)  # torchvision/timm: the constructor's
    image_size: int | None = Field(None, ge=4, le=4096)  # torchvision/timm: the input size; null: 224
    input_shape: list[int] | None = Field(None, min_length=3, max_length=3)  # python: C, H, W of one input


class TrainParams(Section):
    """The SGD recipe of `train_from_params` (its defaults: `TrainConfig`'s)."""

    epochs: int = Field(default_factory=default_of(TRAIN, "epochs"), ge=1, le=10_000)
    lr: float = Field(default_factory=default_of(TRAIN, "lr"), gt=0.0, le=10.0)
    batch_size: int = Field(default_factory=default_of(TRAIN, "batch_size"), ge=1, le=65_536)
    weight_decay: float = Field(default_factory=default_of(TRAIN, "weight_decay"), ge=0.0, le=1.0)


class SynthesizeParams(Section):
    """Calibration samples from the model itself (`modhifi_core.synthesis.synthesize`);
    the inversion knobs are `InversionConfig`'s, with its defaults."""

    method: Literal["deepinversion", "gaussian", "folder"] = Field(default_factory=default_of(SYNTHESIZE, "method"))
    per_class: int = Field(default_factory=default_of(SYNTHESIZE, "per_class"), ge=1, le=100_000)
    source: str | None = None  # the sample folder of method "folder"
    steps: int = Field(default_factory=default_of(INVERSION, "steps"), ge=1, le=100_000)
    lr: float = Field(default_factory=default_of(INVERSION, "lr"), gt=0.0, le=10.0)
    batch_size: int = Field(default_factory=default_of(INVERSION, "batch_size"), ge=1, le=65_536)
    bn_weight: float = Field(default_factory=default_of(INVERSION, "bn_weight"), ge=0.0, le=1e4)
    first_bn_weight: float = Field(default_factory=default_of(INVERSION, "first_bn_weight"), ge=0.0, le=1e4)
    tv_weight: float = Field(default_factory=default_of(INVERSION, "tv_weight"), ge=0.0, le=1e4)
    l2_weight: float = Field(default_factory=default_of(INVERSION, "l2_weight"), ge=0.0, le=1e4)

    @model_validator(mode="after")
    def _folder_needs_source(self) -> SynthesizeParams:
        if self.method == "folder" and not self.source:
            raise ValueError("method 'folder' needs synthesize.source (a folder of .npz/.pt samples)")
        return self


class CollectParams(Section):
    """The calibration data ModHiFi scores on (the collect, score and prune stages); the
    zoo kind's defaults (`ZooKind.defaults`)."""

    calibration: Literal["synthetic", "real", "gaussian"] = Field(
        default_factory=default_of(PRUNE, "calibration_source")
    )
    # a seeded subset; null: all there are
    samples: int | None = Field(default_factory=default_of(ZOO, "calibration_samples"), ge=1, le=10_000_000)
    batch_size: int = Field(default_factory=default_of(ZOO, "batch_size"), ge=1, le=65_536)


class PruneParams(Section):
    """ModHiFi-P and its baselines (`modhifi_core.operations.prune.prune_checkpoint`, with
    its defaults; the target and latency repeats are the zoo kind's)."""

    method: Literal["modhifi", "magnitude", "l1", "l2", "random"] = Field(default_factory=default_of(PRUNE, "method"))
    # fraction of the dense FLOPs that remains
    target_flops: Fraction = Field(default_factory=default_of(ZOO, "target_value"))
    # δ* (scalar, the paper) or least-squares refit (full); null: full for modhifi (measured best), none for baselines
    compensation: Literal["none", "scalar", "full"] | None = Field(default_factory=default_of(PRUNE, "compensation"))
    # modhifi's selection score: R̃ (the paper's) or s_ci
    score: Literal["saliency", "fidelity"] = Field(default_factory=default_of(PRUNE, "score"))
    # sequential: best at 8% FLOPs, ~4x slower
    compensation_order: Literal["joint", "sequential"] = Field(default_factory=default_of(PRUNE, "compensation_order"))
    # how many channels each group keeps (modhifi)
    allocation: Literal["uniform", "union"] = Field(default_factory=default_of(PRUNE, "allocation"))
    rounds: int | None = Field(default_factory=default_of(PRUNE, "rounds"), ge=1, le=64)  # null: one per halving
    ridge: float = Field(default_factory=default_of(PRUNE, "ridge"), ge=0.0, le=1.0)  # λ, times the mean Gram diagonal
    round_to: int = Field(default_factory=default_of(PRUNE, "round_to"), ge=1, le=256)
    # a target_flops below the architecture's floor: prune to the floor (true) or refuse (false)
    allow_floor: bool = Field(default_factory=default_of(PRUNE, "allow_floor"))
    # batch of the CPU latency measurement
    latency_batch: int = Field(default_factory=default_of(PRUNE, "latency_batch"), ge=1, le=65_536)
    # interleaved dense/pruned timings, median
    latency_repeats: int = Field(default_factory=default_of(ZOO, "latency_repeats"), ge=1, le=10_000)


class UnlearnParams(Section):
    """What to forget (a class, or a seeded random fraction of the training samples),
    with which method, seeing which data; optionally after unstructured pruning."""

    forget_class: int | None = Field(3, ge=0)  # the pipeline's example; the operation has no default class
    forget_random: Fraction | None = Field(default_factory=default_of(UNLEARN, "forget_random"))
    method: Literal["modhifi", "retrain", "ft", "ga", "rl", "ff", "iu", "l1sparse", "logit-mask"] = Field(
        default_factory=default_of(UNLEARN, "method")
    )
    # what the method sees; metrics use real data
    data: Literal["synthetic", "real"] = Field(default_factory=default_of(UNLEARN, "forget_data"))
    hyperparameters: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    # prune-then-unlearn (Unlearn-Sparse)
    prune: Literal["omp", "imp", "synflow"] | None = Field(default_factory=default_of(UNLEARN, "prune"))
    # fraction of prunable weights zeroed by `prune`
    sparsity: float = Field(default_factory=default_of(UNLEARN, "sparsity"), ge=0.0, lt=1.0)
    # pruning's retraining; null: the recipe's
    retrain_epochs: int | None = Field(default_factory=default_of(UNLEARN, "retrain_epochs"), ge=1, le=10_000)

    @model_validator(mode="after")
    def _one_forget_set(self) -> UnlearnParams:
        check_forget_set(self.forget_class, self.forget_random, self.data)
        return self


class FinetuneParams(Section):
    """Distillation on synthetic samples (data-free) or cross-entropy on the real training set."""

    data: Literal["synthetic", "real"] = Field(default_factory=default_of(FINETUNE, "finetune_data"))
    epochs: int = Field(default_factory=default_of(FINETUNE, "epochs"), ge=0, le=10_000)
    # null: 0.001 with frozen BatchNorm, else 0.01
    lr: float | None = Field(default_factory=default_of(FINETUNE, "lr"), gt=0.0, le=10.0)
    temperature: float = Field(default_factory=default_of(FINETUNE, "temperature"), gt=0.0, le=100.0)
    batch_size: int = Field(default_factory=default_of(FINETUNE, "batch_size"), ge=1, le=65_536)
    # null: frozen for an unlearned model (recalibrating undoes the unlearning), else recalibrate
    batchnorm: Literal["recalibrate", "frozen"] | None = Field(default_factory=default_of(FINETUNE, "batchnorm"))
    # samples synthesised per class when none are given
    per_class: int = Field(default_factory=default_of(FINETUNE, "per_class"), ge=1, le=100_000)


class EvaluateParams(Section):
    """The audit of an unlearned model: does the forgetting survive a relearning attack
    (`relearn_steps` SGD steps on retained data only)? BN recalibration and the feature
    probe are always audited; the forget-data relearning index counts at most
    `relearn_forget_max_steps` steps (0 skips it)."""

    relearn_steps: int = Field(default_factory=default_of(RELEARN, "steps"), ge=0, le=100_000)
    relearn_lr: float = Field(default_factory=default_of(RELEARN, "lr"), gt=0.0, le=10.0)
    relearn_forget_max_steps: int = Field(default_factory=default_of(RELEARN_FORGET, "max_steps"), ge=0, le=100_000)


class ComputeParams(Section):
    """Where and in what precision every stage computes (`modhifi_core.compute.resolve`,
    with its defaults): `device` auto (CUDA when available, else the CPU), cpu, cuda or
    cuda:N; `dtype` of the weights and forward passes (statistics stay float64; a saved
    model keeps its source's dtype). A device this machine lacks is refused at run start."""

    device: str = Field(default_factory=default_of(COMPUTE, "device"))
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default_factory=default_of(COMPUTE, "dtype"))

    @model_validator(mode="after")
    def _valid(self) -> ComputeParams:
        from modhifi_core.compute import resolve

        resolve(self.device, self.dtype)  # the one check of the values (and of CUDA's presence)
        return self


class ClusterParams(Section):
    """Where the collect, prune and unlearn stages compute activation statistics: null
    (this process), `local` (a Dask LocalCluster of `workers` processes, started and closed
    by the stage) or the `tcp://host:port` of a running Dask scheduler (docs/cluster.md)."""

    address: str | None = None
    workers: int = Field(2, ge=1, le=4096)

    @model_validator(mode="after")
    def _address(self) -> ClusterParams:
        """An address Dask cannot reach (`garbage`, no port, '') fails at load, not in a stage."""
        from tasks.cluster import check_address

        check_address(self.address)
        return self


class LanguageParams(Section):
    """The run of a Hugging Face causal LM or text encoder (`model.source: hf:DIR`):
    calibration windows (`text:PATH`, or `self`: sampled from a causal LM with seeded
    `temperature`/`top_p`), FFN pruning as `prune_language_model` takes it, and on held-out
    `eval_text` perplexity (causal LM) or sentence-embedding agreement (encoder). What
    needs the model's config (its kind, its positions) is checked at run start
    (`tasks.inputs.check_model_fits`). Calibration size, batch, latency repeats and target
    default to the kind's (`CausalLMKind.defaults`), the rest to `prune_language_model`'s and
    `sample_sequences`'."""

    calibration: str = "self"  # self (data-free: sampled from the model) or text:PATH (a file or folder)
    # calibration sequences N
    samples: int = Field(default_factory=default_of(LANGUAGE, "calibration_samples"), ge=1, le=1_000_000)
    # tokens per sequence L (calibration and evaluation)
    length: int = Field(default_factory=default_of(PRUNE_LM, "length"), ge=2, le=65_536)
    temperature: float = Field(default_factory=default_of(SAMPLE_LM, "temperature"), gt=0.0, le=10.0)  # self-sampling
    top_p: float = Field(default_factory=default_of(SAMPLE_LM, "top_p"), gt=0.0, le=1.0)
    # self-sampling: each sequence starts at BOS or a random token
    prompt: Literal["bos", "random"] = Field(default_factory=default_of(SAMPLE_LM, "prompt"))
    eval_text: str | None = None  # held-out text (a file or folder) to evaluate on; needed with model.source
    # held-out windows (causal LM) or sentences (encoder)
    eval_samples: int = Field(default_factory=default_of(PRUNE_LM, "eval_samples"), ge=1, le=1_000_000)
    method: Literal["modhifi", "modhifi-energy", "wanda-sp", "flap", "magnitude", "random"] = Field(
        default_factory=default_of(PRUNE_LM, "method")
    )
    target_params: Fraction | None = Field(default_factory=default_of(LANGUAGE, "target_value"))  # of all parameters
    ffn_fraction: Fraction | None = None  # or: fraction of FFN neurons removed per layer
    batch_size: int = Field(default_factory=default_of(LANGUAGE, "batch_size"), ge=1, le=4096)  # sequences per forward
    # interleaved dense/pruned forwards of one sequence
    latency_repeats: int = Field(default_factory=default_of(LANGUAGE, "latency_repeats"), ge=0, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> LanguageParams:
        if self.calibration != "self" and not self.calibration.startswith("text:"):
            raise ValueError(f"calibration must be self or text:PATH, got {self.calibration!r}")
        check_one_target(target_params=self.target_params, ffn_fraction=self.ffn_fraction)
        return self


class ScheduleParams(Section):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


class Params(Section):
    """The whole params.yaml: `seed` and `model`, then one section per concern. A section
    the file does not hold is None (never default-built): a run reads only its kind's
    sections (`check_sections`), and building another kind's defaults would import that
    kind's operations. `cluster` and `schedule` are optional for every kind (defaults)."""

    seed: int = Field(0, ge=0)
    model: ModelParams = Field(default_factory=ModelParams)
    data: DataParams | None = None
    train: TrainParams | None = None
    synthesize: SynthesizeParams | None = None
    collect: CollectParams | None = None
    prune: PruneParams | None = None
    unlearn: UnlearnParams | None = None
    finetune: FinetuneParams | None = None
    evaluate: EvaluateParams | None = None
    cluster: ClusterParams = Field(default_factory=ClusterParams)
    compute: ComputeParams | None = None
    language: LanguageParams | None = None
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)

    @classmethod
    def every_default(cls) -> Params:
        """Every section with its defaults (docs and tests; a run holds only its kind's)."""
        return cls.model_validate({name: {} for name in cls.model_fields if name != "seed"})

    def present(self) -> dict:
        """The params as a dict, without the sections the file does not hold."""
        return self.model_dump(exclude={name for name in type(self).model_fields if getattr(self, name) is None})


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


# ---------------------------------------------------------------- a new workspace's params.yaml


def render_params(kind: Any, model: dict, settings: dict | None = None) -> str:
    """A commented params.yaml for a run of `kind` (a `kinds.ModelKind`): `seed`, the
    kind's `model` keys (`model` gives those the user set; the rest default), the kind's
    sections and `cluster`, every key at its default unless `settings` (`{"section.key":
    value}`) sets it, each key with its comment from this schema (`_schema_comments`).
    InputError (one line) for a settings key the kind does not read; the result is
    validated as `load_params` would."""
    sections = {name: Params.model_fields[name].annotation for name in (*kind.sections, "cluster")}
    values: dict[str, Any] = {"seed": 0, "model": {key: model.get(key) for key in kind.model_keys}}
    values["model"] |= {k: v for k, v in ModelParams().model_dump().items() if k in kind.model_keys and k not in model}
    for name in sections:
        values[name] = _section_class(name)().model_dump()
    for key, value in (settings or {}).items():
        *path, last = key.split(".")
        node = values
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or (last not in node and key != "seed"):
            raise InputError(f"{key} is not a params key of a {kind.name} model (its sections: {', '.join(values)})")
        node[last] = value
    validate_params(values, source="params.yaml")
    comments = _schema_comments()
    lines = [
        f"# The pipeline's knobs for a {kind.name} model, written by `modhifi init` with every default",
        "# (schema and checks: modhifi's tasks/params.py). Edit a value, then `modhifi run`.",
    ]
    for name, value in values.items():
        if not isinstance(value, dict):
            lines.append(_commented(f"{name}: {_flow(value)}", comments.get(("Params", name), "")))
            continue
        owner = _section_class(name).__name__
        lines += [f"# {comments[(owner, '')]}"] if comments.get((owner, "")) else []
        lines.append(f"{name}:")
        for key, item in value.items():
            lines.append(_commented(f"  {key}: {_flow(item)}", comments.get((owner, key), "")))
    return "\n".join(lines) + "\n"


def _section_class(name: str) -> type[Section]:
    annotation = Params.model_fields[name].annotation
    return next(a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None))


def _flow(value: Any) -> str:
    """`value` as one line of YAML (`null`, `0.5`, `{}`, `[3, 32, 32]`, a quoted string
    when plain YAML would read it back as something else)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()[1:-1]


def _commented(line: str, comment: str) -> str:
    return f"{line:<28} # {comment}" if comment else line


def _schema_comments() -> dict[tuple[str, str], str]:
    """`(class name, field)` -> the comment written beside that field in this module (on its
    line, else the comment lines right above it); `(class name, "")` -> the first sentence
    of the class's docstring. Read from the source, so the comments are written once."""
    import ast
    import io
    import tokenize

    source = Path(__file__).read_text()
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    comments: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        doc = ast.get_docstring(node) or ""
        comments[(node.name, "")] = " ".join(doc.split(". ")[0].split()).rstrip(".")
        for field in node.body:
            if not (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)):
                continue
            own = [by_line[n] for n in range(field.lineno, field.end_lineno + 1) if n in by_line]
            above, line = [], field.lineno - 1
            while line in by_line and source.splitlines()[line - 1].strip().startswith("#"):
                above.insert(0, by_line[line])
                line -= 1
            text = " ".join(own or above)
            comments[(node.name, field.target.id)] = text.split("  # ")[0]
    return comments
