"""The interface every model kind implements (one adapter per kind, `kinds/<kind>/`).

A *kind* is what a model source holds: modhifi's own zoo checkpoint, a Hugging Face causal
LM, a text encoder, an image classifier (Hugging Face, torchvision, timm), a user's own
PyTorch module. Stages and commands ask the registry (`kinds.kind_of`) once and then talk
to the adapter only: they never ask which kind they hold. The model of the pattern is
Torch-Pruning's `BasePruningFunc` + `PrunerBox` (a new layer type is one subclass; the
pruner never branches on type) and `transformers`' `AutoModel.register`.

Example:
    >>> from kinds import kind_of
    >>> kind = kind_of("hf:models/smollm2")          # reads the folder's config.json once
    >>> kind.name, kind.defaults.calibration_samples
    ('causal-lm', 128)
    >>> loaded = kind.load()                           # on the chosen device and dtype
    >>> kind.save(loaded, pruned_model, "out/", lineage={...})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from modhifi_core.errors import InputError

STAGES = ("train_base", "synthesize", "collect", "score", "prune", "unlearn", "finetune", "evaluate", "report")

# Device and precision (`modhifi_core.compute`): the params section every kind reads, the
# stages that compute on a model (each declares the section: a change re-runs them), and
# the options every command of every kind takes (`flows.commands.dispatch` resolves them).
COMPUTE_SECTION = "compute"
COMPUTE_STAGES = tuple(stage for stage in STAGES if stage != "report")
COMPUTE_OPTIONS = ("device", "dtype")


# The `modhifi prune` options of channel pruning (ModHiFi-P or a baseline on conv channels),
# which every kind that prunes channels takes (typer parameter names).
CHANNEL_PRUNING_OPTIONS = (
    "target_flops",
    "method",
    "calibration",
    "calibration_samples",
    "compensation",
    "score",
    "compensation_order",
    "allocation",
    "rounds",
    "round_to",
    "allow_floor",
    "batch_size",
    "latency_repeats",
    "seed",
)


@dataclass(frozen=True)
class KindDefaults:
    """What a kind calibrates, batches and targets by default, written once here.

    Args:
        calibration_samples: calibration images (or token windows of a language model).
        batch_size: samples per forward pass while calibrating.
        latency_repeats: interleaved dense/pruned timed forward passes (the median is reported).
        target: what a pruning target is a fraction of: `flops` or `params`.
        target_value: the fraction of it that remains by default.
    """

    calibration_samples: int
    batch_size: int
    latency_repeats: int
    target: str
    target_value: float


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage of a kind, as its dvc.yaml entry is generated.

    Args:
        reads: workspace artifacts (`tasks.workspace.ARTIFACTS` names) and external-input
            records (`tasks.inputs.INPUTS` names) the stage really consumes.
        params: the dotted params.yaml keys it reads (the runner refuses any other).
        writes: artifacts it writes (DVC outs).
        metrics: JSON metrics artifacts it writes.
        plots: CSV plot artifacts it writes.
    """

    reads: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()


