"""synthesize on a Hugging Face language model: the calibration token windows."""

from __future__ import annotations

import torch

from kinds.language import LanguageKind
from kinds.language.train_base import load_base
from modhifi_core.language import sample_sequences, text_windows
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, sha256_file
from tasks.inputs import checked_input
from tasks.records import read_record
from tasks.workspace import Workspace

CALIBRATION_FILE = "calibration.pt"  # in the synthesize stage's folder


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """The calibration windows `(language.samples, language.length)`: sampled from the
    model (`self`, seeded; a causal LM) or windows of the calibration text."""
    lang = params.language
    loaded = load_base(ws, kind)
    text = checked_input(ws, params, "calibration_text", kind)
    if lang.calibration == "self":
        options = {"temperature": lang.temperature, "top_p": lang.top_p, "prompt": lang.prompt}
        windows = sample_sequences(
            loaded.model, loaded.tokenizer, lang.samples, lang.length, seed=params.seed, **options
        )
    else:
        windows = text_windows(text["path"], loaded.tokenizer, lang.samples, lang.length, params.seed)
    out = ws.artifact("synthetic")
    atomic_torch_save(out / CALIBRATION_FILE, {"record": "token-windows", "input_ids": windows})
    manifest = {
        "calibration": lang.calibration,
        "shape": list(windows.shape),
        "text": text,
        "parents": {"base_model": sha256_file(ws.artifact("base_model"))},
    }
    atomic_write_json(out / "calibration.json", manifest)
    distinct = int(windows.unique().numel())
    return {"samples": int(windows.shape[0]), "tokens": int(windows.numel()), "distinct_tokens": distinct}


def load_windows(ws: Workspace) -> torch.Tensor:
    """The synthesize stage's calibration token ids `(N, L)`."""
    return read_record(ws.artifact("synthetic") / CALIBRATION_FILE)["input_ids"]
