"""A pruned Hugging Face folder written back as GGUF when its source came as GGUF: what
llama.cpp, Ollama and LM Studio run.

    summary = write_gguf(pruned_folder, source_gguf)   # pruned_folder/<source name>.gguf

Independent of how the folder was pruned: it reads the folder's `config.json` and
safetensors and the source GGUF, and writes a GGUF beside the safetensors with

- the source's metadata (tokenizer, chat template, rope, ...), its shape keys
  (`{arch}.feed_forward_length`, `embedding_length`, heads, `block_count`) set from the
  pruned config;
- each tensor in the source's own type where that is exact: a tensor whose every row is
  one of the source's rows, dequantised (an untouched tensor, or gate/up projections
  with whole neurons removed) keeps those rows' quantised bytes unchanged; any other
  (a refit down projection, whose rows lost columns) is written in `float_type`: `f32`
  (default: the logits equal the safetensors model's; measured on a pruned SmolLM2) or
  `f16` (smaller; measured there: logits off by up to 1.0 of 31.6 where the refit made
  large weights); 1-D tensors always f32. Never re-quantised with a new rounding error.

Tensor names follow `gguf`'s own HF-to-GGUF map; Llama/Mistral q/k projections get the
rotary permutation llama.cpp's converter applies (transformers undoes it on load).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modhifi_core.errors import InputError

# architectures whose q/k rows llama.cpp's converter permutes (`LlamaModel.permute`)
PERMUTED = ("llama", "mistral")
FLOAT_TYPES = ("f16", "f32")
# params.yaml-style config keys -> the GGUF keys (`{arch}.` prefix) that describe shapes
SHAPE_KEYS = {
    "intermediate_size": "feed_forward_length",
    "hidden_size": "embedding_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "num_hidden_layers": "block_count",
}


def write_gguf(
    folder: str | Path, source_gguf: str | Path, out: str | Path | None = None, float_type: str = "f32"
) -> dict:
    """Write the safetensors model in `folder` as GGUF at `out` (default: beside it, named
    like `source_gguf`), with `source_gguf`'s metadata and tensor types where exact (see
    the module). Returns `{"path", "kept_type": {type: n}, "written_as": {type: n}}`:
    how many tensors kept the source's type and how many were written in a float type.
    InputError (one line) for a folder or GGUF that do not fit together."""
    import gguf
    from safetensors.torch import load_file

    folder, source_gguf = Path(folder), Path(source_gguf)
    if float_type not in FLOAT_TYPES:
        raise InputError(f"float_type must be one of {', '.join(FLOAT_TYPES)}, got {float_type!r}")
    config = _read_config(folder)
    reader = gguf.GGUFReader(source_gguf)
    arch = _string(reader.fields["general.architecture"])
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise InputError(f"{folder} has no .safetensors weights to write as GGUF")
    hf = {k: v for w in weights for k, v in load_file(w).items()}
    names = _gguf_names(hf, arch, config["num_hidden_layers"])
    sources = {t.name: t for t in reader.tensors}
    missing = sorted(set(names.values()) ^ set(sources))
    if missing:
        raise InputError(f"{folder} and {source_gguf.name} hold different tensors (e.g. {missing[0]})")
    out = Path(out) if out is not None else folder / source_gguf.name
    writer = gguf.GGUFWriter(out.with_name(out.name + ".tmp"), arch)
    _copy_metadata(reader, writer, arch, config)
    kept: dict[str, int] = {}
    written: dict[str, int] = {}
    for hf_name, gguf_name in sorted(names.items(), key=lambda item: list(sources).index(item[1])):
        tensor = _as_gguf_layout(hf[hf_name].float().numpy(), gguf_name, arch, config)
        raw = _exact_rows(tensor, sources[gguf_name])
        if raw is not None:
            writer.add_tensor(gguf_name, raw, raw_dtype=sources[gguf_name].tensor_type)
            kept[sources[gguf_name].tensor_type.name] = kept.get(sources[gguf_name].tensor_type.name, 0) + 1
        else:
            dtype = np.float16 if tensor.ndim > 1 and float_type == "f16" else np.float32
            writer.add_tensor(gguf_name, tensor.astype(dtype))
            label = "F16" if dtype == np.float16 else "F32"
            written[label] = written.get(label, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out.with_name(out.name + ".tmp").replace(out)
    return {"path": str(out), "kept_type": kept, "written_as": written}


def _read_config(folder: Path) -> dict:
    import json

    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"{folder} has no config.json: not a Hugging Face model folder")
    return json.loads(path.read_text())


def _string(field: object) -> str:
    return bytes(field.parts[field.data[0]]).decode()


def _gguf_names(hf: dict, arch: str, blocks: int) -> dict[str, str]:
    """HF tensor name -> GGUF tensor name, by `gguf`'s own map for `arch`."""
    import gguf

    by_name = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise InputError(f"GGUF architecture {arch!r} is not one gguf knows")
    table = gguf.get_tensor_name_map(by_name[arch], blocks)
    names = {}
    for hf_name in hf:
        mapped = table.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise InputError(f"tensor {hf_name} has no GGUF name for architecture {arch}")
        names[hf_name] = mapped
    return names


def _as_gguf_layout(tensor: np.ndarray, name: str, arch: str, config: dict) -> np.ndarray:
    """Llama-family q/k rows in llama.cpp's rotary order (`LlamaModel.permute`)."""
    if arch not in PERMUTED or not name.endswith(("attn_q.weight", "attn_k.weight")):
        return tensor
    heads = config["num_attention_heads"]
    if name.endswith("attn_k.weight"):
        heads = config.get("num_key_value_heads") or heads
    shape = tensor.shape
    return tensor.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _exact_rows(tensor: np.ndarray, source: object) -> np.ndarray | None:
    """The source's raw (quantised) rows that dequantise to exactly `tensor`'s rows, in
    its order; None when some row is not one of the source's (or the shapes differ)."""
    from gguf.quants import dequantize

    dense = dequantize(source.data, source.tensor_type)
    if dense.ndim != tensor.ndim or dense.shape[1:] != tensor.shape[1:]:
        return None
    if tensor.ndim == 1:
        return source.data if np.array_equal(dense, tensor) else None
    index = {row.tobytes(): i for i, row in enumerate(dense.astype(np.float32))}
    rows = [index.get(row.tobytes()) for row in tensor.astype(np.float32)]
    if any(r is None for r in rows):
        return None
    return np.ascontiguousarray(source.data.reshape(dense.shape[0], -1)[rows])


def _copy_metadata(reader: object, writer: object, arch: str, config: dict) -> None:
    """Every key of the source but the header's and the architecture (the writer's own),
    the shape keys set from `config`."""
    import gguf

    shapes = {f"{arch}.{key}": config[hf] for hf, key in SHAPE_KEYS.items() if config.get(hf) is not None}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kind = field.types[0]
        if key in shapes:
            writer.add_key_value(key, int(shapes.pop(key)), kind)
        elif kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), kind)
    for key, value in shapes.items():
        writer.add_uint32(key, int(value))
