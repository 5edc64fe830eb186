"""Streaming activation statistics of prunable layers (method.md §1, "the efficient form").

For a layer with weight `W[c, i, k]` (`k` runs over the `kh*kw` kernel offsets; a Linear
is a 1x1 conv whose positions are tokens or batch rows) and its input unfolded with the
layer's own kernel/stride/padding/dilation into patches `U_p[i, k]`, one pass over the
calibration data accumulates, as float64 **sums** over samples and output positions `p`:

    cross[c, i, k]     = Σ Y_c,p U_p[i, k]          (M = E[U Yᵀ] in weight layout, times n)
    gram_diag[i, k, l] = Σ U_p[i, k] U_p[i, l]      (diagonal blocks K_ii of K = E[U Uᵀ], times n)
    output_sq[c]       = Σ Y_c,p²                   (1ᵀ Q_c 1, times n)
    input_sum[i, k]    = Σ U_p[i, k]                (the mean patch ū, times n·P)

where `Y` is the layer's output without its bias. Activations are never stored: memory
is the size of these sums (about one copy of the layer's weight plus `c_in·kk²`), and
statistics of two data shards merge by addition. The full Gram of a kept channel set,
needed only for compensation, comes from a second pass (`collect_kept_gram`).

Both passes take an optional `executor` (any `concurrent.futures.Executor`, e.g. a Dask
`Client.get_executor()` supplied by the orchestration layer): the batches are then cut
into contiguous shards, each shard's sums computed by one task (`modhifi_core.sharding`)
and the float64 results added — equal to the single-process sums up to float64 round-off.

Per-batch products run in the activations' dtype (float32 for a float32 model, so the
pass costs about a forward pass); every accumulator is float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.progress import progress
from modhifi_core.sharding import map_shards

# Unfolded patches are built in chunks of at most this many elements (bounds memory).
_UNFOLD_CHUNK_ELEMENTS = 1 << 24


@dataclass
class LayerStatistics:
    """Float64 sums for one layer over `samples` inputs and `positions` output positions
    in total (`positions = samples · P`). Shapes: `cross (c_out, c_in, kk)`,
    `gram_diag (c_in, kk, kk)`, `output_sq (c_out,)`, `input_sum (c_in, kk)`, with
    `kk = kh·kw` (1 for Linear). Divide by `samples` for per-sample expectations."""

    samples: int
    positions: int
    cross: Tensor
    gram_diag: Tensor
    output_sq: Tensor
    input_sum: Tensor

    def __add__(self, other: LayerStatistics) -> LayerStatistics:
        if self.cross.shape != other.cross.shape or self.gram_diag.shape != other.gram_diag.shape:
            raise InputError(
                f"cannot merge statistics of layers of different shapes {tuple(self.cross.shape)} "
                f"and {tuple(other.cross.shape)}"
            )
        return LayerStatistics(
            self.samples + other.samples,
            self.positions + other.positions,
            self.cross + other.cross,
            self.gram_diag + other.gram_diag,
            self.output_sq + other.output_sq,
            self.input_sum + other.input_sum,
        )

    @property
    def mean_patch(self) -> Tensor:
        """ū, the unfolded input patch averaged over samples and positions: `(c_in, kk)`."""
        return self.input_sum / max(self.positions, 1)


def is_prunable(module: nn.Module) -> bool:
    """Conv2d with groups=1 and zero padding, or Linear: the layers ModHiFi scores."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def prunable_layers(model: nn.Module) -> list[str]:
    """Names of the model's supported layers (Conv2d groups=1 / Linear), in module order."""
    return [name for name, module in model.named_modules() if is_prunable(module)]


