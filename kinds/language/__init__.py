"""The language kinds: a local Hugging Face causal LM (`causal-lm`) or text encoder
(`encoder`, BERT family), `model.source: hf:DIR` (the registry reads the folder's config to
tell them apart). One adapter each, sharing `LanguageKind`; where they differ it is a class
attribute or a method override:

- a causal LM samples its own calibration text (`calibration: self`, data-free) and has a
  perplexity of its own;
- an encoder calibrates on real text only, and is measured against a reference encoder
  (mean cosine of mean-pooled sentence embeddings, top-k neighbour agreement), which needs
  more than k held-out sentences.

The pipeline (one module per stage, `kinds/language/<stage>.py`, `run(ws, params, kind)`):

- train_base: `outputs/base/model.pt` records the source folder, its kind and its files'
  sha256 (not trained);
- synthesize: `outputs/synthetic/calibration.pt`, `(N, L)` token ids sampled from the model
  (`self`, data-free; a causal LM) or windows of `text:PATH` (no special tokens);
- collect: `outputs/statistics/statistics.pt`, each FFN's down-projection input statistics;
- score: `outputs/scores/scores.pt`, each FFN neuron's score under `language.method`;
- prune: `outputs/pruned/hf/`, a stock Hugging Face folder with `modhifi.json` lineage
  (`model.pt` records it);
- evaluate: on `language.eval_text`, dense vs pruned: a causal LM's perplexity over
  `eval_samples` windows; an encoder's sentence-embedding agreement over `eval_samples`
  held-out sentences; with the prune stage's ratios and speed-up;
- report: `outputs/report/`.

Unlearn and finetune do not apply (`skipped`). Records are plain dicts saved with torch
(`record` names the kind), read with `weights_only=True` (`tasks.records.read_record`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from kinds.base import KindDefaults, ModelKind, StageSpec
from modhifi_core.errors import InputError

UNLEARN_REASON = "class unlearning does not apply to a language model (a causal LM or a text encoder)"
FINETUNE_REASON = "distillation fine-tuning on retained classes does not apply to a language model"

# The language keys the prune stage reads (its lineage in modhifi.json records them).
PRUNE_KEYS = (
    "calibration",
    "samples",
    "length",
    "method",
    "target_params",
    "ffn_fraction",
    "batch_size",
    "latency_repeats",
)
# The language keys the report shows.
REPORT_KEYS = ("calibration", "samples", "length", "method", "target_params", "ffn_fraction", "eval_text")


def _language(*keys: str) -> tuple[str, ...]:
    return tuple(f"language.{key}" for key in keys)


class LanguageKind(ModelKind):
    """A Hugging Face language model in a local folder (`hf:DIR`)."""

    sections: ClassVar[tuple[str, ...]] = ("language", "compute")
    skipped: ClassVar[dict[str, str]] = {"unlearn": UNLEARN_REASON, "finetune": FINETUNE_REASON}
    # The paper calibrates LLMs on 128 samples.
    defaults: ClassVar[KindDefaults] = KindDefaults(
        calibration_samples=128, batch_size=4, latency_repeats=3, target="params", target_value=0.8
    )
    targets: ClassVar[tuple[str, ...]] = ("params", "ffn_fraction")
    package: ClassVar[str] = "kinds.language"
    output: ClassVar[str] = "folder"  # `modhifi prune --out` is a folder (a stock Hugging Face one)
    stages: ClassVar[dict[str, StageSpec]] = {
        "train_base": StageSpec(
            reads=("model_source",), params=("model.source",), writes=("base_model",), metrics=("base_metrics",)
        ),
        "synthesize": StageSpec(
            reads=("base_model", "calibration_text"),
            params=(
                "seed",
                "model.source",
                *_language("calibration", "samples", "length", "temperature", "top_p", "prompt"),
            ),
            writes=("synthetic",),
        ),
        "collect": StageSpec(
            reads=("base_model", "synthetic"),
            params=("cluster.address", "cluster.workers", "language.batch_size"),
            writes=("statistics",),
        ),
        "score": StageSpec(
            reads=("base_model", "statistics"),
            params=("seed", "language.method"),
            writes=("scores",),
            plots=("scores_csv",),
        ),
        "prune": StageSpec(
            reads=("base_model", "synthetic", "statistics", "scores"),
            params=("seed", *_language(*PRUNE_KEYS)),
            writes=("pruned_model", "pruned_hf"),
            metrics=("pruned_metrics",),
            plots=("pruned_layers",),
        ),
        "evaluate": StageSpec(
            reads=("base_model", "pruned_hf", "pruned_metrics", "eval_text"),
            params=(
                "seed",
                "model.source",
                *_language("eval_text", "eval_samples", "length", "method", "batch_size"),
            ),
            metrics=("evaluation",),
            plots=("per_class",),
        ),
        "report": StageSpec(
            reads=("evaluation", "pruned_metrics", "pruned_layers", "scores", "per_class"),
            params=("model.source", *_language(*REPORT_KEYS)),
            writes=("report",),
        ),
    }
    # CLI command -> the options it takes (typer parameter names); `kinds.language.cli`.
    options: ClassVar[dict[str, tuple[str, ...]]] = {
        "prune": (
            "method",
            "calibration",
            "calibration_samples",
            "target_params",
            "ffn_fraction",
            "length",
            "eval_text",
            "batch_size",
            "latency_repeats",
            "seed",
        ),
        "evaluate": ("text", "reference", "samples", "length"),
    }
    # `modhifi prune` streams the model one transformer layer at a time (the dense model is
    # never held whole; `prune_language_model_layerwise`) where the kind's measurements can
    # be taken layer by layer: a causal LM's perplexity can; an encoder's sentence-embedding
    # agreement over padded held-out sentences is not built layer-wise yet, so an encoder
    # (small ones: MiniLM, BERT-base) is pruned whole.
    layerwise: ClassVar[bool]
    # `modhifi prune`'s calibration when none is given: self-sampled (`synthetic`, data-free)
    # where the model can generate; None: the user must give text:PATH.
    default_calibration: ClassVar[str | None]

    # ------------------------------------------------------------------ the model
    def folder(self, root: Path | None = None) -> Path:
        """The source folder (`hf:DIR`; a relative DIR against `root`)."""
        from kinds import hf_folder

        return hf_folder(self.source, root)

    def model_section(self) -> dict:
        return {"source": f"hf:{self.folder().resolve()}"}

    def check(self, **options: Any) -> None:
        """The folder is a complete Hugging Face model folder (config, weights), checked
        without loading it."""
        from modhifi_core.sources import check_folder

        check_folder(self.folder())

    def load(self, *, device: str = "cpu", need_tokenizer: bool = True, **options: Any) -> Any:
        """The folder's model of this kind (`modhifi_core.sources.LoadedModel`: model,
        tokenizer, path, weight files), eval mode, on `device`."""
        from modhifi_core.sources import load_hf

        loaded = load_hf(self.folder(), kind=self.name, need_tokenizer=need_tokenizer)
        loaded.model.to(device)
        return loaded

    def tokenizer(self) -> Any:
        """The folder's tokenizer (a GGUF file's own), without its weights; InputError
        when it has none (text calibration, sampling and evaluation all need one)."""
        from modhifi_core.sources.huggingface import load_tokenizer

        tokenizer = load_tokenizer(self.folder())
        if tokenizer is None:
            raise InputError(
                f"{self.folder()} has no tokenizer files (e.g. tokenizer.json): cannot tokenise text for this model"
            )
        return tokenizer

    def save(self, loaded: Any, model: Any, out: str | Path, lineage: dict) -> Path:
        """`model` as a stock Hugging Face folder at `out`, with `loaded`'s tokenizer files
        and `lineage` (`modhifi_core.metadata.modification_record`) in `modhifi.json`."""
        from modhifi_core.sources import save_hf

        return save_hf(model, out, tokenizer=loaded.tokenizer, source=loaded.path, lineage=lineage)

    def describe(self, path: str | Path) -> dict:
        """Kind, folder, weights format and the sha256 of each weight file."""
        from modhifi_core.sources import check_folder
        from modhifi_core.sources.huggingface import weights_digest

        _, weights, weights_format = check_folder(Path(path))
        digest = weights_digest(weights)
        return {"kind": self.name, "path": str(path), "weights_format": weights_format, "weights": digest}

    # ------------------------------------------------------------------ inputs and checks
    def inputs(self, params: Any, root: Path) -> dict[str, Path | None]:
        """The model folder, the calibration text (None for `calibration: self`) and the
        held-out text, resolved against the workspace `root`."""
        return {name: self.input(name, params, root) for name in ("model_source", "calibration_text", "eval_text")}

    def input(self, name: str, params: Any, root: Path) -> Path | None:
        """One of `inputs`, reading only the params key it needs (a stage reads only the
        keys it declares)."""
        if name == "model_source":
            return self.folder(root)
        lang = params.language
        text = lang.eval_text if name == "eval_text" else lang.calibration.removeprefix("text:")
        if name == "calibration_text" and lang.calibration == "self":
            text = None
        return root / Path(text).expanduser() if text else None

    def source_files(self, path: Path) -> list[Path]:
        """The folder's config, weight and tokenizer files (what its lineage hashes)."""
        from modhifi_core.sources.huggingface import TOKENIZER_FILES, check_folder

        _, weights, _ = check_folder(path)
        extra = [path / name for name in ("config.json", *TOKENIZER_FILES) if (path / name).is_file()]
        return sorted({*weights, *extra})

    def check_run(self, params: Any, root: Path) -> None:
        """One InputError line for a language section that cannot run on this model: no
        held-out text, or a text that is not there; calibration this kind cannot do; too
        few held-out samples for its measurement; a `length` beyond the model's positions
        (refused, not clipped: what runs is what params.yaml says)."""
        from modhifi_core.sources import position_limit

        lang, paths = params.language, self.inputs(params, root)
        if lang.eval_text is None:
            raise InputError("language.eval_text: model.source needs held-out text (a file or folder) to evaluate on")
        if not paths["eval_text"].exists():
            raise InputError(f"language.eval_text: text {lang.eval_text} does not exist")
        if paths["calibration_text"] is not None and not paths["calibration_text"].exists():
            raise InputError(f"language.calibration: text {lang.calibration.removeprefix('text:')} does not exist")
        from modhifi_core.language.calibration import check_text

        for key, name in (("language.eval_text", "eval_text"), ("language.calibration", "calibration_text")):
            if paths[name] is not None:
                try:
                    check_text(paths[name])  # empty, binary, an empty folder, a model folder
                except InputError as exc:
                    raise InputError(f"{key}: {exc}") from None
        self.check_calibration("language.calibration", lang.calibration)
        self.check_eval_samples(lang.eval_samples)
        limit = position_limit(paths["model_source"])
        if limit is not None and lang.length > limit:
            raise InputError(
                f"language.length: {lang.length} tokens exceed the {limit} positions of {paths['model_source']} "
                f"(max_position_embeddings in its config.json); give at most {limit}"
            )

    def check_calibration(self, key: str, calibration: str) -> None:
        """Refuse calibration (`key`: where it was given) this kind cannot do; a causal LM
        can sample its own (`self` in params.yaml, `synthetic` on the command line)."""

    def check_eval_samples(self, samples: int) -> None:
        """Refuse held-out samples too few for this kind's measurement (any number will do
        for a perplexity)."""

    def check_reference(self, reference: str | None) -> None:
        """Refuse `modhifi evaluate` without the reference this kind's measurement needs
        (a causal LM has a perplexity of its own)."""


