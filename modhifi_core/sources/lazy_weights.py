"""The weights of a local Hugging Face folder read a few tensors at a time, never whole.

    weights = LazyWeights(DIR)          # safetensors: the shard index or the single file
    weights.read(["model.embed_tokens.weight", ...]) -> {name: tensor}   (the file's dtype)

Each `read` opens the shards that hold the names (`safetensors.safe_open`, memory-mapped),
hands out those tensors (backed by the mapping, no copy) and closes the shards again, so
the process maps no more of the checkpoint than the tensors it still holds (a mapping kept
open would count every page read so far in the resident memory). A tensor holding NaN or inf is refused, naming it, as
`load_hf` refuses a whole model.

GGUF: the `gguf` package can dequantise one tensor at a time, but transformers' GGUF
loader also renames and re-permutes the tensors per architecture; a GGUF folder is
therefore dequantised whole by transformers and held as an in-memory state dict
(`LazyWeights.from_state_dict`), once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from modhifi_core.checkpoint import refuse_non_finite
from modhifi_core.errors import InputError
from modhifi_core.sources.huggingface import SAFETENSORS, SAFETENSORS_INDEX, check_folder


class LazyWeights:
    """Tensor name -> where it lives: a safetensors shard (read on demand) or memory."""

    def __init__(self, shards: dict[str, Path], memory: dict[str, Tensor] | None = None) -> None:
        self._shards = shards
        self._memory = memory or {}

    @classmethod
    def open(cls, folder: str | Path) -> LazyWeights:
        """The safetensors weights of `folder` (checked as `load_hf` checks it); InputError
        for a folder holding another format (`pytorch_model.bin`, GGUF: load those whole)."""
        from safetensors import safe_open

        folder = Path(folder)
        _, files, weights_format = check_folder(folder)
        if weights_format != "safetensors":
            raise InputError(f"{folder} holds {weights_format} weights; layer-by-layer reading needs safetensors")
        if (folder / SAFETENSORS_INDEX).is_file():
            weight_map = json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"]
            return cls({name: folder / shard for name, shard in weight_map.items()})
        with safe_open(folder / SAFETENSORS, framework="pt") as handle:
            return cls(dict.fromkeys(handle.keys(), folder / SAFETENSORS))

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LazyWeights:
        """Weights already in memory (a dequantised GGUF model's state dict)."""
        return cls({}, dict(state))

    def names(self) -> set[str]:
        return set(self._shards) | set(self._memory)

    def __contains__(self, name: str) -> bool:
        return name in self._shards or name in self._memory

    def read(self, names: list[str]) -> dict[str, Tensor]:
        """The tensors `names` in their stored dtype (read-only use: they may be backed by
        the file's mapping; copy before changing one in place); InputError for a
        name the checkpoint lacks or a tensor holding NaN or inf."""
        from safetensors import safe_open

        missing = [n for n in names if n not in self]
        if missing:
            raise InputError(f"the checkpoint lacks tensor {missing[0]} (and {len(missing) - 1} more)")
        out = {n: self._memory[n] for n in names if n in self._memory}
        by_shard: dict[Path, list[str]] = defaultdict(list)
        for name in names:
            if name not in out:
                by_shard[self._shards[name]].append(name)
        for shard, inside in by_shard.items():
            with safe_open(shard, framework="pt") as handle:
                for name in inside:
                    # backed by the file's mapping (no copy): its pages count while it lives
                    out[name] = handle.get_tensor(name)
        folder = next(iter(by_shard)).parent if by_shard else "the weights in memory"
        refuse_non_finite(out, folder)
        return out

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of `name` (read from the shard's header, no data)."""
        from safetensors import safe_open

        if name in self._memory:
            return tuple(self._memory[name].shape)
        with safe_open(self._shards[name], framework="pt") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        """The stored dtype of `name` (read from the shard's header, no data)."""
        from safetensors import safe_open

        if name in self._memory:
            return self._memory[name].dtype
        with safe_open(self._shards[name], framework="pt") as handle:
            return _dtype(handle.get_slice(name).get_dtype())


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise InputError(f"tensor dtype {name} is not a floating type this reader keeps")
    return _DTYPES[name]