def unsupported_layers(model: nn.Module) -> dict[str, str]:
    """Layers ModHiFi cannot score or prune, by name, with the reason (grouped/depthwise
    or non-zero-padded convs, modules of other types that hold their own parameters)."""
    known = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            kind = "depthwise" if module.groups == module.in_channels else "grouped"
            found[name] = f"{kind} conv (groups={module.groups})"
        elif isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            found[name] = f"conv with padding_mode={module.padding_mode!r}"
        elif not isinstance(module, known) and any(True for _ in module.parameters(recurse=False)):
            found[name or "(model)"] = f"custom module {type(module).__name__} with its own parameters"
    return found


def layer_statistics(layer: nn.Module, inputs: Tensor) -> LayerStatistics:
    """Statistics of one layer on a batch of its raw inputs: `(N, c_in, H, W)` for a
    conv, `(N, c_in)` or `(N, T, c_in)` for a Linear."""
    _check_layer(layer, "layer")
    with torch.no_grad():
        return _batch_statistics(layer, inputs, layer(inputs))


def target_statistics(layer: nn.Module, inputs: Tensor, targets: Tensor) -> LayerStatistics:
    """Statistics of `layer` on `inputs` with its output replaced by `targets` (same shape as
    `layer(inputs)`, bias included): `cross` and `output_sq` then describe `targets`. Used to
    refit a layer on changed inputs towards another model's outputs (sequential compensation)."""
    _check_layer(layer, "layer")
    with torch.no_grad():
        return _batch_statistics(layer, inputs, targets)


def collect_statistics(
    model: nn.Module,
    batches: Iterable[Tensor | tuple | list],
    layers: list[str] | None = None,
    centered: bool = False,
    *,
    executor: Executor | None = None,
    shards: int | None = None,
) -> dict[str, LayerStatistics]:
    """Run `model` (eval mode, no gradients) over `batches` and return, for each layer
    named in `layers` (default: every prunable layer), its summed `LayerStatistics`.

    `batches`: image tensors `(N, C, H, W)` or `(images, labels)` pairs. `centered` is
    accepted for symmetry with the scoring functions: the sums already hold the mean
    patch, so centring is applied when scoring. Raises `InputError` for an empty
    calibration set, an unknown or unsupported layer name, or NaN/inf activations
    (naming the first layer whose input is not finite).

    `executor`: run the pass as `shards` tasks on it (default two per worker; see
    `modhifi_core.sharding.map_shards`) and add their sums; `batches` is then read into a
    list first. `None` (default): one pass in this process, and `shards` is ignored.
    """
    del centered  # the sums serve both variants (see docstring)
    names = prunable_layers(model) if layers is None else list(layers)
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise InputError(f"the model has no layer named {name!r}")
        _check_layer(modules[name], name)
    if executor is not None:
        return _add_shards(map_shards(executor, collect_statistics, model, batches, (names,), shards))
    totals: dict[str, LayerStatistics] = {}

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            batch = _batch_statistics(module, args[0], output, name)
            totals[name] = totals[name] + batch if name in totals else batch

        return hook

    _run_hooked(model, batches, {name: hook_for(name) for name in names}, desc="statistics")
    return totals


def collect_kept_gram(
    model: nn.Module,
    batches: Iterable[Tensor | tuple | list],
    kept: dict[str, Tensor],
    *,
    executor: Executor | None = None,
    shards: int | None = None,
) -> dict[str, Tensor]:
    """Second pass for compensation: for each layer name in `kept` (a 1-D index tensor of
    its kept input channels `C`), the float64 sum `Σ U_C,p U_C,pᵀ` over samples and
    positions, shape `(|C|·kk, |C|·kk)` ordered channel-major (`C[0]`'s `kk` offsets first).
    `executor`, `shards`: as in `collect_statistics`."""
    modules = dict(model.named_modules())
    grams: dict[str, Tensor] = {}

    def hook_for(name: str) -> Callable:
        index = kept[name].long()

        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            gram = _kept_gram(module, args[0], index, name)
            grams[name] = grams[name] + gram if name in grams else gram

        return hook

    for name in kept:
        if name not in modules:
            raise InputError(f"the model has no layer named {name!r}")
        _check_layer(modules[name], name)
    if executor is not None:
        return _add_shards(map_shards(executor, collect_kept_gram, model, batches, (kept,), shards))
    _run_hooked(model, batches, {name: hook_for(name) for name in kept}, desc="kept-set Gram")
    return grams


