"""Safe checkpoints: model config + state dict + metadata, written atomically, loaded
with `weights_only=True`.

A checkpoint file is a torch-saved dict of plain types and tensors:

    {"format": "modhifi-checkpoint", "version": 1,
     "config": ModelConfig as a dict, "state_dict": {...},
     "metadata": {"parents": {name: sha256}, "params": {...}, "code_version": str, ...},
     "extra": {str: tensor},          # e.g. sparsity masks
     "digest": {"algorithm": "sha256", "value": hex}}

Loading never unpickles code: a file whose unpickling would import or call anything
beyond tensors and containers is refused, as are truncated files, files that are not
modhifi checkpoints, and checkpoints whose config and weights disagree.

The digest (`content_digest`) is a sha256 over every tensor of the state dict and of
`extra` (name, dtype, shape and raw bytes, in key order) and the config and metadata as
canonical JSON. `save_checkpoint` always writes it; `load_checkpoint` recomputes it and
refuses a file whose content no longer matches (a flipped byte that the zip reader does
not notice). Checkpoints written before the digest existed have none and are accepted
silently: refusing them would strand every older model, and a re-save adds the digest.
A byte flip that changes nothing the loader reads (zip padding, an unused header field)
is harmless by construction and therefore not refused.

Weights that are NaN or infinite are refused on load, naming the first such tensor: such
a model predicts nothing, and every measurement made with it would be meaningless.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import torch
from torch import nn

from modhifi_core import __version__
from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model, config_for
from modhifi_core.safe_io import atomic_torch_save, sha256_file

FORMAT = "modhifi-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and what came with it."""

    model: nn.Module
    config: ModelConfig
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    metadata: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write `model` atomically; returns the file's sha256.

    `config` may be the dense config: layers whose shapes changed (pruning) are
    recorded in it automatically. `metadata` must hold only plain JSON-like values.
    """
    config = config_for(model, config)
    meta = {"code_version": code_version(), "modhifi_version": __version__, **(metadata or {})}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.model_dump(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "metadata": meta,
        "extra": {k: v.detach().cpu() for k, v in (extra or {}).items()},
    }
    payload["digest"] = {"algorithm": "sha256", "value": content_digest(payload)}
    atomic_torch_save(path, payload)
    return sha256_file(path)


# How a file torch.load can read begins: a zip archive (torch.save's format) or a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def check_checkpoint_file(path: Path) -> None:
    """`InputError` naming what `path` is when it cannot be a checkpoint: missing, a
    folder, a FIFO or device (reading one would block or never end), or a regular file
    that begins as neither a zip archive nor a pickle (e.g. zeros, text)."""
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "a FIFO" if path.is_fifo() else "a device or socket"
        raise InputError(f"{path} is {what}, not a checkpoint file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith(_TORCH_MAGIC):
        raise InputError(f"{path} is not a torch checkpoint (it begins with {head!r}, not a zip archive or a pickle)")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and rebuild a checkpoint; any problem raises `InputError` naming the file."""
    path = Path(path)
    check_checkpoint_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice on a refused pickle: the refusal below says it
            payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # unsafe globals, truncation, garbage
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains objects that could run code when loaded"
        raise InputError(f"refusing to load {path}: not a safe modhifi checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a modhifi checkpoint")
    if payload.get("version") != VERSION:
        raise InputError(f"{path} has checkpoint version {payload.get('version')!r}; this modhifi reads {VERSION}")
    _verify_digest(payload, path)
    try:
        config = ModelConfig(**payload["config"])
    except (pydantic.ValidationError, TypeError) as exc:
        raise InputError(f"{path} has an invalid model config: {_first_error(exc)}") from None
    model = build_model(config).to(device)
    _load_state(model, payload.get("state_dict"), path)
    model.eval()
    return Checkpoint(
        model=model,
        config=config,
        metadata=payload.get("metadata") or {},
        extra=payload.get("extra") or {},
        path=path,
        sha256=sha256_file(path),
    )


def _load_state(model: nn.Module, state: Any, path: Path) -> None:
    if not isinstance(state, dict):
        raise InputError(f"{path} has no state dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(f"{path}: config and weights disagree ({detail})")
    for key, tensor in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != tensor.shape:
            got = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
            raise InputError(
                f"{path}: config and weights disagree at {key} (config {tuple(tensor.shape)}, weights {got})"
            )
    refuse_non_finite(state, path)
    model.load_state_dict(state, strict=True)


def refuse_non_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise `InputError` naming the first floating-point tensor of `state` that holds NaN
    or inf (such a model predicts nothing; every measurement with it would be meaningless)."""
    for key, tensor in state.items():
        # in chunks: isfinite makes a full-size temporary (a 1B model's embedding: 250 MB)
        chunks = tensor.reshape(-1).split(1 << 20) if tensor.is_floating_point() else ()
        if not all(bool(torch.isfinite(chunk).all()) for chunk in chunks):
            raise InputError(f"{path}: weights {key} contain NaN or inf; refusing a broken model")


def content_digest(payload: dict[str, Any]) -> str:
    """sha256 (hex) of a checkpoint payload's tensors and JSON parts (see the module docstring)."""
    digest = hashlib.sha256()
    for section in ("state_dict", "extra"):
        for key, tensor in (payload.get(section) or {}).items():
            if not isinstance(tensor, torch.Tensor):
                raise InputError(f"checkpoint {section} entry {key!r} is not a tensor")
            header = json.dumps([section, key, str(tensor.dtype), list(tensor.shape)])
            digest.update(header.encode())
            digest.update(_tensor_bytes(tensor))
    for section in ("config", "metadata"):
        digest.update(json.dumps(payload.get(section), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


def _verify_digest(payload: dict[str, Any], path: Path) -> None:
    recorded = payload.get("digest")
    if recorded is None:
        return  # written before checkpoints carried a digest: accepted (module docstring)
    if not isinstance(recorded, dict) or recorded.get("algorithm") != "sha256":
        raise InputError(f"{path}: unknown checkpoint digest {recorded!r}")
    if content_digest(payload) != recorded.get("value"):
        raise InputError(f"{path} is corrupt: its content does not match the digest it carries")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


def code_version() -> str:
    """The git commit of the modhifi source tree, with '-dirty' if it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"unknown (modhifi {__version__}, not a git checkout)"
    return commit + ("-dirty" if dirty else "")
