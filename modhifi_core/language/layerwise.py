"""A Hugging Face transformer held one layer at a time: the skeleton on the `meta` device,
the weights read lazily from the source's safetensors, one transformer layer materialised
at a time, and the modified layers written out as they are done.

    streamed = StreamedModel.open(DIR, kind="causal-lm", dtype=torch.float32)
    states = streamed.layer_inputs(batches)          # embeddings run, layer 0's inputs
    for index in range(streamed.depth):
        layer = streamed.load_layer(index)           # this layer's weights, `dtype`
        ... run / prune it ...
        writer.write(streamed.layer_tensors(index))  # in the source's dtypes
        streamed.unload_layer(index)                 # back to meta (its current shapes)

Peak memory is the parts outside the layers that a step needs (the token embedding while
the inputs are captured, the head while logits are taken), one layer, and the hidden
states the caller keeps. The skeleton's parameters are `meta` tensors (shapes only:
parameter counts and FLOPs need no weights); its buffers (e.g. rotary frequencies) are
built for real, as `from_pretrained` builds them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.sources.lazy_weights import LazyWeights


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside is moved to `meta` as it is registered (the
    uninitialised CPU allocation is never touched, so it costs no resident memory);
    buffers stay real. `accelerate.init_empty_weights(include_buffers=False)`, without
    the dependency."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


@dataclass
class StreamedModel:
    """`model`: the skeleton (meta parameters); `layers_name`: its transformer layer list
    (`model.layers`); `weights`: the source's tensors; `dtype`/`device`: what a
    materialised part is computed in; `checkpoint_names`: model parameter name -> the
    checkpoint's name (None: a parameter the source lacks and that starts at zero, e.g. a
    bias added for FLAP compensation)."""

    model: nn.Module
    layers_name: str
    weights: LazyWeights
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_names: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def open(
        cls, folder: str | Path, kind: str = "causal-lm", dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> StreamedModel:
        """The skeleton of the folder's model of `kind` (the class `load_hf` would build)
        over its lazily read safetensors weights."""
        import transformers

        from modhifi_core.sources.huggingface import _model_class

        folder = Path(folder)
        weights = LazyWeights.open(folder)
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        with parameters_on_meta():
            model = _model_class(config, kind)(config)
        return cls.build(model, weights, dtype, device)

    @classmethod
    def build(
        cls, model: nn.Module, weights: LazyWeights, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> StreamedModel:
        """Over a skeleton (or a loaded model: its parameters are sent to `meta`) and weights."""
        model.eval()
        for module in model.modules():
            for key, param in list(module._parameters.items()):
                if param is not None and param.device.type != "meta":
                    module._parameters[key] = nn.Parameter(param.to("meta"), requires_grad=False)
        streamed = cls(model, _layer_list_name(model), weights, dtype, torch.device(device))
        streamed.checkpoint_names = streamed._match_names()
        return streamed

    # ---------------------------------------------------------------- names
    @property
    def layers(self) -> nn.ModuleList:
        return self.model.get_submodule(self.layers_name)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def _match_names(self) -> dict[str, str | None]:
        """Each parameter's name in the checkpoint (as is, or with/without the base model
        prefix, e.g. BERT's `bert.`); tied parameters (an LM head tied to the embedding)
        take the one the checkpoint holds. InputError for a parameter it lacks."""
        prefix = getattr(self.model, "base_model_prefix", "") or ""
        groups: dict[int, list[str]] = {}
        for name, param in self.model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        names: dict[str, str | None] = {}
        for group in groups.values():
            found = next((c for n in group for c in _candidates(n, prefix) if c in self.weights), None)
            if found is None:
                raise InputError(
                    f"the weights lack tensor {group[0]} that {type(self.model).__name__} needs (it would be random)"
                )
            names.update(dict.fromkeys(group, found))
        return names

    def parameter_names(self, index: int | None = None) -> list[str]:
        """The parameters of layer `index`, or (None) those outside every layer."""
        inside = f"{self.layers_name}."
        if index is not None:
            prefix = f"{inside}{index}."
            return [n for n in self.checkpoint_names if n.startswith(prefix)]
        return [n for n in self.checkpoint_names if not n.startswith(inside)]

    def add_missing(self) -> None:
        """Record parameters added to the skeleton since it was opened (e.g.
        `ffn.ensure_down_bias`): they start at zero, the source has none."""
        for name, _ in self.model.named_parameters(remove_duplicate=False):
            self.checkpoint_names.setdefault(name, None)

    # ---------------------------------------------------------------- materialise
    def materialise(self, names: list[str]) -> None:
        """Read `names` (model parameter names) into the model, in `dtype` on `device`."""
        wanted = sorted({self.checkpoint_names[n] for n in names if self.checkpoint_names[n] is not None})
        read = self.weights.read(wanted)
        for name in names:
            source = self.checkpoint_names[name]
            current = self.model.get_parameter(name)
            if source is None:
                tensor = torch.zeros(current.shape, dtype=self.dtype, device=self.device)
            else:
                tensor = read[source].to(device=self.device, dtype=self.dtype)
                if tuple(tensor.shape) != tuple(current.shape):
                    shapes = f"{tuple(tensor.shape)}, the config needs {tuple(current.shape)}"
                    raise InputError(f"tensor {source} has shape {shapes}")
            _set_parameter(self.model, name, tensor)
        _retie(self.model, names, self.checkpoint_names)

    def release(self, names: list[str]) -> None:
        """Send `names` back to `meta` (their current shapes), freeing their memory."""
        for name in names:
            param = self.model.get_parameter(name)
            _set_parameter(self.model, name, torch.empty(param.shape, dtype=param.dtype, device="meta"))
        _retie(self.model, names, self.checkpoint_names)

    def load_layer(self, index: int) -> nn.Module:
        self.materialise(self.parameter_names(index))
        return self.layers[index]

    def unload_layer(self, index: int) -> None:
        self.release(self.parameter_names(index))
        return_freed_memory()

    def tensors(self, names: list[str]) -> dict[str, Tensor]:
        """The materialised parameters `names`, each in its source tensor's dtype (a
        parameter the source lacks: the dtype of its sibling weight) on the CPU, contiguous."""
        return {n: self.model.get_parameter(n).detach().to("cpu", self.save_dtype(n)).contiguous() for n in names}

    def save_dtype(self, name: str) -> torch.dtype:
        """The dtype parameter `name` is written in: its source tensor's (a parameter the
        source lacks: its sibling weight's)."""
        source = self.checkpoint_names[name]
        if source is None:
            source = self.checkpoint_names.get(name.rsplit(".", 1)[0] + ".weight")
        return self.weights.dtype(source) if source is not None else self.dtype

    def layout(self, shapes: nn.Module) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """What the written model holds, name -> (dtype, shape), in writing order: every
        layer's parameters (named as the model names them, shaped as in `shapes`, a copy of
        the skeleton with the layers' final shapes), then the tensors outside the layers
        as the source stores them (tied ones once)."""
        layout = {}
        for index in range(self.depth):
            for name in self.parameter_names(index):
                layout[name] = (self.save_dtype(name), tuple(shapes.get_parameter(name).shape))
        for source in self.outside_sources():
            layout[source] = (self.weights.dtype(source), self.weights.shape(source))
        return layout

    def outside_sources(self) -> list[str]:
        """The checkpoint's names of the tensors outside the layers (tied ones once)."""
        return sorted({self.checkpoint_names[n] for n in self.parameter_names(None)} - {None})

    def _outside_except(self, module: nn.Module | None) -> list[str]:
        """The parameters outside the layers but those of `module` (the input or output
        embedding a step does not use), unless they are tied to one it does use."""
        outside = self.parameter_names(None)
        if module is None:
            return outside
        prefix = next(name for name, m in self.model.named_modules() if m is module) + "."
        kept = [n for n in outside if not n.startswith(prefix)]
        shared = {self.checkpoint_names[n] for n in kept}
        return [n for n in outside if n in kept or self.checkpoint_names[n] in shared]

    # ---------------------------------------------------------------- run
    @torch.no_grad()
    def layer_inputs(self, batches: list[dict[str, Tensor]]) -> list[list]:
        """`[args, kwargs]` of layer 0 for each batch: the parts before the layers run on
        the batch (the parts outside the layers materialised for it, then released)."""
        from modhifi_core.pruning.ffn import _capture_first_layer_inputs

        outside = self._outside_except(self.model.get_output_embeddings())
        self.materialise(outside)
        try:
            moved = [{k: v.to(self.device) for k, v in batch.items()} for batch in batches]
            return _capture_first_layer_inputs(self.model, self.layers, moved)
        finally:
            self.release(outside)

    @torch.no_grad()
    def head_outputs(self, hidden: list[Tensor], reader: Any) -> list[Any]:
        """`reader(output)` of the model's forward for each batch whose last layer gave
        `hidden` (only the parts after the layers run: the final norm and the LM head of a
        causal LM), one batch at a time (logits are `(B, L, vocab)`); `reader(i, output)`
        for the i-th batch."""
        outside = self._outside_except(self.model.get_input_embeddings())
        self.materialise(outside)
        layers = self.layers
        results = []
        try:
            for i, states in enumerate(hidden):
                _swap_layers(self.model, self.layers_name, nn.ModuleList([_Emit(states)]))
                results.append(reader(i, self.model(inputs_embeds=torch.zeros_like(states), use_cache=False)))
        finally:
            _swap_layers(self.model, self.layers_name, layers)
            self.release(outside)
        return results


