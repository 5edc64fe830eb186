"""Hostile open-weight folders through the CLI (issue 15): `modhifi evaluate/prune --model
hf:DIR` on each bad folder exits 2 with one `error:` line naming the file and the problem,
in seconds, with no network connection attempted, no pickled or remote code run (canary
files are never created) and nothing written."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import torch
from llm_models import tiny, word_tokenizer
from safetensors.torch import load_file, save_file
from test_hardening import Canary, hashes, one_line

from modhifi_core.errors import InputError
from modhifi_core.vision import load_hf_image_classifier, load_hf_pruned

TEXT = ("the word of the day is what you can use . he said it was for all of us , " * 20).strip()


def _copy(good, path, drop=()):
    path.mkdir()
    for file in good.iterdir():
        if file.name not in drop:
            (path / file.name).write_bytes(file.read_bytes())
    return path


def _rewrite_header(weights, edit) -> None:
    """Rewrite a safetensors file's JSON header through `edit(header)`, data unchanged."""
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :])


def _first_tensor(header) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


def _bad_folder(root, case, canary):
    """Build the folder of `case` under `root` from a good tiny Llama folder; returns
    (folder, the file its error must name)."""
    good = root / "good"
    tiny("llama").save_pretrained(good)
    word_tokenizer().save_pretrained(good)
    folder = root / case
    if case == "missing":
        return folder, folder
    if case == "no_config":
        return _copy(good, folder, drop={"config.json"}), folder
    folder = _copy(good, folder)
    config, weights = folder / "config.json", folder / "model.safetensors"
    if case == "config_not_json":
        config.write_text('{"model_type": "llama",')
    elif case == "pickled_bin":
        weights.unlink()
        torch.save({"model.embed_tokens.weight": Canary(canary)}, folder / "pytorch_model.bin")
        return folder, folder / "pytorch_model.bin"
    elif case == "truncated_safetensors":
        weights.write_bytes(weights.read_bytes()[:-100])
        return folder, weights
    elif case == "header_lies_about_shape":
        _rewrite_header(weights, lambda h: _first_tensor(h).update(shape=[4 * _first_tensor(h)["shape"][0], 16]))
        return folder, weights
    elif case == "header_lies_about_offsets":
        _rewrite_header(weights, lambda h: _first_tensor(h).update(data_offsets=[64, 0]))
        return folder, weights
    elif case == "header_longer_than_file":
        weights.write_bytes(struct.pack("<Q", 2**40) + weights.read_bytes()[8:])
        return folder, weights
    elif case == "remote_code":
        (folder / "evil.py").write_text(f"open({str(canary)!r}, 'w')\n")
        data = json.loads(config.read_text())
        config.write_text(json.dumps(data | {"auto_map": {"AutoModelForCausalLM": "evil.EvilForCausalLM"}}))
    elif case == "unknown_architecture":
        config.write_text(json.dumps(json.loads(config.read_text()) | {"model_type": "evil-llama"}))
    elif case == "not_gguf":
        for file in folder.iterdir():
            file.unlink()
        (folder / "model.gguf").write_bytes(b"PK\x03\x04 a zip, not a GGUF")
        return folder, folder / "model.gguf"
    elif case == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
        return folder, folder
    elif case == "nan_weights":
        state = load_file(weights)
        state["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
        save_file(state, weights, metadata={"format": "pt"})
        return folder, folder
    return folder, config


CASES = {
    "missing": "does not exist",
    "no_config": "has no config.json",
    "config_not_json": "is not valid JSON",
    "pickled_bin": "could run code",
    "truncated_safetensors": "is truncated",
    "header_lies_about_shape": "header lies about tensor",
    "header_lies_about_offsets": "invalid shape",
    "header_longer_than_file": "header longer than the file",
    "remote_code": "needs custom code (auto_map)",
    "unknown_architecture": "not a built-in transformers architecture",
    "not_gguf": "is not a GGUF file",
    "no_tokenizer": "has no tokenizer files",
    "nan_weights": "weights model.layers.0.mlp.up_proj.weight contain NaN or inf",
}


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection attempt is recorded and fails."""
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize("command", ["evaluate", "prune"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_hf_folder_is_one_line_exit_2_nothing_run_nothing_written(cli, tmp_path, no_network, case, command):
    canary = tmp_path / "CANARY"
    folder, named = _bad_folder(tmp_path / "models", case, canary)
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "out"
    args = {
        "evaluate": ["--text", text, "--length", 8, "--samples", 2],
        "prune": ["--target-params", 0.9, "--calibration", f"text:{text}", "--length", 8, "--out", out],
    }[command]
    before = hashes(tmp_path)
    start = time.perf_counter()
    result = cli(command, "--model", f"hf:{folder}", *args)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, (case, result.stderr[-2000:])
    line = one_line(result, "error: ", CASES[case], str(named))
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line
    assert not canary.exists(), "a pickled or remote-code payload ran"
    assert no_network == [], f"network connection attempted: {no_network}"
    assert hashes(tmp_path) == before and not out.exists()
    assert elapsed < 10, elapsed  # no hub retries, no 57-second offline timeout


def test_vision_loaders_apply_the_same_refusals(tmp_path):
    """`modhifi_core.vision`'s loaders go through the same checks: remote code refused
    (canary never created), NaN weights refused."""
    canary = tmp_path / "CANARY"
    folder = tmp_path / "vit"
    tiny("vit").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "evil.py").write_text(f"open({str(canary)!r}, 'w')\n")
    (folder / "config.json").write_text(
        json.dumps(config | {"auto_map": {"AutoModelForImageClassification": "evil.M"}})
    )
    with pytest.raises(InputError, match="custom code"):
        load_hf_image_classifier(folder)
    with pytest.raises(InputError, match="custom code"):
        load_hf_pruned(folder)
    assert not canary.exists()
    (folder / "config.json").write_text(json.dumps(config))
    state = load_file(folder / "model.safetensors")
    state[next(iter(state))].fill_(float("inf"))
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match="NaN or inf"):
        load_hf_image_classifier(folder)
