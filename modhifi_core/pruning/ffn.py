"""FFN-neuron pruning of transformers (method.md §3b): Llama/Qwen2/Mistral, GPT-2, BERT, ViT, Swin.

    prune_transformer(model, batches, target_params=0.8, score="energy", compensation="ls")
        -> PruningResult(model, report)

Components are the FFN intermediate neurons: the inputs `h_j` of the down projection
`y = W h` (Llama `gate_proj`/`up_proj` -> `down_proj`; GPT-2 `c_fc` -> `c_proj`, a
transposed `Conv1D`; BERT/ViT/Swin `intermediate.dense` -> `output.dense`; `fc1` -> `fc2`).
Every statistic is a function of the streaming sums `G = Σ h hᵀ`, `Σ h` and the token
count (float64), collected layer by layer so that memory holds one layer's Gram.

Removal slices the Linear/Conv1D weights directly rather than going through Torch-Pruning:
the coupling of an FFN neuron is fixed and local (its row of every producer, its bias
entries, its column of the down projection), the activation between them is elementwise,
and Torch-Pruning's tracer needs per-family workarounds on HF models (Llama: an output
transform and the RMSNorm weights as unwrapped parameters) and a full traced forward.
Uniform per-layer widths keep the config's `intermediate_size` valid for stock
`from_pretrained`.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from modhifi_core.checks import check_one_given
from modhifi_core.errors import InputError
from modhifi_core.fidelity import DEFAULT_RIDGE
from modhifi_core.pruning.modhifi_p import PruningResult
from modhifi_core.sharding import map_shards

SCORES = ("energy", "greedy", "saliency", "wanda-sp", "fluctuation", "magnitude", "random")
COMPENSATIONS = ("none", "delta", "ls", "bias")
# Config keys that hold a uniform FFN width, per family.
_WIDTH_KEYS = ("intermediate_size", "n_inner")


@dataclass
class FFNBlock:
    """One FFN: `producers` make the neurons (their output rows), `down` reads them (its
    input columns). Names are module paths, so a block found on one model applies to a copy."""

    name: str
    producer_names: list[str]
    down_name: str
    width: int


@dataclass
class FFNStatistics:
    """Streaming sums over all tokens of the down projection's input `h` (float64):
    `gram = Σ h hᵀ` `(n, n)`, `total = Σ h` `(n,)`, `tokens` the count. Merge by adding."""

    gram: Tensor
    total: Tensor
    tokens: int = 0
    product_dtype: torch.dtype = torch.float32

    @classmethod
    def empty(cls, width: int, product_dtype: torch.dtype = torch.float32) -> FFNStatistics:
        zeros = torch.zeros(width, width, dtype=torch.float64)
        return cls(zeros, torch.zeros(width, dtype=torch.float64), 0, product_dtype)

    def add(self, h: Tensor) -> None:
        """Add one batch. Each batch's `hᵀh` is formed in `product_dtype` (float32 by
        default: float64 GEMMs cost ~2x on CPU, and a batch's relative rounding ~1e-6 is far
        below the 1e-4 ridge) and added to the float64 accumulators."""
        h = h.reshape(-1, h.shape[-1])
        if self.gram.device != h.device:  # the sums live where the model computes
            self.gram, self.total = self.gram.to(h.device), self.total.to(h.device)
        low = h.to(self.product_dtype)
        self.gram.add_(low.T @ low)  # promoted to float64 elementwise: no (n, n) float64 temporary
        self.total += h.double().sum(0)
        self.tokens += h.shape[0]

    def __add__(self, other: FFNStatistics) -> FFNStatistics:
        """The statistics of both token sets (the sums add)."""
        return FFNStatistics(
            self.gram + other.gram, self.total + other.total, self.tokens + other.tokens, self.product_dtype
        )

    @property
    def second_moment(self) -> Tensor:
        """`E[h hᵀ]`."""
        return self.gram / max(self.tokens, 1)

    @property
    def mean(self) -> Tensor:
        """`E[h]`."""
        return self.total / max(self.tokens, 1)


# ---------------------------------------------------------------- block discovery and weights


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 `Conv1D`: a Linear with the weight stored `(in, out)`."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _ffn_parts(module: nn.Module) -> tuple[list[str], str] | None:
    kids = dict(module.named_children())
    if "down_proj" in kids and "up_proj" in kids:
        return [n for n in ("gate_proj", "up_proj") if n in kids], "down_proj"
    if "c_fc" in kids and "c_proj" in kids:
        return ["c_fc"], "c_proj"
    if "fc1" in kids and "fc2" in kids:
        return ["fc1"], "fc2"
    inter, out = kids.get("intermediate"), kids.get("output")
    if inter is not None and out is not None and hasattr(inter, "dense") and hasattr(out, "dense"):
        return ["intermediate.dense"], "output.dense"
    return None


def find_ffn_blocks(model: nn.Module) -> list[FFNBlock]:
    """Every FFN of `model`, in module order. Raises InputError when there is none."""
    modules = dict(model.named_modules())
    blocks = []
    for name, module in model.named_modules():
        parts = _ffn_parts(module)
        if parts is None:
            continue
        prefix = f"{name}." if name else ""
        producers = [prefix + p for p in parts[0]]
        down = prefix + parts[1]
        width = down_matrix(modules[down]).shape[1]
        if any(neuron_rows(modules[p]).shape[0] != width for p in producers):
            continue
        blocks.append(FFNBlock(name, producers, down, width))
    if not blocks:
        raise InputError(
            f"{type(model).__name__} has no FFN this pruner knows (gate/up/down_proj, c_fc/c_proj, fc1/fc2, "
            "intermediate.dense/output.dense)"
        )
    return blocks


def neuron_rows(layer: nn.Module) -> Tensor:
    """A producer's weight as `(neurons, in)` (a view)."""
    return layer.weight.T if _is_conv1d(layer) else layer.weight


