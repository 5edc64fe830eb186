"""Issue 26's rows (hardening, second round), one CLI-level test each: real files, the exit
code and the one error line asserted, the files around hashed before and after (a refusal
writes and changes nothing). Links and paths out of an `hf:` folder, `--out` on the
command's own input, lineage records that lie, and no network beyond loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from llm_models import tiny, word_tokenizer
from safetensors.torch import load_file, save_file
from test_hardening import hashes, one_line

TEXT = ("the word of the day is what you can use . he said it was for all of us , " * 20).strip()


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """A good tiny Llama folder (weights, tokenizer); copy it before changing it."""
    folder = tmp_path_factory.mktemp("llama") / "good"
    tiny("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def _prune_hf(folder: Path, text: Path, out: Path) -> list:
    return ["prune", "--model", f"hf:{folder}", "--target-params", 0.9, "--calibration", f"text:{text}",
            "--calibration-samples", 2, "--length", 8, "--latency-repeats", 1, "--out", out]  # fmt: skip


# --- links and paths out of an hf: folder --------------------------------------------------


def _linked(llama: Path, root: Path, case: str) -> tuple[Path, Path]:
    """A copy of `llama` under `root` whose `case` file leads outside it; returns (folder,
    the path the error must name)."""
    folder = root / "model"
    shutil.copytree(llama, folder)
    secret = root / "secret"
    secret.mkdir()
    if case == "preprocessor_config":
        (secret / "outside.json").write_text('{"secret": "SECRET-CONTENT"}')
        (folder / "preprocessor_config.json").symlink_to(secret / "outside.json")
        return folder, folder / "preprocessor_config.json"
    if case == "chat_template":
        (secret / "outside.jinja").write_text("SECRET-CONTENT")
        (folder / "chat_template.jinja").symlink_to(secret / "outside.jinja")
        return folder, folder / "chat_template.jinja"
    if case == "weights_symlink":
        shutil.move(folder / "model.safetensors", secret / "model.safetensors")
        (folder / "model.safetensors").symlink_to(secret / "model.safetensors")
        return folder, folder / "model.safetensors"
    # a shard index naming ../secret/model.safetensors
    shutil.move(folder / "model.safetensors", secret / "model.safetensors")
    names = load_file(secret / "model.safetensors")
    index = {"metadata": {}, "weight_map": {name: "../secret/model.safetensors" for name in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder, folder / "../secret/model.safetensors"


@pytest.mark.parametrize("case", ["preprocessor_config", "chat_template", "weights_symlink", "shard_index"])
def test_a_link_or_path_out_of_an_hf_folder_is_refused(cli, tmp_path, llama, text, case):
    folder, named = _linked(llama, tmp_path, case)
    out = tmp_path / "out"
    before = hashes(tmp_path)
    result = cli(*_prune_hf(folder, text, out))
    assert result.returncode == 2, result.stderr
    one_line(result, "error: ", str(named), "outside the model folder", "refused")
    assert hashes(tmp_path) == before and not out.exists()


def test_a_link_inside_an_hf_folder_is_copied_as_its_target(cli, tmp_path, llama, text):
    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    (folder / "template.jinja").write_text("{{ messages }}")
    (folder / "chat_template.jinja").symlink_to(folder / "template.jinja")
    out = tmp_path / "out"
    result = cli(*_prune_hf(folder, text, out))
    assert result.returncode == 0, result.stderr
    copied = out / "chat_template.jinja"
    assert not copied.is_symlink() and copied.read_text() == "{{ messages }}"


# --- --out on the command's own input ------------------------------------------------------


@pytest.mark.parametrize("where", ["source", "inside", "holding"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
def test_hf_out_on_its_own_source_is_refused(cli, tmp_path, llama, text, where, overwrite):
    folder = tmp_path / "models" / "model"
    shutil.copytree(llama, folder)
    out = {"source": folder, "inside": folder / "pruned", "holding": tmp_path / "models"}[where]
    before = hashes(tmp_path)
    result = cli(*_prune_hf(folder, text, out), *(["--overwrite"] if overwrite else []))
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {out}", "the input", "would destroy that input")
    assert hashes(tmp_path) == before


ZOO_COMMANDS = {
    "prune": ["prune", "--calibration", "gaussian", "--calibration-samples", "16"],
    "unlearn": ["unlearn", "--forget-class", "3", "--method", "ft"],
    "finetune": ["finetune", "--data", "real", "--epochs", "1"],
    "synthesize": ["synthesize", "--method", "gaussian", "--per-class", "2"],
}


@pytest.mark.parametrize("name", ZOO_COMMANDS)
@pytest.mark.parametrize("link", [False, True], ids=["", "through-a-link"])
def test_zoo_out_on_its_own_checkpoint_is_refused_even_with_overwrite(
    cli, tmp_path, tiny_digits_checkpoint, name, link
):
    model = tmp_path / "model.pt"
    shutil.copy(tiny_digits_checkpoint, model)
    out = model
    if link:
        out = tmp_path / "alias.pt"
        out.symlink_to(model)
    before = hashes(tmp_path)
    result = cli(*ZOO_COMMANDS[name], "--model", model, "--out", out, "--overwrite")
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {out} is the input {model}")
    assert hashes(tmp_path) == before


def test_finetune_out_on_its_teacher_is_refused(cli, tmp_path, tiny_digits_checkpoint):
    model, teacher = tmp_path / "model.pt", tmp_path / "teacher.pt"
    shutil.copy(tiny_digits_checkpoint, model)
    shutil.copy(tiny_digits_checkpoint, teacher)
    before = hashes(tmp_path)
    result = cli(*ZOO_COMMANDS["finetune"], "--model", model, "--teacher", teacher, "--out", teacher, "--overwrite")
    assert result.returncode == 2
    one_line(result, f"--out {teacher} is the input {teacher}")
    assert hashes(tmp_path) == before


NET = """
from torch import nn


def build():
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)]
    return nn.Sequential(*layers)
"""


@pytest.mark.parametrize("where", ["weights", "holding"])
def test_python_kind_out_on_its_weights_is_refused(cli, tmp_path, monkeypatch, where):
    """The `python:` kind keeps the same discipline: its `--weights` are an input model."""
    import torch

    (tmp_path / "usernets").mkdir()
    (tmp_path / "usernets" / "netr2.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "w").mkdir()
    weights = tmp_path / "w" / "net.safetensors"
    torch.manual_seed(0)
    state = {"0.weight": torch.randn(8, 3, 3, 3), "0.bias": torch.zeros(8), "4.weight": torch.randn(10, 8)}
    save_file(state | {"4.bias": torch.zeros(10)}, str(weights))
    out = {"weights": weights, "holding": tmp_path / "w"}[where]
    before = hashes(tmp_path)
    result = cli("prune", "--model", "python:usernets.netr2:build", "--weights", weights, "--input-shape", "3,8,8",
                 "--out", out, "--overwrite")  # fmt: skip
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {out}", f"the input {weights}")
    assert hashes(tmp_path) == before