def kept_gram(layer: nn.Module, inputs: Tensor, kept: Tensor) -> Tensor:
    """`collect_kept_gram` for one layer on a batch of its raw inputs."""
    _check_layer(layer, "layer")
    with torch.no_grad():
        return _kept_gram(layer, inputs, torch.as_tensor(kept).long(), "layer")


def _add_shards(parts: list[dict]) -> dict:
    """Per-layer sum of the shards' results, added in shard order (float64 throughout)."""
    total = dict(parts[0])
    for part in parts[1:]:
        for name, value in part.items():
            total[name] = total[name] + value
    return total


# --- one batch ----------------------------------------------------------------------------


def _check_layer(module: nn.Module, name: str) -> None:
    if not is_prunable(module):
        raise InputError(f"layer {name!r} ({type(module).__name__}) is not a supported Conv2d (groups=1) or Linear")


def _run_hooked(model: nn.Module, batches: Iterable, hooks: dict[str, Callable], desc: str) -> None:
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
    was_training = model.training
    device = next(model.parameters()).device
    seen = 0
    model.eval()
    try:
        with torch.no_grad():
            for batch in progress(batches, desc=desc, unit="batch"):
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                if len(images) == 0:
                    continue
                if not torch.isfinite(images).all():
                    raise InputError("calibration images contain NaN or inf")
                model(images.to(device))
                seen += len(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise InputError("calibration data is empty: no images to collect statistics on")


def _check_finite(x: Tensor, name: str) -> None:
    # One reduction first: NaN/inf propagate into the sum; a (rare) overflow is re-checked.
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise InputError(f"non-finite (NaN or inf) activations at the input of layer {name!r}")


def _wide(x: Tensor) -> Tensor:
    """`x` in at least float32: a bfloat16/float16 model's activations are multiplied in
    float32 (one batch's sums stay float32, as a float32 model's do) and summed across
    batches in float64, so the statistics do not depend on the compute dtype beyond its
    rounding of the activations themselves (`tests/test_compute.py` bounds the difference)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _batch_statistics(module: nn.Module, x: Tensor, y: Tensor, name: str = "layer") -> LayerStatistics:
    _check_finite(x, name)
    x, y = _wide(x), _wide(y)
    if module.bias is not None:
        bias = module.bias.to(y.dtype)
        y = y - bias.view(-1, *([1] * (y.ndim - 2))) if isinstance(module, nn.Conv2d) else y - bias
    if isinstance(module, nn.Linear):
        return _linear_statistics(x, y)
    return _conv_statistics(module, x, y)


def _linear_statistics(x: Tensor, y: Tensor) -> LayerStatistics:
    samples = x.shape[0]
    rows = x.reshape(-1, x.shape[-1])
    out = y.reshape(-1, y.shape[-1])
    return LayerStatistics(
        samples=samples,
        positions=rows.shape[0],
        cross=(out.T @ rows).double().unsqueeze(-1),
        gram_diag=(rows * rows).sum(0).double().view(-1, 1, 1),
        output_sq=(out * out).sum(0).double(),
        input_sum=rows.sum(0).double().unsqueeze(-1),
    )


def conv_geometry(module: nn.Conv2d, x: Tensor) -> tuple[Tensor, dict]:
    """The input with any string padding ('same'/'valid') made explicit, and the keyword
    arguments (kernel_size, stride, padding, dilation) that unfold it like the conv."""
    padding = module.padding
    if isinstance(padding, str):
        if padding == "same":
            pads = []
            for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        padding = (0, 0)
    return x, {
        "kernel_size": module.kernel_size,
        "stride": module.stride,
        "padding": padding,
        "dilation": module.dilation,
    }


def _conv_statistics(module: nn.Conv2d, x: Tensor, y: Tensor) -> LayerStatistics:
    x, geometry = conv_geometry(module, x)
    c_out, c_in = module.out_channels, module.in_channels
    kk = module.kernel_size[0] * module.kernel_size[1]
    conv_args = {k: geometry[k] for k in ("stride", "padding", "dilation")}
    y = y.to(x.dtype)
    # Σ_p Y_c,p U_p[i, k] is exactly the conv's weight gradient for grad_output = Y; in full
    # float32 on a GPU too (cuDNN would otherwise round its products to TF32's 10-bit mantissa).
    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled,
        benchmark=torch.backends.cudnn.benchmark,
        deterministic=torch.backends.cudnn.deterministic,
        allow_tf32=False,
    ):
        cross = torch.nn.grad.conv2d_weight(x, (c_out, c_in, *module.kernel_size), y, **conv_args)
    gram_diag, input_sum = _conv_patch_moments(x, geometry, c_in, kk)
    return LayerStatistics(
        samples=x.shape[0],
        positions=y.shape[0] * y.shape[2] * y.shape[3],
        cross=cross.double().reshape(c_out, c_in, kk),
        gram_diag=gram_diag,
        output_sq=(y * y).sum((0, 2, 3)).double(),
        input_sum=input_sum,
    )


def _conv_patch_moments(x: Tensor, geometry: dict, c_in: int, kk: int) -> tuple[Tensor, Tensor]:
    """Σ U_i U_iᵀ per input channel `(c_in, kk, kk)` and Σ U `(c_in, kk)`, float64."""
    if kk == 1 and tuple(geometry["padding"]) == (0, 0):
        strided = x[:, :, :: geometry["stride"][0], :: geometry["stride"][1]]
        gram = (strided * strided).sum((0, 2, 3)).double().view(c_in, 1, 1)
        return gram, strided.sum((0, 2, 3)).double().view(c_in, 1)
    gram = torch.zeros(c_in, kk, kk, dtype=torch.float64, device=x.device)
    total = torch.zeros(c_in, kk, dtype=torch.float64, device=x.device)
    for patches in _unfold_chunks(x, geometry, c_in, kk):  # (n, c_in, kk, P)
        flat = patches.permute(1, 2, 0, 3).reshape(c_in, kk, -1)
        gram += torch.bmm(flat, flat.transpose(1, 2)).double()
        total += flat.sum(-1).double()
    return gram, total


def _unfold_chunks(x: Tensor, geometry: dict, c_in: int, kk: int) -> Iterable[Tensor]:
    positions = 1
    for size, k, s, p, d in zip(
        x.shape[2:], geometry["kernel_size"], geometry["stride"], geometry["padding"], geometry["dilation"]
    ):
        positions *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    step = max(1, _UNFOLD_CHUNK_ELEMENTS // max(1, c_in * kk * positions))
    for start in range(0, x.shape[0], step):
        chunk = F.unfold(x[start : start + step], **geometry)
        yield chunk.view(chunk.shape[0], c_in, kk, -1)


def _kept_gram(module: nn.Module, x: Tensor, index: Tensor, name: str) -> Tensor:
    _check_finite(x, name)
    x = _wide(x)
    if index.numel() == 0:
        return torch.zeros(0, 0, dtype=torch.float64, device=x.device)
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])[:, index]
        return (rows.T @ rows).double()
    x, geometry = conv_geometry(module, x[:, index])
    kk = module.kernel_size[0] * module.kernel_size[1]
    size = len(index) * kk
    total = torch.zeros(size, size, dtype=torch.float64, device=x.device)
    for patches in _unfold_chunks(x, geometry, len(index), kk):
        flat = patches.reshape(patches.shape[0], size, -1).permute(1, 0, 2).reshape(size, -1)
        total += (flat @ flat.T).double()
    return total
