"""Local Hugging Face model folders: load them safely, write pruned models back.

    model_kind(DIR) -> "causal-lm" | "encoder" | "image-classification"   (from config.json)
    load_hf(DIR, kind="auto") -> LoadedModel(model, tokenizer, path, weights, weights_format)
    save_hf(model, OUT, tokenizer=..., source=DIR, lineage={...}) -> OUT

Loading never runs remote code and never downloads: `HF_HUB_OFFLINE=1` is set before
transformers is imported, `local_files_only=True` and `trust_remote_code=False` are passed,
and the folder is checked first so that each bad case is one InputError line, at once:
a missing folder, no `config.json`, no weights, a config naming custom code (`auto_map`)
or an unknown `model_type`, a truncated safetensors file, a `pytorch_model.bin` that
`torch.load(weights_only=True)` refuses (a pickled payload), a `.gguf` without the GGUF
magic. Weights: `model.safetensors` (or a sharded index), `pytorch_model.bin` through
`weights_only=True`, or a single `*.gguf` through transformers' GGUF loader (dequantised to
`dtype`). The model class is the config's architecture when transformers has it in one
of its auto mappings (an allow-list), else the Auto class for `kind`.

Saving writes a plain folder that stock `from_pretrained` loads with no modhifi import:
`config.json`, `model.safetensors`, the tokenizer files (copied from the source folder, or
written by the tokenizer), and `modhifi.json` (lineage: parents' hashes, params, code
version). The folder is assembled under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modhifi_core.checkpoint import refuse_non_finite
from modhifi_core.errors import InputError
from modhifi_core.safe_io import atomic_write_json, sha256_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

KINDS = ("auto", "causal-lm", "encoder", "image-classification")
SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "generation_config.json",
)
LINEAGE_FILE = "modhifi.json"


@dataclass
class LoadedModel:
    """A model loaded from `path`: its tokenizer (None when the folder has none), the
    weight files read and their format (`safetensors`, `bin` or `gguf`)."""

    model: nn.Module
    tokenizer: Any
    path: Path
    weights: list[Path]
    weights_format: str


# ---------------------------------------------------------------- checks (fast, no transformers)


def check_folder(path: str | os.PathLike) -> tuple[dict | None, list[Path], str]:
    """Validate a model folder without loading it: returns (config dict or None for a
    GGUF-only folder, weight files, format). Raises InputError naming the problem."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"model folder {path} does not exist")
    for entry in sorted(path.rglob("*")):  # every file transformers or a copy could read
        inside(path, entry)
    ggufs = sorted(path.glob("*.gguf"))
    config_path = path / "config.json"
    config = _read_config(config_path) if config_path.is_file() else None
    if config is None and not ggufs:
        raise InputError(f"{path} has no config.json (and no .gguf file): not a Hugging Face model folder")
    if config is not None:
        _check_config(config, config_path)
    if (path / SAFETENSORS_INDEX).is_file():
        shards = _index_shards(path / SAFETENSORS_INDEX)
        for shard in shards:
            check_safetensors(shard)
        return config, shards, "safetensors"
    if (path / SAFETENSORS).is_file():
        check_safetensors(path / SAFETENSORS)
        return config, [path / SAFETENSORS], "safetensors"
    if (path / TORCH_BIN).is_file():
        check_torch_bin(path / TORCH_BIN)
        return config, [path / TORCH_BIN], "bin"
    if ggufs:
        if len(ggufs) > 1:
            raise InputError(f"{path} has {len(ggufs)} .gguf files; keep one")
        check_gguf(ggufs[0])
        return config, ggufs, "gguf"
    raise InputError(f"{path} has config.json but no weights ({SAFETENSORS}, {TORCH_BIN} or a .gguf file)")


def inside(folder: Path, path: Path) -> Path:
    """`path` resolved (links followed), refused in one line naming it when it resolves
    outside `folder`: a model folder's link (a config, a template, a weights file) or a
    shard index's `../../file` must not make modhifi read, or copy into its output, a file
    the folder does not hold."""
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(os.path.realpath(folder)):
        raise InputError(f"{path} resolves to {resolved}, outside the model folder {folder}: refused")
    return resolved


def _read_config(config_path: Path) -> dict:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_path} is not a JSON object")
    return config


def _check_config(config: dict, config_path: Path) -> None:
    if "auto_map" in config:
        raise InputError(f"{config_path} needs custom code (auto_map); modhifi never runs remote code")
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise InputError(
            f"{config_path}: model_type {model_type!r} is not a built-in transformers architecture "
            "(remote code is not run)"
        )