class _Emit(nn.Module):
    """Stands in for the layer list when the parts after the layers run: ignores its
    input and returns the hidden states the real last layer gave."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.hidden


def _swap_layers(model: nn.Module, name: str, layers: nn.ModuleList) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, layers)


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's `malloc_trim`; a no-op
    elsewhere). Each layer allocates and frees tensors of a few MB, which glibc keeps in its
    heap once its adaptive mmap threshold has grown: without this the resident memory of a
    30-layer model grows by ~10 MB a layer though nothing is held."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return


def run_layer(layer: nn.Module, captured: list[list]) -> list[Tensor]:
    """The layer's output hidden states for each captured `[args, kwargs]`."""
    from modhifi_core.pruning.ffn import _run_layer

    return _run_layer(layer, captured)


def advance(captured: list[list], outputs: list[Tensor]) -> None:
    """Make `outputs` the next layer's hidden-state inputs, in place."""
    for entry, hidden in zip(captured, outputs):
        args, kwargs = entry
        if args:
            entry[0] = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden


def _candidates(name: str, prefix: str) -> list[str]:
    names = [name]
    if prefix:
        names += [f"{prefix}.{name}", name.removeprefix(f"{prefix}.")]
    return names


def _layer_list_name(model: nn.Module) -> str:
    """The `nn.ModuleList` holding the transformer layers: the one holding the FFN blocks."""
    from modhifi_core.pruning.ffn import _layer_index, find_ffn_blocks

    modules = dict(model.named_modules())
    located = {_layer_index(block, modules) for block in find_ffn_blocks(model)}
    lists = {loc[0] for loc in located if loc is not None}
    if None in located or len(lists) != 1:
        raise InputError(f"{type(model).__name__}'s FFN blocks do not sit one per layer in one layer list")
    return lists.pop()