class CausalLMKind(LanguageKind):
    """A causal LM (`LlamaForCausalLM`, `Qwen2ForCausalLM`, GPT-2, a GGUF file ...)."""

    name: ClassVar[str] = "causal-lm"
    default_calibration: ClassVar[str | None] = "synthetic"
    layerwise: ClassVar[bool] = True


class EncoderKind(LanguageKind):
    """A bare text encoder of a bidirectional family (`BertModel`, MiniLM ...): sentence
    embeddings, no language-model head."""

    name: ClassVar[str] = "encoder"
    default_calibration: ClassVar[str | None] = None
    layerwise: ClassVar[bool] = False

    def check_calibration(self, key: str, calibration: str | None) -> None:
        real, folder = "give text:PATH (a file or folder of real text)", self.folder()
        if calibration is None:
            raise InputError(f"{key}: an encoder ({folder}) cannot sample its own calibration text; {real}")
        if calibration in ("self", "synthetic"):
            what = f"{calibration} samples text from the model"
            raise InputError(f"{key}: {what}, which an encoder ({folder}) cannot do; {real}")

    @staticmethod
    def neighbours() -> int:
        """k of the top-k neighbour agreement (`embedding_agreement`'s default)."""
        import inspect

        from modhifi_core.language import embedding_agreement

        return inspect.signature(embedding_agreement).parameters["k"].default

    def check_eval_samples(self, samples: int) -> None:
        k = self.neighbours()
        if samples <= k:
            raise InputError(
                f"language.eval_samples: an encoder is evaluated by top-{k} neighbour agreement over the "
                f"held-out sentences, which needs more than {k}; got {samples}"
            )

    def check_reference(self, reference: str | None) -> None:
        if reference is None:
            raise InputError(
                f"{self.source} is an encoder, which has no perplexity: give --reference hf:DENSE to compare with"
            )