def _index_shards(index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
        shards = sorted({index_path.parent / name for name in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{index_path} is not a safetensors index: {exc}") from None
    for shard in shards:
        inside(index_path.parent, shard)
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise InputError(f"{index_path.parent} lacks {len(missing)} weight shard(s), e.g. {missing[0]}")
    return shards


def check_safetensors(path: Path) -> None:
    """The header parses and the file holds every byte the header points at."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_len))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        for key, entry in header.items():
            if key != "__metadata__":
                _check_tensor_entry(path, key, entry)
    except InputError:
        raise
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(f"{path} is not a readable safetensors file ({exc})") from None
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise InputError(f"{path} is truncated: {size} bytes, its header needs {expected}")


_SAFETENSORS_ITEM_BYTES = {
    **dict.fromkeys(("F64", "I64", "U64", "C64"), 8),
    **dict.fromkeys(("F32", "I32", "U32"), 4),
    **dict.fromkeys(("F16", "BF16", "I16", "U16"), 2),
    **dict.fromkeys(("I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0"), 1),
}


def _check_tensor_entry(path: Path, key: str, entry: dict) -> None:
    """One header entry is honest: a known dtype, a shape of non-negative integers and a
    byte range [start, end) exactly as long as that shape needs."""
    dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _SAFETENSORS_ITEM_BYTES:
        raise InputError(f"{path}: tensor {key} has an unknown dtype {dtype!r}")
    if not all(isinstance(n, int) and n >= 0 for n in shape) or not 0 <= start <= end:
        raise InputError(f"{path}: tensor {key} has an invalid shape {shape} or byte range [{start}, {end})")
    needed = _SAFETENSORS_ITEM_BYTES[dtype] * math.prod(shape)
    if end - start != needed:
        raise InputError(
            f"{path}: header lies about tensor {key}: shape {shape} of {dtype} needs {needed} bytes, "
            f"its byte range holds {end - start}"
        )


def check_torch_bin(path: Path) -> None:
    """`torch.load(weights_only=True)` accepts it: tensors only, no pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"refusing to load {path}: it holds a pickled payload with objects that could run code when loaded"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path} is not a readable torch state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state dict")


def check_gguf(path: Path) -> None:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise InputError(f"{path} is not a GGUF file (magic {magic!r})")


# ---------------------------------------------------------------- load


def _architecture_tables() -> dict[str, set[str]]:
    """Model kind -> the class names transformers' auto mappings list for it (the
    allow-list of classes `load_hf` builds). `encoder`: the bare models."""
    from transformers.models.auto import modeling_auto as auto

    tables = {
        "causal-lm": auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "encoder": auto.MODEL_MAPPING_NAMES,
        "image-classification": auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    }
    return {
        kind: {n for v in table.values() for n in (v if isinstance(v, (list, tuple)) else [v])}
        for kind, table in tables.items()
    }


def _model_class(config: Any, kind: str) -> type:
    """The config's own architecture if an auto mapping lists it (the allow-list), else
    the Auto class for `kind`."""
    import transformers

    fallback = {
        "causal-lm": transformers.AutoModelForCausalLM,
        "encoder": transformers.AutoModel,
        "image-classification": transformers.AutoModelForImageClassification,
    }
    tables = _architecture_tables()
    allowed = set().union(*(names for name, names in tables.items() if kind in ("auto", name)))
    for architecture in getattr(config, "architectures", None) or []:
        if architecture in allowed and hasattr(transformers, architecture):
            return getattr(transformers, architecture)
    if kind == "auto":
        return transformers.AutoModel
    return fallback[kind]


def model_kind(source: str | os.PathLike) -> str:
    """What a folder holds, from its `config.json` (the folder checked as `load_hf` checks
    it, no weights loaded): `causal-lm` (an architecture with a causal-LM head, or a
    GGUF-only folder), `encoder` (a bare model of a bidirectional family, e.g. `BertModel`:
    sentence embeddings) or `image-classification`. What the registry (`kinds.kind_of`)
    reads to tell Hugging Face kinds apart. InputError for anything else, naming the
    architecture."""
    path = Path(source).expanduser()
    config, _, weights_format = check_folder(path)  # a missing or partial folder: its one line
    if config is None or weights_format == "gguf":
        return "causal-lm"  # load_hf loads a GGUF folder as a causal LM
    return _config_kind(config, str(path))


def _config_kind(config: dict, name: str) -> str:
    from transformers.models.auto import modeling_auto as auto

    tables = _architecture_tables()
    architectures = config.get("architectures") or []
    for kind in ("causal-lm", "image-classification"):
        if any(a in tables[kind] for a in architectures):
            return kind
    model_type = config.get("model_type")
    bidirectional = model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder")
    if bidirectional and (not architectures or any(a in tables["encoder"] for a in architectures)):
        return "encoder"
    if not architectures and model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    if not architectures and model_type in auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image-classification"
    named = ", ".join(architectures) or f"model_type {model_type!r}"
    raise InputError(
        f"{name} holds {named}: neither a causal LM nor a bare text encoder (e.g. BertModel) nor an image classifier"
    )


def position_limit(source: str | os.PathLike | nn.Module) -> int | None:
    """The most tokens one sequence may hold (`max_position_embeddings`, GPT-2's
    `n_positions`) by a folder's `config.json` or a loaded model's config; None when it
    states none (a GGUF-only folder, a config without the key)."""
    if isinstance(source, nn.Module):
        config = source.config.to_dict() if hasattr(getattr(source, "config", None), "to_dict") else {}
    else:
        config_path = Path(source).expanduser() / "config.json"
        config = _read_config(config_path) if config_path.is_file() else {}
    limit = config.get("max_position_embeddings", config.get("n_positions"))
    return int(limit) if isinstance(limit, int) else None


def check_length(model: nn.Module, length: int) -> None:
    """`InputError` when windows of `length` tokens exceed `model`'s positions (refused, not
    clipped: past them a model reads garbage or fails deep inside its forward pass)."""
    limit = position_limit(model)
    if limit is not None and length > limit:
        raise InputError(f"length {length} exceeds the model's {limit} positions (max_position_embeddings)")


def load_hf(
    path: str | os.PathLike, kind: str = "auto", dtype: torch.dtype = torch.float32, need_tokenizer: bool = False
) -> LoadedModel:
    """Load a local Hugging Face folder as an eval-mode model of `dtype`.

    `kind`: `auto` (the config's architecture, e.g. `LlamaForCausalLM`, `BertModel`),
    `causal-lm`, `encoder` (the bare model) or `image-classification`. A GGUF-only folder
    loads as a causal LM. The tokenizer is loaded when the folder (or the GGUF) has one;
    `need_tokenizer` refuses a folder without tokenizer files before any weight is read.
    Weights holding NaN or inf are refused, naming the first such tensor."""
    if kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    path = Path(path).expanduser()
    config_dict, weights, weights_format = check_folder(path)
    if need_tokenizer and weights_format != "gguf" and not _has_tokenizer_files(path):
        raise InputError(f"{path} has no tokenizer files (e.g. tokenizer.json): cannot tokenise text for this model")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # callers report in one line, not bars
    try:
        if weights_format == "gguf":
            model, tokenizer = _load_gguf(path, weights[0], kind, dtype)
        else:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            cls = _model_class(config, kind)
            use_safetensors = weights_format == "safetensors"
            # transformers' own load report would print a table of the missing keys;
            # refuse_missing_weights says it in one line instead.
            verbosity = transformers.utils.logging.get_verbosity()
            transformers.utils.logging.set_verbosity_error()
            try:
                model, info = cls.from_pretrained(
                    path,
                    config=config,
                    use_safetensors=use_safetensors,
                    local_files_only=True,
                    trust_remote_code=False,
                    dtype=dtype,
                    output_loading_info=True,
                )
            finally:
                transformers.utils.logging.set_verbosity(verbosity)
            refuse_missing_weights(info.get("missing_keys") or [], cls.__name__, config, path)
            tokenizer = None
    except (OSError, ValueError, RuntimeError, ImportError, KeyError, IndexError, struct.error) as exc:
        if isinstance(exc, InputError):
            raise
        if weights_format == "gguf":
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{weights[0]} is not a readable GGUF file ({first})") from None
        if weights_format == "safetensors":
            _refuse_mismatched_shapes(path, config_dict, weights, kind)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: transformers could not load the weights: {first}") from None
    refuse_non_finite(model.state_dict(), path)
    if weights_format != "gguf":
        tokenizer = _load_tokenizer(path)
    model.eval()
    return LoadedModel(model, tokenizer, path, weights, weights_format)


def _refuse_mismatched_shapes(path: Path, config: dict, weights: list[Path], kind: str) -> None:
    """`InputError` naming the first weight whose shape in its safetensors header is not the
    one `config.json` makes (the model built on the meta device: no memory); transformers
    itself only points at a load report it does not print. Returns when all agree."""
    import transformers

    with torch.device("meta"):
        built = transformers.AutoConfig.for_model(**config)
        expected = {k: list(v.shape) for k, v in _model_class(built, kind)(built).state_dict().items()}
    for file in weights:
        for key, shape in _header_shapes(file).items():
            for name in (key, key.split(".", 1)[-1], f"{getattr(built, 'model_type', '')}.{key}"):
                if name in expected and expected[name] != shape:
                    raise InputError(
                        f"{file}: tensor {key} has shape {shape}, but {path / 'config.json'} makes it "
                        f"{expected[name]}: the weights are not of this config"
                    )


def _header_shapes(file: Path) -> dict[str, list[int]]:
    with open(file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {key: entry["shape"] for key, entry in header.items() if key != "__metadata__"}


def refuse_missing_weights(missing: list[str], class_name: str, config: Any, path: Path) -> None:
    """`InputError` when the checkpoint lacks tensors the model class needs: transformers
    would initialise them at random (e.g. an encoder's folder loaded as a causal LM gets a
    random language-model head), and every number measured on it would be meaningless."""
    if not missing:
        return
    saved = ", ".join(getattr(config, "architectures", None) or []) or "not recorded"
    raise InputError(
        f"{path}: the weights lack {len(missing)} tensor(s) that {class_name} needs (e.g. {sorted(missing)[0]}), "
        f"which would be random; the folder holds a model for another task (its architectures: {saved})"
    )


def _load_gguf(path: Path, gguf_path: Path, kind: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """A single-file GGUF model, dequantised to `dtype`, and the tokenizer it embeds."""
    import transformers

    gguf = {"gguf_file": gguf_path.name, "local_files_only": True}
    config = transformers.AutoConfig.from_pretrained(path, **gguf)
    cls = _model_class(config, "causal-lm" if kind == "auto" else kind)
    model = cls.from_pretrained(path, **gguf, trust_remote_code=False, dtype=dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, **gguf)
    _forget_gguf_origin(model)
    return model, tokenizer


def _forget_gguf_origin(model: nn.Module) -> None:
    """A dequantised GGUF model is plain float weights; drop the quantizer flags that make
    `save_pretrained` refuse it and would make the saved config point at a GGUF file."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False


def _has_tokenizer_files(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES[:7])


def _load_tokenizer(path: Path) -> Any:
    if not _has_tokenizer_files(path):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: the tokenizer files do not load: {str(exc).splitlines()[0]}") from None


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer of a model folder without its weights: its tokenizer
    files, or a GGUF-only folder's embedded tokenizer; None when it has none."""
    path = Path(path).expanduser()
    _, weights, weights_format = check_folder(path)
    if weights_format != "gguf":
        return _load_tokenizer(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, gguf_file=weights[0].name, local_files_only=True)


def weights_digest(weights: list[Path]) -> dict[str, str]:
    """sha256 of each weight file, by file name."""
    return {w.name: sha256_file(w) for w in weights}


# ---------------------------------------------------------------- save


def save_hf(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    tokenizer: Any = None,
    source: str | os.PathLike | None = None,
    lineage: dict | None = None,
    extra_json: dict[str, dict] | None = None,
) -> Path:
    """Write `model` (a transformers PreTrainedModel) as a stock folder at `out`:
    `config.json` (the model's current config: pruned widths, added biases),
    `model.safetensors`, tokenizer files (copied from `source` when it has them, else
    `tokenizer.save_pretrained`), `modhifi.json` = `lineage` plus `code_version` and
    the weight hash, and each `extra_json` file name -> content (e.g. a shape record).
    An existing `out` is replaced only once the new folder is complete."""
    if not hasattr(model, "save_pretrained"):
        raise InputError(f"{type(model).__name__} is not a transformers model; cannot write a Hugging Face folder")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _forget_gguf_origin(model)
        model.save_pretrained(staging, safe_serialization=True)
        copied = _copy_tokenizer_files(Path(source), staging) if source is not None else []
        if not copied and tokenizer is not None:
            tokenizer.save_pretrained(staging)
        atomic_write_json(staging / LINEAGE_FILE, lineage_file(lineage, sorted(staging.glob("*.safetensors"))))
        for name, content in (extra_json or {}).items():
            atomic_write_json(staging / name, content)
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def lineage_file(lineage: dict | None, weights: list[Path]) -> dict:
    """What `modhifi.json` beside a model in its source's format holds: `lineage` (e.g.
    `metadata.modification_record`), the code version and the sha256 of each weight file."""
    from modhifi_core.checkpoint import code_version

    return {**(lineage or {}), "code_version": code_version(), "weights": weights_digest(weights)}


def _copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    source = Path(source).expanduser()
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copy2(inside(source, source / name), target / name)
            copied.append(name)
    return copied


def _replace_folder(staging: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
