"""Local Hugging Face folders: each source kind loads, each bad folder is one fast
InputError line, and a pruned model saved by modhifi loads in a clean python with only
transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from llm_models import example_inputs, outputs, tiny, word_tokenizer

from modhifi_core.errors import InputError
from modhifi_core.pruning.ffn import prune_transformer
from modhifi_core.sources import load_hf, save_hf
from modhifi_core.sources.huggingface import LINEAGE_FILE

CLEAN_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}


def _reload_logits_in_clean_python(folder, inputs_path, out_path, auto: str) -> None:
    code = (
        "import sys, torch, transformers\n"
        f"model = transformers.{auto}.from_pretrained({str(folder)!r}, local_files_only=True).eval()\n"
        f"ids = torch.load({str(inputs_path)!r}, weights_only=True)\n"
        "with torch.no_grad():\n"
        "    out = model(**ids)\n"
        "out = out.logits if hasattr(out, 'logits') else out.last_hidden_state\n"
        f"torch.save(out, {str(out_path)!r})\n"
        "assert not any(m.startswith('modhifi') for m in sys.modules), 'modhifi was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=CLEAN_ENV, cwd=folder.parent)


@pytest.mark.parametrize(("family", "auto"), [("llama", "AutoModelForCausalLM"), ("bert", "AutoModel")])
def test_pruned_model_saved_then_loaded_by_stock_transformers_gives_identical_outputs(tmp_path, family, auto):
    model = tiny(family)
    inputs = example_inputs(family)
    compensation = "bias" if family == "llama" else "ls"  # llama: a bias added through mlp_bias
    result = prune_transformer(model, [inputs], fraction=0.5, compensation=compensation)
    folder = save_hf(
        result.model, tmp_path / "pruned", tokenizer=word_tokenizer(), lineage={"parents": {"base": "abc"}}
    )
    torch.save(inputs, tmp_path / "inputs.pt")
    _reload_logits_in_clean_python(folder, tmp_path / "inputs.pt", tmp_path / "out.pt", auto)
    torch.testing.assert_close(
        torch.load(tmp_path / "out.pt", weights_only=True), outputs(result.model, inputs), rtol=0, atol=0
    )
    lineage = json.loads((folder / LINEAGE_FILE).read_text())
    assert lineage["parents"] == {"base": "abc"} and lineage["code_version"]
    assert set(lineage["weights"]) == {"model.safetensors"}
    assert (folder / "tokenizer.json").is_file()
    again = load_hf(folder)
    assert again.weights_format == "safetensors" and again.tokenizer is not None


def test_safetensors_folder_loads_with_its_architecture_and_tokenizer(tmp_path):
    model = tiny("gpt2")
    model.save_pretrained(tmp_path / "m")
    word_tokenizer().save_pretrained(tmp_path / "m")
    loaded = load_hf(tmp_path / "m")
    assert type(loaded.model).__name__ == "GPT2LMHeadModel" and not loaded.model.training
    inputs = example_inputs("gpt2")
    torch.testing.assert_close(outputs(loaded.model, inputs), outputs(model, inputs))
    assert loaded.tokenizer("the word").input_ids == word_tokenizer()("the word").input_ids != []


def test_an_encoder_asked_for_as_a_causal_lm_is_refused_not_given_a_random_head(tmp_path):
    """transformers would build BertLMHeadModel with a random LM head and only print a
    table; perplexity on it would be meaningless. The bare encoder still loads."""
    tiny("bert").save_pretrained(tmp_path / "m")
    word_tokenizer().save_pretrained(tmp_path / "m")
    with pytest.raises(InputError, match=r"lack \d+ tensor\(s\).*another task \(its architectures: BertModel\)"):
        load_hf(tmp_path / "m", kind="causal-lm")
    assert type(load_hf(tmp_path / "m").model).__name__ == "BertModel"
    text = tmp_path / "held_out.txt"
    text.write_text(" ".join(["the word"] * 400))
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "evaluate", "--model", f"hf:{tmp_path / 'm'}", "--text", str(text)],
        capture_output=True, text=True, env={**CLEAN_ENV, "PYTHONPATH": os.getcwd()}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "is an encoder" in lines[0] and "--reference" in lines[0]  # evaluate an encoder against its dense model


def test_pytorch_bin_loads_through_weights_only(tmp_path):
    model = tiny("llama")
    folder = tmp_path / "bin"
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    loaded = load_hf(folder, kind="causal-lm")  # a bare config names no architecture
    assert loaded.weights_format == "bin" and loaded.tokenizer is None
    inputs = example_inputs("llama")
    torch.testing.assert_close(outputs(loaded.model, inputs), outputs(model, inputs))


def test_image_classifier_loads_by_kind(tmp_path):
    model = tiny("vit")
    model.save_pretrained(tmp_path / "vit")
    loaded = load_hf(tmp_path / "vit", kind="image-classification")
    assert type(loaded.model).__name__ == "ViTForImageClassification"
    with pytest.raises(InputError, match="unknown model kind"):
        load_hf(tmp_path / "vit", kind="speech")


class Payload:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def _bad_folders(root):
    good = root / "good"
    tiny("llama").save_pretrained(good)
    config = json.loads((good / "config.json").read_text())
    cases = {}

    def folder(name, files):
        path = root / name
        path.mkdir()
        for file, content in files.items():
            (path / file).write_bytes(content if isinstance(content, bytes) else content.encode())
        cases[name] = path

    folder("empty", {"README.md": "nothing here"})
    folder("no_weights", {"config.json": json.dumps(config)})
    folder("remote_code", {"config.json": json.dumps(config | {"auto_map": {"AutoModel": "x.Y"}}), "x.py": ""})
    folder("unknown_type", {"config.json": json.dumps(config | {"model_type": "not-a-model"})})
    folder("bad_json", {"config.json": "{not json"})
    whole = (good / "model.safetensors").read_bytes()
    folder("truncated", {"config.json": json.dumps(config), "model.safetensors": whole[: len(whole) // 2]})
    folder("not_safetensors", {"config.json": json.dumps(config), "model.safetensors": b"\x00" * 7})
    folder("not_gguf", {"weights.gguf": b"PK\x03\x04 not gguf"})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    folder("partial_shards", {"config.json": json.dumps(config), "model.safetensors.index.json": json.dumps(index)})
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(config))
    torch.save({"weight": Payload()}, pickled / "pytorch_model.bin")
    cases["pickled"] = pickled
    cases["missing"] = root / "does-not-exist"
    return cases


EXPECTED = {
    "missing": "does not exist",
    "empty": "no config.json",
    "no_weights": "no weights",
    "remote_code": "custom code",
    "unknown_type": "not a built-in transformers architecture",
    "bad_json": "not valid JSON",
    "truncated": "truncated",
    "not_safetensors": "not a readable safetensors",
    "not_gguf": "not a GGUF file",
    "partial_shards": "lacks 2 weight shard",
    "pickled": "pickled payload",
}


def test_each_bad_folder_is_one_fast_input_error_line(tmp_path):
    cases = _bad_folders(tmp_path)
    assert set(cases) == set(EXPECTED)
    for name, path in cases.items():
        start = time.perf_counter()
        with pytest.raises(InputError) as caught:
            load_hf(path)
        elapsed = time.perf_counter() - start
        message = str(caught.value)
        assert EXPECTED[name] in message, (name, message)
        assert "\n" not in message, name
        assert elapsed < 5, (name, elapsed)  # no network retry, no 57-second hub timeout


def test_save_refuses_a_plain_module_and_replaces_an_existing_folder(tmp_path):
    with pytest.raises(InputError, match="not a transformers model"):
        save_hf(torch.nn.Linear(2, 2), tmp_path / "x")
    first = save_hf(tiny("bert"), tmp_path / "out", lineage={"n": 1})
    (first / "stale.txt").write_text("old")
    save_hf(tiny("bert", seed=1), tmp_path / "out", lineage={"n": 2})
    assert not (first / "stale.txt").exists()
    assert json.loads((first / LINEAGE_FILE).read_text())["n"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_tokenizer_files_are_copied_from_the_source_folder(tmp_path):
    source = tmp_path / "src"
    tiny("bert").save_pretrained(source)
    word_tokenizer().save_pretrained(source)
    loaded = load_hf(source)
    out = save_hf(loaded.model, tmp_path / "copy", source=source)
    assert (out / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()


# ---------------------------------------------------------------- the language adapters (kinds.language)


@pytest.mark.parametrize(("family", "adapter"), [("llama", "CausalLMKind"), ("bert", "EncoderKind")])
def test_the_language_adapter_loads_prunes_saves_and_reloads_a_folder(tmp_path, family, adapter):
    """The registry picks the adapter from the folder's config; what it saves from a pruned
    model reloads (through the same adapter) to the same outputs, with the lineage, the
    source's tokenizer files and the weights' sha256 beside it."""
    import kinds.language
    from kinds import kind_of
    from modhifi_core.safe_io import sha256_file

    source = tmp_path / family
    tiny(family).save_pretrained(source)
    word_tokenizer().save_pretrained(source)
    kind = kind_of(f"hf:{source}")
    assert type(kind) is getattr(kinds.language, adapter)
    loaded = kind.load()
    assert loaded.tokenizer is not None and loaded.weights == [source / "model.safetensors"]
    inputs = example_inputs(family)
    pruned = prune_transformer(loaded.model, [inputs], fraction=0.5, compensation="ls").model
    out = kind.save(loaded, pruned, tmp_path / "pruned", {"operation": "test", "parents": {"model": "abc"}})
    again = kind_of(f"hf:{out}")
    assert type(again) is type(kind)
    torch.testing.assert_close(outputs(again.load().model, inputs), outputs(pruned, inputs), rtol=0, atol=0)
    lineage = json.loads((out / LINEAGE_FILE).read_text())
    assert lineage["parents"] == {"model": "abc"} and lineage["operation"] == "test"
    assert (out / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    weights = {"model.safetensors": sha256_file(out / "model.safetensors")}
    described = {"kind": kind.name, "path": str(out), "weights_format": "safetensors", "weights": weights}
    assert again.describe(out) == described
    files = {path.name for path in kind.source_files(source)}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert all(path.parent == source for path in kind.source_files(source))