def down_matrix(layer: nn.Module) -> Tensor:
    """The down projection's weight as `(out, neurons)` (a view)."""
    return layer.weight.T if _is_conv1d(layer) else layer.weight


# ---------------------------------------------------------------- statistics


class _Captured(Exception):
    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args_, self.kwargs_ = args, kwargs


def _layer_index(block: FFNBlock, modules: dict[str, nn.Module]) -> tuple[str, int] | None:
    """(name of the ModuleList holding the block's transformer layer, the layer's index)."""
    parts = block.name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:i])
        if parts[i].isdigit() and isinstance(modules.get(parent), nn.ModuleList):
            return parent, int(parts[i])
    return None


def _forward_kwargs(model: nn.Module, batch: dict[str, Tensor]) -> dict:
    kwargs = dict(batch)
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    return kwargs


def as_batches(calibration: Tensor | Iterable[dict[str, Tensor]], batch_size: int = 4) -> list[dict[str, Tensor]]:
    """Calibration as model-input dicts: an integer tensor `(N, L)` is `input_ids`, a float
    tensor `(N, C, H, W)` is `pixel_values`, split into batches of `batch_size`; an iterable
    of dicts is taken as is."""
    if isinstance(calibration, Tensor):
        key = "pixel_values" if calibration.is_floating_point() else "input_ids"
        return [{key: chunk} for chunk in calibration.split(batch_size)]
    batches = list(calibration)
    if not batches or not all(isinstance(b, dict) for b in batches):
        raise InputError("calibration must be a non-empty tensor or a list of model-input dicts")
    return batches


@torch.no_grad()
def collect_ffn_statistics(
    model: nn.Module,
    calibration: Tensor | Iterable[dict[str, Tensor]],
    blocks: list[FFNBlock] | None = None,
    *,
    batch_size: int = 4,
    layerwise: bool = True,
    on_layer: Callable[[FFNBlock, FFNStatistics], bool] | None = None,
    product_dtype: torch.dtype = torch.float32,
    executor: Executor | None = None,
    shards: int | None = None,
) -> dict[str, FFNStatistics]:
    """Streaming statistics of every FFN block's down-projection input, keyed by block name.

    `layerwise` (default, when all blocks sit one per layer in one `nn.ModuleList`): the
    inputs of the first layer are captured once, then each layer is run on all batches
    with only its block hooked, so memory holds one Gram plus the hidden states
    `(N, L, d)`. `on_layer(block, stats)` is called after each layer's statistics are
    complete; if it returns True (it changed the layer, e.g. pruned it) the layer is re-run
    so the next layer sees the changed outputs (sequential pruning). Otherwise (or if the
    blocks do not sit in one layer list, e.g. Swin's stages) one pass hooks every block.
    `product_dtype`: see `FFNStatistics.add`.

    `executor` (any `concurrent.futures.Executor`, e.g. a Dask client's): the batches are
    cut into `shards` contiguous shards (default two per worker, `sharding.map_shards`),
    each task collects its shard's statistics with this function, and the sums are added
    in float64 — the single-process result up to the order of the additions. Needs the
    calibration as one token-id or pixel tensor and no `on_layer`."""
    if executor is not None:
        if on_layer is not None or not isinstance(calibration, Tensor):
            raise InputError("sharded FFN statistics need the calibration as one tensor and no on_layer")
        args = ([b.name for b in blocks] if blocks else None, layerwise, product_dtype)
        results = map_shards(executor, _shard_statistics, model, calibration.split(batch_size), args, shards)
        return {name: sum((r[name] for r in results[1:]), results[0][name]) for name in results[0]}
    blocks = blocks or find_ffn_blocks(model)
    batches = as_batches(calibration, batch_size)
    modules = dict(model.named_modules())
    located = [_layer_index(b, modules) for b in blocks]
    lists = {loc[0] for loc in located if loc is not None}
    one_list = None not in located and len(lists) == 1 and len({loc[1] for loc in located}) == len(blocks)
    was_training = model.training
    model.eval()
    try:
        if layerwise and one_list:
            return _collect_layerwise(model, batches, blocks, modules[lists.pop()], located, on_layer, product_dtype)
        if on_layer is not None:
            raise InputError("sequential pruning needs the FFN blocks in one layer list (layer by layer)")
        return _collect_all_at_once(model, batches, blocks, modules, product_dtype)
    finally:
        model.train(was_training)


