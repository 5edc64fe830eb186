"""synthesize on a Hugging Face language model: the calibration token windows."""

from __future__ import annotations

from modhifi_core.language import sample_sequences, text_windows
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, sha256_file
from tasks.inputs import check_model_fits, checked_input
from tasks.lm import CALIBRATION_FILE
from tasks.lm.base import load_base
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    """The calibration windows `(language.samples, language.length)`: sampled from the
    model (`self`, seeded; a causal LM) or windows of the calibration text."""
    lang = params.language
    check_model_fits(ws, params, keys=("calibration", "length"))
    loaded = load_base(ws)
    text = checked_input(ws, params, "calibration_text")
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
