"""Operations `collect_statistics` and `score`: the streaming activation statistics of a
model's prunable layers on calibration data, and the per-component scores made from them
(`prune` can start its first round from both)."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field

from torch import Tensor, nn

from modhifi_core import statistics as layer_statistics
from modhifi_core.calibration import calibration_batches
from modhifi_core.compute import place, requested
from modhifi_core.errors import InputError
from modhifi_core.fidelity import component_scores
from modhifi_core.models import output_layer_name
from modhifi_core.pruning.coupling import Coupling
from modhifi_core.statistics import LayerStatistics

SCORES = ("saliency", "fidelity")


@dataclass
class ModelStatistics:
    """Float64 sums per consumer layer of a prunable channel group (`layers`), whether
    each layer's output feeds a BatchNorm (`centered`: fidelity uses centred
    contributions), the saliency's centre `m_c` per layer (`centres`: the running mean of
    the BN after it minus its bias; absent where none follows) and the number of
    calibration samples. Shards of calibration data add up."""

    layers: dict[str, LayerStatistics]
    centered: dict[str, bool]
    samples: int
    centres: dict[str, Tensor] = field(default_factory=dict)

    def to_payload(self) -> dict:
        """Plain tensors and containers (`torch.save` + `weights_only=True` load)."""
        layers = {name: asdict(s) for name, s in self.layers.items()}
        return {"layers": layers, "centered": self.centered, "samples": self.samples, "centres": self.centres}

    @classmethod
    def from_payload(cls, payload: dict) -> ModelStatistics:
        try:
            layers = {name: LayerStatistics(**s) for name, s in payload["layers"].items()}
            centres = dict(payload.get("centres") or {})
            return cls(layers, dict(payload["centered"]), int(payload["samples"]), centres)
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"not a modhifi statistics file ({type(exc).__name__}: {exc})") from None


def collect_statistics(
    model: nn.Module,
    calibration: object,
    *,
    batch_size: int = 128,
    example_inputs: Tensor | None = None,
    ignored_layers: list[str] | None = None,
    executor: Executor | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ModelStatistics:
    """One streaming pass of `model` over `calibration` (a tensor, dataset, list of
    batches or DataLoader), hooking every consumer layer of the prunable channel groups
    Torch-Pruning finds (traced on `example_inputs`, default the first input;
    `ignored_layers` default: the classifier). With an `executor` (any
    `concurrent.futures.Executor`, e.g. a Dask client's), the batches are split into
    shards whose float64 sums are computed on it and added: the same statistics."""
    place(model, requested(device, dtype))
    batches = calibration_batches(calibration, batch_size)
    example = example_inputs if example_inputs is not None else batches[0][:1]
    protected = list(ignored_layers) if ignored_layers is not None else [output_layer_name(model)]
    coupling = Coupling(model.eval(), example, protected)
    layers = coupling.consumer_layers()
    stats = layer_statistics.collect_statistics(model, batches, layers, executor=executor)
    centered = {name: coupling.feeds_batchnorm(name) for name in layers}
    centres = {name: c for name in layers if (c := coupling.output_centre(name)) is not None}
    return ModelStatistics(stats, centered, sum(len(b) for b in batches), centres)


@dataclass
class ModelScores:
    """The `kind` score (`saliency` or `fidelity`) of every component, per layer: float64
    `(c_out, c_in)` tensors (`layers`), exactly what ModHiFi-P's first round ranks by."""

    kind: str
    layers: dict[str, Tensor]

    def to_payload(self) -> dict:
        """Plain tensors and containers (`torch.save` + `weights_only=True` load)."""
        return {"kind": self.kind, "layers": self.layers}

    @classmethod
    def from_payload(cls, payload: dict) -> ModelScores:
        try:
            kind, layers = payload["kind"], dict(payload["layers"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a modhifi scores file ({type(exc).__name__}: {exc})") from None
        if kind not in SCORES or not all(isinstance(v, Tensor) for v in layers.values()):
            raise InputError(f"not a modhifi scores file (kind {kind!r}, or a layer without a tensor)")
        return cls(kind, layers)


def score(model: nn.Module, statistics: ModelStatistics, kind: str = "saliency") -> ModelScores:
    """Per layer, the score `(c_out, c_in)` of every component `(c, i)` (method.md §1):
    `saliency` — `R̃_ci = E<A_ci, Y_c − m_c>`, what ModHiFi-P and ModHiFi-U rank by;
    `fidelity` — the singleton Subset Fidelity `s_ci`, centred where the output feeds a BN.
    Kept in float64, so `prune(..., statistics=statistics, scores=...)` selects exactly
    the channels it would select computing them itself."""
    if kind not in SCORES:
        raise InputError(f"unknown score {kind!r}; choose one of {', '.join(SCORES)}")
    modules = dict(model.named_modules())
    missing = sorted(set(statistics.layers) - set(modules))
    if missing:
        raise InputError(f"the statistics name layers the model does not have: {missing[:3]}")
    layers = {
        name: component_scores(kind, s, modules[name], statistics.centres.get(name), statistics.centered[name])
        for name, s in statistics.layers.items()
    }
    return ModelScores(kind, layers)