def _shard_statistics(
    model: nn.Module, batches: list[Tensor], names: list[str] | None, layerwise: bool, product_dtype: torch.dtype
) -> dict[str, FFNStatistics]:
    """One sharded task: the statistics of `batches` (as the caller cut them) for `names`."""
    blocks = [b for b in find_ffn_blocks(model) if names is None or b.name in names]
    inputs = [as_batches(batch, len(batch))[0] for batch in batches]
    return collect_ffn_statistics(model, inputs, blocks, layerwise=layerwise, product_dtype=product_dtype)


def _hook(stats: FFNStatistics) -> Callable:
    def record(_module: nn.Module, inputs: tuple) -> None:
        stats.add(inputs[0])

    return record


def _collect_all_at_once(
    model: nn.Module, batches: list, blocks: list[FFNBlock], modules: dict, product_dtype: torch.dtype
) -> dict:
    stats = {b.name: FFNStatistics.empty(b.width, product_dtype) for b in blocks}
    handles = [modules[b.down_name].register_forward_pre_hook(_hook(stats[b.name])) for b in blocks]
    try:
        for batch in batches:
            model(**_forward_kwargs(model, batch))
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _capture_first_layer_inputs(model: nn.Module, layers: nn.ModuleList, batches: list) -> list[list]:
    def stop(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise _Captured(args, kwargs)

    handle = layers[0].register_forward_pre_hook(stop, with_kwargs=True)
    captured = []
    try:
        for batch in batches:
            try:
                model(**_forward_kwargs(model, batch))
            except _Captured as hit:
                captured.append([hit.args_, hit.kwargs_])
            else:
                raise InputError("the model's forward never reached its first transformer layer")
    finally:
        handle.remove()
    return captured


def _run_layer(layer: nn.Module, captured: list[list]) -> list[Tensor]:
    outputs = []
    for args, kwargs in captured:
        out = layer(*args, **kwargs)
        outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outputs


def _collect_layerwise(
    model: nn.Module,
    batches: list,
    blocks: list[FFNBlock],
    layers: nn.ModuleList,
    located: list,
    on_layer: Callable,
    product_dtype: torch.dtype,
) -> dict:
    modules = dict(model.named_modules())
    by_index = {loc[1]: b for b, loc in zip(blocks, located)}
    captured = _capture_first_layer_inputs(model, layers, batches)
    stats = {}
    for index in range(max(by_index) + 1):
        layer, block, handle = layers[index], by_index.get(index), None
        if block is not None:
            stats[block.name] = FFNStatistics.empty(block.width, product_dtype)
            handle = modules[block.down_name].register_forward_pre_hook(_hook(stats[block.name]))
        try:
            outputs = _run_layer(layer, captured)
        finally:
            if handle is not None:
                handle.remove()
        if block is not None and on_layer is not None and on_layer(block, stats[block.name]):
            outputs = _run_layer(layer, captured)
        for entry, hidden in zip(captured, outputs):
            args, kwargs = entry
            if args:
                entry[0] = (hidden, *args[1:])
            else:
                kwargs["hidden_states"] = hidden
    return stats


# ---------------------------------------------------------------- scores


def ffn_scores(
    model: nn.Module,
    block: FFNBlock,
    stats: FFNStatistics,
    score: str = "energy",
    seed: int = 0,
    keep: int | None = None,
    ridge: float = DEFAULT_RIDGE,
) -> Tensor:
    """One importance per neuron of `block` `(width,)` float64, higher = keep.

    `energy` `Q_jj = ‖W[:, j]‖² E h_j²` (the paper's LLM score, method.md §3b);
    `greedy` the order of greedy removal with refit (`greedy_removal_order`: the neuron
    whose removal, after the least-squares refit of the rest, loses the least output
    energy goes first; stopped once only `keep` remain, all of them when `keep` is None);
    `saliency` `R̃_j = Σ_c E[y_c W_cj h_j] = (WᵀW ⊙ E[h hᵀ])` summed over rows;
    `wanda-sp` `‖W[:, j]‖ · sqrt(E h_j²)` (ranks like energy); `fluctuation` (FLAP)
    `Var(h_j) ‖W[:, j]‖²`; `magnitude` the L2 norm of the neuron's weights in every
    producer row and the down column (weights only); `random` seeded uniform."""
    modules = dict(model.named_modules())
    weight = down_matrix(modules[block.down_name]).detach().double()
    column_energy = weight.pow(2).sum(0)
    diagonal = stats.gram.diagonal() / max(stats.tokens, 1)  # E h_j², as second_moment's diagonal
    if score == "energy":
        return column_energy * diagonal
    if score == "greedy":
        affine = dict(model.named_modules())[block.down_name].bias is not None
        second = stats.second_moment
        gram = second - torch.outer(stats.mean, stats.mean) if affine else second
        removals = block.width - 1 if keep is None else block.width - keep
        return removal_rank(greedy_removal_order(weight, gram, removals, ridge), block.width)
    if score == "wanda-sp":
        return column_energy.sqrt() * diagonal.clamp_min(0).sqrt()
    if score == "saliency":
        return (weight * (weight @ stats.second_moment)).sum(0)
    if score == "fluctuation":
        return column_energy * (diagonal - stats.mean.pow(2)).clamp_min(0)
    if score == "magnitude":
        rows = sum(neuron_rows(modules[p]).detach().double().pow(2).sum(1) for p in block.producer_names)
        return (rows + column_energy).sqrt()
    if score == "random":
        generator = torch.Generator().manual_seed(seed * 100003 + block.width + hash_name(block.name))
        return torch.rand(block.width, generator=generator, dtype=torch.float64)
    raise InputError(f"unknown FFN score {score!r}; choose one of {', '.join(SCORES)}")


def greedy_removal_order(
    w: Tensor, gram: Tensor, removals: int, ridge: float = DEFAULT_RIDGE, step: int = 16
) -> Tensor:
    """The first `removals` columns of `w` `(out, n)` removed greedily, in order (float64).

    Removing column j and refitting the others by least squares on `gram` `(n, n)` loses
    `‖W[:, j]‖² / (G⁻¹)_jj` of output energy (Optimal Brain Surgeon's cost; `G` ridged by
    `λ·mean(diag G)` of the whole block, at least 1e-10 of it so that a rank-deficient or
    all-zero Gram still inverts). Each round removes the `step` cheapest alive columns, then
    refits `W` and downdates `G⁻¹` for them jointly, so every cost is the current one up to
    the `step` columns of one round (`step=1`: exact greedy)."""
    n = gram.shape[0]
    scale = gram.diagonal().mean().clamp_min(torch.finfo(gram.dtype).tiny)
    ridged = gram.clone()
    ridged.diagonal().add_(max(ridge, 1e-10) * scale)
    factor, info = torch.linalg.cholesky_ex(ridged)
    del ridged  # (n, n) float64 each: a 1B model's FFN Gram is 250 MB
    if int(info) != 0:
        raise InputError("the FFN statistics are not a Gram matrix (not positive semi-definite): recollect them")
    inverse = torch.cholesky_inverse(factor)
    del factor
    w = w.clone()
    alive = torch.ones(n, dtype=torch.bool, device=gram.device)
    order: list[Tensor] = []
    done = 0
    while done < removals:
        cost = w.pow(2).sum(0) / inverse.diagonal()
        cost[~alive] = float("inf")
        chosen = torch.sort(cost, stable=True).indices[: min(step, removals - done)]
        done += len(chosen)
        block_inverse = torch.linalg.inv(inverse[chosen][:, chosen])
        rows = block_inverse @ inverse[chosen]  # (|S|, n)
        w -= w[:, chosen] @ rows
        inverse -= inverse[:, chosen] @ rows
        alive[chosen] = False
        order.append(chosen)
    return torch.cat(order) if order else torch.empty(0, dtype=torch.long, device=gram.device)


def removal_rank(order: Tensor, width: int) -> Tensor:
    """Scores `(width,)` float64 from a removal order: the i-th removed gets i, never-removed
    neurons `len(order)` (all tie above every removed one; `kept_neurons` breaks ties by index)."""
    scores = torch.full((width,), float(len(order)), dtype=torch.float64, device=order.device)
    scores[order] = torch.arange(len(order), dtype=torch.float64, device=order.device)
    return scores


def hash_name(name: str) -> int:
    """A process-independent small integer from a module name (Python's hash is salted)."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % 1_000_003


def kept_neurons(scores: Tensor, keep: int) -> Tensor:
    """Indices of the `keep` highest scores, sorted ascending (ties: lower index first)."""
    order = torch.sort(-scores, stable=True).indices[:keep]
    return order.sort().values


# ---------------------------------------------------------------- compensation


@torch.no_grad()
def compensate(
    model: nn.Module,
    block: FFNBlock,
    stats: FFNStatistics,
    kept: Tensor,
    compensation: str = "ls",
    ridge: float = DEFAULT_RIDGE,
    consume: bool = False,
) -> None:
    """Change the down projection in place so that its output on the kept neurons
    reconstructs the dense output (before the dropped columns are removed).
    `consume`: `stats` are not used afterwards; `ls` drops their Gram (`stats.gram` becomes
    empty) as soon as it has taken the blocks it needs (memory, layer by layer).

    `ls`: `W'[:, K] = W[:, K] + W[:, K̄] G[K̄, K] (G[K, K] + λ·m·I)⁻¹` with `G = E[h hᵀ]` and
    `m = mean diag G[K, K]` (the ridge least-squares optimum; where the layer has a bias
    the fit is affine: `G` centred and the bias absorbs the mean). `delta`: the paper's
    δ* per (output c, neuron j), `δ_c = 1 + (Q_c[K,K] + λ·m_c·I)⁻¹ Q_c[K,K̄] 1` with
    `Q_c = diag(w_c) G diag(w_c)` — with λ = 0 it equals `ls`; it costs one |K|×|K| solve per
    output. `bias` (FLAP): `b' = b + W[:, K̄] E[h_K̄]`; the layer must have a bias (see
    `ensure_down_bias`). `none`: nothing."""
    if compensation == "none":
        return
    layer = dict(model.named_modules())[block.down_name]
    weight = down_matrix(layer)
    w = weight.double()
    dropped = _complement(kept, block.width)
    mean = stats.mean
    if compensation == "bias":
        if layer.bias is None:
            raise InputError(f"{block.down_name} has no bias for FLAP compensation")
        layer.bias += (w[:, dropped] @ mean[dropped]).to(layer.bias.dtype)
        return
    if compensation == "ls":
        affine = layer.bias is not None
        del w  # the refit reads the columns it needs (a 1B model's down projection: 92 MB in float64)
        moments = _MomentRows(stats, affine, consume)
        refit = weight[:, kept].double() + least_squares_correction(weight, moments, kept, dropped, ridge)
        if affine:
            w = weight.double()
            layer.bias += (w @ mean - refit @ mean[kept]).to(layer.bias.dtype)
    elif compensation == "delta":
        refit = w[:, kept] * delta_star(w, stats.second_moment, kept, dropped, ridge)
    else:
        raise InputError(f"unknown FFN compensation {compensation!r}; choose one of {', '.join(COMPENSATIONS)}")
    weight[:, kept] = refit.to(weight.dtype)


def _complement(kept: Tensor, width: int) -> Tensor:
    mask = torch.ones(width, dtype=torch.bool, device=kept.device)
    mask[kept] = False
    return mask.nonzero().squeeze(1)


class _MomentRows:
    """`E[h hᵀ]` of `stats` (centred when `affine`), indexed `[rows, cols]` without forming
    the whole `(n, n)` matrix: each entry is computed as the whole matrix would hold it
    (`Σ h hᵀ / tokens − mean meanᵀ`), so the blocks are bitwise those of the full one."""

    def __init__(self, stats: FFNStatistics, affine: bool, consume: bool = False) -> None:
        self.stats, self.affine, self.consume = stats, affine, consume

    def done(self) -> None:
        """No more blocks will be taken: drop the Gram if it is ours to consume."""
        if self.consume:
            self.stats.gram = torch.empty(0, dtype=self.stats.gram.dtype)

    def __getitem__(self, index: tuple[Tensor, Tensor]) -> Tensor:
        rows, cols = index
        gram = self.stats.gram
        block = torch.empty(len(rows), len(cols), dtype=gram.dtype, device=gram.device)
        for start in range(0, len(rows), 256):  # row chunks: no (rows, n) or index-grid temporaries
            block[start : start + 256] = gram.index_select(0, rows[start : start + 256]).index_select(1, cols)
        block.div_(max(self.stats.tokens, 1))
        if self.affine:
            mean = self.stats.mean
            block -= torch.outer(mean[rows], mean[cols])
        return block


def least_squares_correction(
    w: Tensor, gram: Tensor | _MomentRows, kept: Tensor, dropped: Tensor, ridge: float
) -> Tensor:
    """`W[:, K̄] G[K̄, K] (G[K, K] + λ·mean(diag G[K, K])·I)⁻¹` `(out, |K|)` in float64.
    Only the `[K, K]` and `[K, K̄]` blocks of `gram` are formed (memory: one layer's Gram
    of a 1B model's FFN is 250 MB in float64; `_MomentRows.done` may drop it once both are
    taken). `w` may be float32: the columns used are taken to float64 first."""
    gkk = gram[kept[:, None], kept] if isinstance(gram, Tensor) else gram[kept, kept]
    side = gram[kept[:, None], dropped] if isinstance(gram, Tensor) else gram[kept, dropped]
    if isinstance(gram, _MomentRows):
        gram.done()
    gkk.diagonal().add_(ridge * gkk.diagonal().mean())
    rhs = side @ w[:, dropped].double().T  # (|K|, out)
    del side
    factor, info = torch.linalg.cholesky_ex(gkk)
    if int(info) == 0:
        del gkk
        return torch.cholesky_solve(rhs, factor).T
    return torch.linalg.lstsq(gkk, rhs).solution.T


def delta_star(w: Tensor, gram: Tensor, kept: Tensor, dropped: Tensor, ridge: float, chunk: int = 64) -> Tensor:
    """The paper's δ* `(out, |K|)` for every output c: `(Q_c[K,K] + λ·m_c·I)⁻¹ Q_c[K,:] 1`
    with `Q_c = diag(w_c) G diag(w_c)` and `m_c = mean diag Q_c[K, K]`."""
    gkk = gram[kept][:, kept]
    gka = gram[kept]
    deltas = []
    for start in range(0, w.shape[0], chunk):
        wc = w[start : start + chunk]  # (c, n)
        wk = wc[:, kept]
        q_kk = wk.unsqueeze(2) * gkk * wk.unsqueeze(1)  # (c, |K|, |K|)
        q_k1 = wk * (wc @ gka.T)  # (c, |K|) = (Q_c[K, :] 1)
        shift = ridge * q_kk.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)
        q_kk = q_kk + shift[:, None, None] * torch.eye(len(kept), dtype=w.dtype, device=w.device)
        deltas.append(torch.linalg.lstsq(q_kk, q_k1.unsqueeze(2)).solution.squeeze(2))
    return torch.cat(deltas)


def ensure_down_bias(model: nn.Module, blocks: list[FFNBlock]) -> None:
    """Give every down projection a bias (zeros) so FLAP compensation has one to change,
    keeping the saved config loadable: Llama-style configs get `mlp_bias = True` and zero
    biases on the producers too (stock Llama then builds every MLP Linear with a bias).
    Raises InputError for a family whose config cannot declare an MLP bias (Qwen2, Mistral)."""
    modules = dict(model.named_modules())
    missing = [b for b in blocks if modules[b.down_name].bias is None]
    if not missing:
        return
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "mlp_bias"):
        kind = getattr(config, "model_type", type(model).__name__)
        raise InputError(f"compensation 'bias' needs an MLP bias and {kind} has no config switch for one")
    for block in blocks:
        for name in [*block.producer_names, block.down_name]:
            layer = modules[name]
            if layer.bias is None:
                rows = layer.weight.shape[0]
                layer.bias = nn.Parameter(torch.zeros(rows, dtype=layer.weight.dtype, device=layer.weight.device))
    config.mlp_bias = True


# ---------------------------------------------------------------- removal


@torch.no_grad()
def remove_neurons(model: nn.Module, block: FFNBlock, kept: Tensor) -> None:
    """Keep only neurons `kept` of `block`: slice every producer's rows (and bias) and the
    down projection's columns, in place."""
    modules = dict(model.named_modules())
    for name in block.producer_names:
        layer = modules[name]
        if _is_conv1d(layer):
            layer.weight = nn.Parameter(layer.weight[:, kept].clone())
            layer.nf = len(kept)
        else:
            layer.weight = nn.Parameter(layer.weight[kept].clone())
            layer.out_features = len(kept)
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias[kept].clone())
    down = modules[block.down_name]
    if _is_conv1d(down):
        down.weight = nn.Parameter(down.weight[kept].clone())
    else:
        down.weight = nn.Parameter(down.weight[:, kept].clone())
        down.in_features = len(kept)
    block.width = len(kept)


