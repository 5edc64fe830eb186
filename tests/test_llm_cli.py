"""`modhifi prune/evaluate --model hf:DIR` (`kinds.language.cli`): a tiny Llama folder pruned
through the CLI, the result loading in stock transformers, its perplexity measured again by
`modhifi evaluate`; what is not given comes from the language kind's defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest
from llm_models import tiny, word_tokenizer

from kinds.language import CausalLMKind

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
    assert result.returncode == 2 and result.stderr == f"error: model folder {tmp_path / 'nope'} does not exist\n"
    assert not (tmp_path / "o").exists()


def test_prune_calibrates_on_the_language_kinds_default_windows(cli, llama_folder, tmp_path):
    """No --calibration-samples: the language kind's 128 windows, not an image model's 512,
    so a text with fewer than 512 windows (but 128) calibrates; no target: the kind's. The
    default is a cap: a shorter text calibrates on every window it holds; a count the user
    gives is exact, and refused when the text cannot fill it."""
    text = tmp_path / "text.txt"  # 800 tokens: 200 windows of 4
    out = tmp_path / "pruned"
    result = cli("prune", "--model", f"hf:{llama_folder}", "--calibration", f"text:{text}", "--length", 4,
                 "--out", out, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report, defaults = result.json(), CausalLMKind.defaults
    assert report["calibration_tokens"] == defaults.calibration_samples * 4
    assert report["params_ratio"] == pytest.approx(defaults.target_value, abs=0.02)
    short = cli("prune", "--model", f"hf:{llama_folder}", "--calibration", f"text:{text}", "--length", 8,
                "--out", tmp_path / "o", "--json")  # fmt: skip
    assert short.returncode == 0, short.stderr
    assert short.json()["calibration_samples"] == 100 and short.json()["calibration_tokens"] == 800
    exact = cli("prune", "--model", f"hf:{llama_folder}", "--calibration", f"text:{text}", "--length", 8,
                "--calibration-samples", 128, "--out", tmp_path / "o2")  # fmt: skip
    assert exact.returncode == 2
    assert exact.stderr == f"error: {text} has 800 tokens: 100 windows of 8, fewer than 128\n"


def test_the_language_operations_are_public_and_an_encoder_needs_a_reference():
    import modhifi_core
    import modhifi_core.operations.evaluate_language_model as evaluation
    import modhifi_core.operations.prune_language_model as pruning
    from modhifi_core import evaluate_language_model, prune_language_model
    from modhifi_core.errors import InputError

    assert {"prune_language_model", "evaluate_language_model"} <= set(modhifi_core.__all__)
    assert prune_language_model is pruning.prune_language_model
    assert evaluate_language_model is evaluation.evaluate_language_model
    with pytest.raises(InputError) as info:
        prune_language_model(tiny("llama"), word_tokenizer(), "synthetic")
    assert str(info.value) == "give exactly one of target_params and fraction"
    with pytest.raises(InputError, match="an encoder has no perplexity: give a reference encoder"):
        evaluate_language_model(tiny("bert"), word_tokenizer(), "never-read.txt")
