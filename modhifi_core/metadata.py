"""The one schema of a checkpoint's metadata: every operation writes it, every adapter reads it.

    ModelMetadata(operation, data, parents, params, recipe, forgotten, metrics, report)

* `operation`: what made the model — `train`, `import`, `prune`, `unlearn`, `finetune`.
* `data`: the data spec (`modhifi_core.data.data_spec`) of the dataset the model predicts.
* `parents`: role -> sha256 of the checkpoints it was made from (`model`, `teacher`).
* `params`: the operation's parameters, as given.
* `recipe`: the training recipe (`TrainConfig` fields) of the model's training, inherited
  by every descendant — Retrain and prune-then-unlearn retraining use it.
* `forgotten`: what was unlearned, inherited by every descendant: `{"class": k, "method": m}`
  or `{"fraction": f, "seed": s, "method": m}`; None when nothing was. Fine-tuning reads
  it to keep the class forgotten.
* `metrics`: the deterministic evidence (accuracies, UA/RA/TA/MIA). Wall-clock timings
  and latencies never go into a checkpoint (two runs with one seed give identical bytes);
  they live in the stage's metrics files and MLflow.
* `report`: operation-specific detail (the pruning report, the unlearning log), timings
  removed.

Checkpoints written before this schema (keys `stage`, `unlearning`, training recipe in
`params`) are read through `read_metadata` too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OPERATIONS = ("train", "import", "prune", "unlearn", "finetune")
_RECIPE_KEYS = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "label_smoothing", "seed")


@dataclass(frozen=True)
class ModelMetadata:
    """See the module docstring. Plain JSON-like values only."""

    operation: str
    data: dict[str, Any] | None = None
    parents: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    forgotten: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The dict `save_checkpoint` stores (timings stripped from metrics and report)."""
        values = dataclasses.asdict(self)
        values["metrics"] = without_timings(values["metrics"])
        values["report"] = without_timings(values["report"])
        return values

    def derive(self, operation: str, parent_sha256: str | None, **changes: Any) -> ModelMetadata:
        """Metadata of a model made from this one: data, recipe and forgotten are inherited
        (unless given), `parents` is `{"model": parent_sha256}` plus any given."""
        parents = {"model": parent_sha256} if parent_sha256 else {}
        parents.update(changes.pop("parents", {}))
        inherited = {"data": self.data, "recipe": self.recipe, "forgotten": self.forgotten}
        return ModelMetadata(operation=operation, parents=parents, **{**inherited, **changes})

    @property
    def forgotten_class(self) -> int | None:
        """The class unlearned from this model or an ancestor, if one was."""
        value = (self.forgotten or {}).get("class")
        return value if isinstance(value, int) else None


def read_metadata(raw: dict[str, Any] | None) -> ModelMetadata:
    """The metadata of a loaded checkpoint (`Checkpoint.metadata`), in this schema."""
    raw = dict(raw or {})
    if "operation" in raw:
        known = {f.name for f in dataclasses.fields(ModelMetadata)}
        return ModelMetadata(**{k: v for k, v in raw.items() if k in known})
    return _read_legacy(raw)


def _read_legacy(raw: dict[str, Any]) -> ModelMetadata:
    operation = {"train_base": "train"}.get(raw.get("stage"), raw.get("stage") or "train")
    params = raw.get("params") or {}
    recipe = {k: params[k] for k in _RECIPE_KEYS if k in params} if operation == "train" else {}
    forget = (raw.get("unlearning") or {}).get("forget")
    return ModelMetadata(
        operation=operation,
        data=raw.get("data"),
        parents=raw.get("parents") or {},
        params=params,
        recipe=recipe,
        forgotten=dict(forget) if forget else None,
        metrics=raw.get("metrics") or {},
        report=raw.get("pruning_report") or {},
    )


def modification_record(operation: str, parents: dict, params: dict, metrics: dict) -> dict[str, Any]:
    """The lineage of a model written back in its source's own format (`modhifi.json`
    beside a Hugging Face or torchvision folder): what made it (`operation`, one of
    OPERATIONS), from what (`parents`: role -> hashes), with which `params`, and the
    `metrics` without timings."""
    return {"operation": operation, "parents": parents, "params": params, "metrics": without_timings(metrics)}


def without_timings(value: Any) -> Any:
    """`value` with every key about wall-clock time removed (`seconds`, `*_seconds`,
    `latency*`), recursively: what varies between two runs with the same seed."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not _is_timing(str(k))}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def _is_timing(key: str) -> bool:
    return key == "seconds" or key.endswith("_seconds") or key.startswith("latency")