def set_config_width(model: nn.Module, widths: list[int]) -> None:
    """Write the uniform FFN width into the model's config (`intermediate_size`, GPT-2's
    `n_inner`). Raises InputError for unequal widths (stock configs hold one number)."""
    config = getattr(model, "config", None)
    if config is None:
        return
    if len(set(widths)) != 1:
        raise InputError(f"FFN widths differ across layers ({min(widths)}..{max(widths)}); stock configs hold one")
    for key in _WIDTH_KEYS:
        if hasattr(config, key):
            setattr(config, key, widths[0])
            return
    if hasattr(config, "mlp_ratio") and hasattr(config, "embed_dim"):
        raise InputError("Swin-style configs size the FFN by mlp_ratio; set it from the kept widths by hand")


# ---------------------------------------------------------------- sizes and targets


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def _linear_shapes(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if _is_conv1d(module):
        return module.weight.shape[0], module.nf
    return None


def flops_per_token(model: nn.Module, seq_len: int) -> int:
    """Multiply-adds ×2 per token at sequence length `seq_len`: every Linear/Conv1D
    (`2·in·out`, the LM head included, embedding lookups excluded; those inside a
    `pooler` — BERT's, which runs on one token per sequence — once per sequence) plus
    attention's `QKᵀ` and `AV` over the full length (`4·seq_len·heads·head_dim` per
    layer; from the config, omitted when it does not say). Equals `FlopCounterMode`'s
    count of one `seq_len` forward (attention unfused) divided by `seq_len`."""
    pooled = {
        id(m) for name, pooler in model.named_modules() if name.rpartition(".")[2] == "pooler" for m in pooler.modules()
    }
    linear = sum(
        2 * s[0] * s[1] / (seq_len if id(m) in pooled else 1)
        for m in model.modules()
        if (s := _linear_shapes(m)) is not None
    )
    config = getattr(model, "config", None)
    layers = _config_value(config, "num_hidden_layers", "n_layer")
    heads = _config_value(config, "num_attention_heads", "n_head")
    hidden = _config_value(config, "hidden_size", "n_embd")
    if not (layers and heads and hidden) or isinstance(layers, list):
        return round(linear)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return round(linear + 4 * seq_len * layers * heads * head_dim)


def _config_value(config: object, *keys: str) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if value is not None:
            return value
    return None


def _per_neuron(model: nn.Module, block: FFNBlock) -> tuple[int, int]:
    """(parameters, FLOPs per token) that one neuron of `block` costs."""
    modules = dict(model.named_modules())
    params = flops = 0
    for name in block.producer_names:
        layer = modules[name]
        fan_in = neuron_rows(layer).shape[1]
        params += fan_in + (layer.bias is not None)
        flops += 2 * fan_in
    fan_out = down_matrix(modules[block.down_name]).shape[0]
    return params + fan_out, flops + 2 * fan_out


def widths_for_target(
    model: nn.Module,
    blocks: list[FFNBlock],
    *,
    fraction: float | None = None,
    target_params: float | None = None,
    target_flops: float | None = None,
    seq_len: int = 256,
    round_to: int = 1,
    reference: int | None = None,
) -> list[int]:
    """Kept width per block, the same fraction for every block. `fraction`: of neurons
    removed per layer. `target_params` / `target_flops`: the largest uniform width whose
    whole-model parameters / FLOPs per token (at `seq_len`) are at most that fraction of
    the dense ones (`reference`: the dense total when `model` already differs from it,
    e.g. biases added); InputError when removing every FFN neuron cannot reach it."""
    check_one_given(fraction=fraction, target_params=target_params, target_flops=target_flops)
    if fraction is not None:
        if not 0 <= fraction < 1:
            raise InputError(f"fraction removed must be in [0, 1), got {fraction}")
        return [_rounded(b.width * (1 - fraction), b.width, round_to) for b in blocks]
    target = target_params if target_params is not None else target_flops
    if not 0 < target <= 1:
        raise InputError(f"target must be in (0, 1], got {target}")
    costs = [_per_neuron(model, b)[0 if target_params is not None else 1] for b in blocks]
    current = count_parameters(model) if target_params is not None else flops_per_token(model, seq_len)
    dense = reference if reference is not None else current
    widest = max(b.width for b in blocks)

    def total(keep: float) -> tuple[int, list[int]]:
        widths = [_rounded(b.width * keep, b.width, round_to) for b in blocks]
        return current - sum((b.width - w) * c for b, w, c in zip(blocks, widths, costs)), widths

    if total(1 / widest)[0] > target * dense:
        floor = total(1 / widest)[0] / dense
        raise InputError(f"target {target} is out of reach by FFN pruning alone (at most down to {floor:.3f})")
    best = total(1 / widest)[1]
    for step in range(1, widest + 1):
        value, widths = total(step / widest)
        if value <= target * dense:
            best = widths
    return best


def _rounded(value: float, width: int, round_to: int) -> int:
    kept = int(math.floor(value + 1e-9))
    if round_to > 1:
        kept = (kept // round_to) * round_to
    return min(width, max(1, kept))


# ---------------------------------------------------------------- the one call


@dataclass
class _Plan:
    score: str
    compensation: str
    ridge: float
    seed: int
    widths: dict[str, int] = field(default_factory=dict)
    scores: dict[str, Tensor] | None = None  # given per block: not recomputed
    consume: bool = False  # each block's statistics are used once (compensate's `consume`)
    timings: dict[str, float] = field(default_factory=lambda: {"scoring_s": 0.0, "compensation_s": 0.0})


def _prune_block(model: nn.Module, block: FFNBlock, stats: FFNStatistics, plan: _Plan) -> bool:
    remove_neurons(model, block, _refit_block(model, block, stats, plan))
    return True


def _refit_block(model: nn.Module, block: FFNBlock, stats: FFNStatistics, plan: _Plan) -> Tensor:
    """Score `block`, choose the kept neurons and compensate the down projection for the
    others (the neurons are not removed yet); returns the kept indices."""
    start = time.perf_counter()
    keep = plan.widths[block.name]
    if plan.scores is not None:
        scores = plan.scores[block.name]
    else:
        scores = ffn_scores(model, block, stats, plan.score, plan.seed, keep=keep, ridge=plan.ridge)
    kept = kept_neurons(scores, keep)
    middle = time.perf_counter()
    compensate(model, block, stats, kept, plan.compensation, plan.ridge, consume=plan.consume)
    plan.timings["scoring_s"] += middle - start
    plan.timings["compensation_s"] += time.perf_counter() - middle
    return kept


def _check_given_scores(scores: dict[str, Tensor], blocks: list[FFNBlock]) -> None:
    for block in blocks:
        given = scores.get(block.name)
        if given is None or tuple(given.shape) != (block.width,):
            shape = None if given is None else tuple(given.shape)
            raise InputError(f"given scores for {block.name} have shape {shape}, the block has {block.width} neurons")


def prune_transformer(
    model: nn.Module,
    calibration: Tensor | Iterable[dict[str, Tensor]] | None = None,
    *,
    fraction: float | None = None,
    target_params: float | None = None,
    target_flops: float | None = None,
    seq_len: int | None = None,
    score: str = "energy",
    compensation: str = "ls",
    ridge: float = DEFAULT_RIDGE,
    sequential: bool = False,
    round_to: int = 1,
    seed: int = 0,
    batch_size: int = 4,
    statistics: dict[str, FFNStatistics] | None = None,
    scores: dict[str, Tensor] | None = None,
) -> PruningResult:
    """Remove FFN neurons of a transformer physically; the input model is untouched.

    Exactly one target: `fraction` (of FFN neurons removed in every layer),
    `target_params` (fraction of the whole model's parameters that remains) or
    `target_flops` (fraction of FFLOPs per token at `seq_len`, default the calibration
    length, else 256). Every layer keeps the same width (the config stays stock).
    `score` ∈ SCORES, `compensation` ∈ COMPENSATIONS (`ls` default; `bias` adds a bias where
    the family's config can declare one). Statistics come from `calibration` (token ids
    `(N, L)`, pixel values, or model-input dicts; `batch_size` rows a forward) or are given
    as `statistics` (from `collect_ffn_statistics` on this dense model, reusable across
    scores and compensations). `scores`: `ffn_scores` of every block under `score`
    computed beforehand (e.g. the score stage's file; `greedy` ones with `keep=None`, whose
    order's first removals are those of any narrower run), used instead of ranking again.
    `sequential`: re-collect each layer's statistics on the
    outputs of the already-pruned layers below it (needs `calibration`).

    Report: `params_*`, `flops_*` (per token at `seq_len`), their ratios, `widths`,
    `score`, `compensation`, `statistics_s`, `scoring_s`, `compensation_s`, `seconds`."""
    started = time.perf_counter()
    if score not in SCORES:
        raise InputError(f"unknown FFN score {score!r}; choose one of {', '.join(SCORES)}")
    if compensation not in COMPENSATIONS:
        raise InputError(f"unknown FFN compensation {compensation!r}; choose one of {', '.join(COMPENSATIONS)}")
    if scores is not None and sequential:
        raise InputError("given scores cannot be sequential: each layer's scores change with the layers below")
    if calibration is None and (statistics is None or sequential):
        raise InputError("prune_transformer needs calibration data (or statistics, when not sequential)")
    batches = as_batches(calibration, batch_size) if calibration is not None else None
    if seq_len is None:
        seq_len = _batch_length(batches) if batches else 256
    pruned = copy.deepcopy(model).eval()
    blocks = find_ffn_blocks(pruned)
    dense_params, dense_flops = count_parameters(model), flops_per_token(model, seq_len)
    if compensation == "bias":
        ensure_down_bias(pruned, blocks)
    widths = widths_for_target(
        pruned,
        blocks,
        fraction=fraction,
        target_params=target_params,
        target_flops=target_flops,
        seq_len=seq_len,
        round_to=round_to,
        reference=dense_params if target_params is not None else dense_flops,
    )
    if scores is not None:
        _check_given_scores(scores, blocks)
    plan = _Plan(score, compensation, ridge, seed, {b.name: w for b, w in zip(blocks, widths)}, scores)
    stats_start = time.perf_counter()
    if sequential:
        collect_ffn_statistics(pruned, batches, blocks, on_layer=lambda b, s: _prune_block(pruned, b, s, plan))
        statistics_s = time.perf_counter() - stats_start - plan.timings["scoring_s"] - plan.timings["compensation_s"]
    else:
        if statistics is None:
            statistics = collect_ffn_statistics(pruned, batches, blocks)
        statistics_s = time.perf_counter() - stats_start
        missing = [b.name for b in blocks if b.name not in statistics]
        if missing:
            raise InputError(f"statistics lack FFN blocks {missing[:3]}")
        for block in blocks:
            _prune_block(pruned, block, statistics[block.name], plan)
    set_config_width(pruned, [b.width for b in blocks])
    params, flops = count_parameters(pruned), flops_per_token(pruned, seq_len)
    report = {
        "kind": "ffn",
        "score": score,
        "compensation": compensation,
        "ridge": ridge,
        "sequential": sequential,
        "seq_len": seq_len,
        "params_dense": dense_params,
        "params_pruned": params,
        "params_ratio": params / dense_params,
        "flops_dense": dense_flops,
        "flops_pruned": flops,
        "flops_ratio": flops / dense_flops,
        "ffn_width_dense": [w for w in (_dense_width(model, b) for b in blocks)],
        "widths": [b.width for b in blocks],
        "statistics_s": statistics_s,
        **plan.timings,
        "seconds": time.perf_counter() - started,
    }
    return PruningResult(pruned, report)


def _dense_width(model: nn.Module, block: FFNBlock) -> int:
    return down_matrix(dict(model.named_modules())[block.down_name]).shape[1]


def _batch_length(batches: list[dict[str, Tensor]]) -> int:
    ids = batches[0].get("input_ids")
    return int(ids.shape[1]) if ids is not None else 256