class ModelKind:
    """One kind of model source. Subclasses set the class attributes and implement the
    methods; `kinds.register` adds them to the registry.

    Class attributes:
        name: the kind's name, as registered (`zoo`, `causal-lm`, `encoder`,
            `image-classification`, `torchvision`, `python`).
        sections: the params.yaml sections a run of this kind reads (besides `seed`,
            `model`, `cluster`, `schedule`); any other section is refused.
        skipped: stage name -> why that stage does not apply to this kind.
        defaults: `KindDefaults`.
        targets: the pruning targets it accepts (`flops`, `params`, `ffn_fraction`).
        package: the package holding the kind's pipeline stages (`<package>.<stage>`, each
            with `run(ws, params, kind) -> metrics`) and its commands (`<package>.cli`).
        stages: stage name -> `StageSpec`: the pipeline of this kind, in order (a stage
            that does not apply is absent, with its reason in `skipped`); the kind's
            dvc.yaml is generated from it (`tasks.dag.render_dvc_yaml`).
        dvc_plots: the top-level `plots:` definitions of that dvc.yaml.
        options: CLI command -> the option names (typer parameter names) it takes; a
            command absent here does not apply to the kind. Every command also takes
            `COMPUTE_OPTIONS` (`--device`, `--dtype`), which the dispatch resolves.
        output: what a command's `--out` names: a `file` or a `folder`.
        model_keys: the keys of params.yaml's `model` section it reads (others are refused).
    """

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]] = ()
    skipped: ClassVar[dict[str, str]] = {}
    defaults: ClassVar[KindDefaults]
    targets: ClassVar[tuple[str, ...]] = ("flops",)
    package: ClassVar[str]
    stages: ClassVar[dict[str, StageSpec]]
    dvc_plots: ClassVar[tuple[dict, ...]] = ()  # the top-level `plots:` of the kind's dvc.yaml
    options: ClassVar[dict[str, tuple[str, ...]]] = {}  # CLI command -> the options it takes
    output: ClassVar[str] = "file"  # what --out names: a checkpoint `file` or a `folder`
    model_keys: ClassVar[tuple[str, ...]] = ("source",)  # the params.yaml `model` keys it reads

    def __init__(self, source: str | None, root: Path | None = None) -> None:
        self.source = source
        self.root = root  # the workspace (or None: the current folder): relative paths, a user's modules
        # where and in what dtype loaded models compute (`modhifi_core.compute.Compute`); None:
        # as loaded. Set by the command dispatch and the stage runner from --device/--dtype or
        # params.yaml `compute`.
        self.compute: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every kind's `load` places what it loads on `self.compute` and every `save`
        writes the model back in its source's dtype with the compute it ran on in its
        lineage: written once here, not in each adapter (`_placed_load`, `_restored_save`)."""
        super().__init_subclass__(**kwargs)
        if "load" in cls.__dict__:
            cls.load = _placed_load(cls.__dict__["load"])
        if "save" in cls.__dict__:
            cls.save = _restored_save(cls.__dict__["save"])

    def compute_keywords(self) -> dict[str, str]:
        """`self.compute` as the `device`/`dtype` keywords of an engine operation (none: unset)."""
        return self.compute.describe() if self.compute is not None else {}

    def sibling(self, source: str | None) -> ModelKind:
        """Another source of this kind, computing where this one does."""
        other = type(self)(source, self.root)
        other.compute = self.compute
        return other

    @classmethod
    def stage_params(cls, stage: str) -> tuple[str, ...]:
        """The params keys pipeline `stage` reads: its StageSpec's, and `compute` for a
        stage that computes on a model (`COMPUTE_STAGES`)."""
        declared = cls.stages[stage].params
        return (*declared, COMPUTE_SECTION) if stage in COMPUTE_STAGES else declared

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"

    # ------------------------------------------------------------------ the model
    def check(self, **options: Any) -> None:
        """Refuse, in one line and before any weight is read, a source (with `options`,
        e.g. `weights`) this kind cannot load."""

    def load(self, *, device: str = "cpu", **options: Any) -> Any:
        """The source's model (and what saving it back needs, its `.model` among it), in
        eval mode; the base class then places `.model` on `self.compute` (`_placed_load`)."""
        raise NotImplementedError

    def save(self, loaded: Any, model: Any, out: str | Path, lineage: dict) -> Path:
        """Write `model` (made from `loaded`) at `out` in the source's own format, with
        the lineage beside it; atomically. Returns the path written. The base class first
        puts `model` back on the CPU in its source's dtype (`_restored_save`)."""
        raise NotImplementedError

    def describe(self, path: str | Path) -> dict:
        """A short summary of a model artifact of this kind, for lineage and reports."""
        return {"kind": self.name, "path": str(path)}

    def model_section(self) -> dict:
        """The params.yaml `model` section that names this source from anywhere (a local
        path made absolute: `modhifi init` writes it into a workspace elsewhere)."""
        return {"source": self.source}

    # ------------------------------------------------------------------ a pipeline run
    def inputs(self, params: Any, root: Path) -> dict[str, Path | None]:
        """The external inputs a run reads, by `tasks.inputs.INPUTS` name (`model_source`,
        `calibration_text`, `eval_text`), resolved against the workspace `root`; none by default."""
        return {}

    def input(self, name: str, params: Any, root: Path) -> Path | None:
        """One external input of `inputs` (an adapter whose inputs read different params
        keys answers each alone: a stage reads only the keys it declares)."""
        return self.inputs(params, root).get(name)

    def source_files(self, path: Path) -> list[Path]:
        """The files of input `model_source` at `path` whose sha256 make its lineage."""
        return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())

    def check_run(self, params: Any, root: Path) -> None:
        """Refuse, in one InputError line and before any stage runs, params that cannot
        work on this source (the kind's own checks; pydantic checked the values)."""

    # ------------------------------------------------------------------ checks
    def check_target(self, target: str) -> None:
        """Refuse a pruning target (`flops`, `params`, `ffn_fraction`) this kind does not take."""
        if target not in self.targets:
            takes = " or ".join(f"--{t.replace('_', '-')}" for t in self.targets)
            flag = "--target-" + target if target != "ffn_fraction" else "--ffn-fraction"
            raise InputError(f"a {self.name} model is pruned by {takes}, not {flag}")

    def applies(self, stage: str) -> bool:
        """Whether pipeline `stage` does anything for this kind (else `skipped[stage]` says why)."""
        return stage not in self.skipped


def _placed_load(load: Any) -> Any:
    """`load` that places the loaded `.model` on the kind's `compute` (`modhifi_core.compute.place`)."""
    from functools import wraps

    @wraps(load)
    def placed(self: ModelKind, *args: Any, **kwargs: Any) -> Any:
        from modhifi_core.compute import place

        loaded = load(self, *args, **kwargs)
        place(loaded.model, self.compute)
        return loaded

    return placed


def _restored_save(save: Any) -> Any:
    """`save` that writes `model` on the CPU in its source's dtype (`modhifi_core.compute.restore`)
    and records in its lineage the device and dtype it computed in (`compute`)."""
    from functools import wraps

    @wraps(save)
    def restored(self: ModelKind, loaded: Any, model: Any, out: Any, lineage: dict, *args: Any, **kwargs: Any) -> Any:
        from modhifi_core.compute import restore

        was = restore(model, like=getattr(loaded, "model", None))
        if self.compute is not None:  # a command or stage chose it: the lineage says what it was
            lineage = {**lineage, "compute": was.describe()}
        return save(self, loaded, model, out, lineage, *args, **kwargs)

    return restored
