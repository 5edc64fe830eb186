"""`modhifi prune/evaluate --model hf:DIR`: a tiny Llama folder pruned through the CLI, the
result loading in stock transformers, its perplexity measured again by `modhifi evaluate`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from llm_models import tiny, word_tokenizer

TEXT = ("the word of the day is what you can use . he said it was for all of us , " * 40).strip()


@pytest.fixture
def llama_folder(tmp_path):
    folder = tmp_path / "llama"
    tiny("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    (tmp_path / "text.txt").write_text(TEXT)
    return folder


def test_prune_hf_folder_to_a_params_target_and_evaluate_it(cli, llama_folder, tmp_path):
    out = tmp_path / "pruned"
    text = tmp_path / "text.txt"
    result = cli(
        "prune", "--model", f"hf:{llama_folder}", "--target-params", 0.95, "--calibration", f"text:{text}",
        "--calibration-samples", 8, "--length", 16, "--eval-text", text, "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["params_ratio"] == pytest.approx(0.95, abs=0.02) and report["flops_ratio"] < 1
    assert report["perplexity"] > 0 and report["dense_perplexity"] > 0 and report["latency_speedup"] > 0
    assert (out / "modhifi.json").is_file()
    stock = (
        "import sys; from transformers import AutoModelForCausalLM; "
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print(m.config.intermediate_size)"
    )
    loaded = subprocess.run([sys.executable, "-c", stock, str(out)], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert int(loaded.stdout.strip().splitlines()[-1]) < 32  # the pruned width, from stock transformers alone
    dense = f"hf:{llama_folder}"
    again = cli("evaluate", "--model", f"hf:{out}", "--text", text, "--length", 16, "--reference", dense, "--json")
    assert again.returncode == 0, again.stderr
    assert again.json()["perplexity"] == pytest.approx(report["perplexity"], rel=1e-4)
    assert again.json()["dense_perplexity"] == pytest.approx(report["dense_perplexity"], rel=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calibration", "real"], "calibration must be text:PATH or synthetic"),
        (["--method", "taylor", "--calibration", "synthetic"], "unknown method 'taylor'"),
        (["--calibration", "synthetic", "--ffn-fraction", "0.3", "--target-params", "0.9"], "exactly one of"),
    ],
)
def test_bad_hf_prune_input_is_one_line(cli, llama_folder, tmp_path, args, message):
    extra = [] if "--ffn-fraction" in args else ["--target-params", "0.9"]
    result = cli("prune", "--model", f"hf:{llama_folder}", *args, *extra, "--out", tmp_path / "o")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_hf_folder_is_one_line(cli, tmp_path):
    result = cli("prune", "--model", f"hf:{tmp_path / 'nope'}", "--target-params", 0.9, "--out", tmp_path / "o")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_the_language_operations_are_public_and_an_encoder_needs_a_reference():
    from modhifi_core import evaluate_language_model, prune_language_model
    from modhifi_core.errors import InputError

    assert callable(prune_language_model)
    with pytest.raises(InputError, match="an encoder has no perplexity: give a reference encoder"):
        evaluate_language_model(tiny("bert"), word_tokenizer(), "never-read.txt")