def _set_parameter(model: nn.Module, name: str, tensor: Tensor) -> None:
    parent, _, attr = name.rpartition(".")
    model.get_submodule(parent)._parameters[attr] = nn.Parameter(tensor, requires_grad=False)


def _retie(model: nn.Module, names: list[str], checkpoint_names: dict[str, str | None]) -> None:
    """Parameters that share a checkpoint tensor (tied embeddings) share one Parameter."""
    by_source: dict[str, str] = {}
    for name in names:
        source = checkpoint_names[name]
        if source is None:
            continue
        if source in by_source:
            parent, _, attr = name.rpartition(".")
            model.get_submodule(parent)._parameters[attr] = model.get_parameter(by_source[source])
        else:
            by_source[source] = name


# ---------------------------------------------------------------- writing

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class SafetensorsWriter:
    """One `model.safetensors` file written a tensor at a time: the header (every name's
    dtype, shape and byte range, known before any weight is computed) first, then each
    tensor's bytes at its place as it is done, so no more than one tensor is held for it.
    The file is what `safetensors.torch.save_file` would write for the same tensors in
    `layout`'s order (up to the header's key order); `close` refuses a file with a tensor
    never written."""

    def __init__(self, path: Path, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> None:
        import math
        import struct

        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, (dtype, shape) in layout.items():
            size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
            header[name] = {
                "dtype": _SAFETENSORS_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.path, self.layout, self.header = path, layout, header
        self.start, self.pending = 8 + len(raw), set(layout)
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by close)
        self.handle.write(struct.pack("<Q", len(raw)) + raw)
        self.handle.truncate(self.start + offset)

    def write(self, tensors: dict[str, Tensor]) -> None:
        for name, tensor in tensors.items():
            dtype, shape = self.layout[name]
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise RuntimeError(f"{name}: {tensor.dtype} {tuple(tensor.shape)}, the header says {dtype} {shape}")
            self.handle.seek(self.start + self.header[name]["data_offsets"][0])
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            self.handle.write(data.data)
            self.pending.discard(name)

    def close(self) -> None:
        self.handle.close()
        if self.pending:
            raise RuntimeError(f"{len(self.pending)} tensor(s) never written, e.g. {sorted(self.pending)[0]}")
