"""Layer-by-layer pruning of a causal LM (`prune_language_model_layerwise`) against the
in-memory path (`prune_language_model`): on a tiny from-config Llama with grouped-query
attention saved as sharded safetensors, the same kept neurons, the same weights to float32
round-off, the same logits after a stock reload, the same held-out perplexities."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from modhifi_core.errors import InputError
from modhifi_core.operations.prune_language_model import prune_language_model, prune_language_model_layerwise
from modhifi_core.pruning.ffn import prune_transformer
from modhifi_core.sources import load_hf
from modhifi_core.sources.lazy_weights import LazyWeights
from tests.llm_models import VOCAB, word_text, word_tokenizer

OPTIONS = {"target_params": 0.8, "samples": 6, "length": 12, "batch_size": 4, "latency_repeats": 0}


def _llama_folder(path, tied: bool = False, dtype: torch.dtype = torch.float32):
    """A 3-layer Llama (4 query / 2 KV heads, FFN 48) saved in small shards with a tokenizer."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config).to(dtype).eval()
    model.save_pretrained(path, max_shard_size="20KB")
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("layerwise")
    text = word_text(root / "text.txt", 1500, seed=3)
    return {"untied": _llama_folder(root / "llama"), "tied": _llama_folder(root / "tied", tied=True), "text": text}


def _in_memory(folder, text, **options):
    loaded = load_hf(folder, kind="causal-lm", need_tokenizer=True)
    return loaded.model, prune_language_model(loaded.model, loaded.tokenizer, f"text:{text}", **options)


def _reloaded(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    assert set(want) == set(got)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("case", [("untied", "modhifi"), ("tied", "modhifi-energy"), ("untied", "flap")])
def test_layerwise_equals_in_memory(folders, tmp_path, case):
    which, method = case
    folder, text = folders[which], folders["text"]
    dense, old = _in_memory(folder, text, method=method, eval_text=str(text), eval_samples=3, **OPTIONS)
    new = prune_language_model_layerwise(
        folder, tmp_path / "out", f"text:{text}", method=method, eval_text=str(text), eval_samples=3, **OPTIONS
    )
    assert new.report["widths"] == old.report["widths"] < new.report["ffn_width_dense"]
    assert new.metrics["params_ratio"] == pytest.approx(old.metrics["params_ratio"])
    assert new.metrics["perplexity"] == pytest.approx(old.metrics["perplexity"], rel=1e-5)
    assert new.metrics["dense_perplexity"] == pytest.approx(old.metrics["dense_perplexity"], rel=1e-5)
    reloaded = _reloaded(new.folder)
    _same_weights(old.model, reloaded)
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, old.model(input_ids=ids).logits)
    config = json.loads((new.folder / "config.json").read_text())
    assert config["intermediate_size"] == new.report["widths"][0]
    assert (new.folder / "tokenizer.json").is_file() and (new.folder / "modhifi.json").is_file()
    assert sorted(p.name for p in new.folder.glob("model*")) == ["model.safetensors"]  # one file, as save_pretrained


def test_sequential_equals_sequential_in_memory(folders, tmp_path):
    """Each layer's statistics on the already-pruned layers' outputs: `prune_transformer`'s
    `sequential` path, the same neurons and weights."""
    folder, text = folders["untied"], folders["text"]
    new = prune_language_model_layerwise(folder, tmp_path / "out", f"text:{text}", sequential=True, **OPTIONS)
    dense = load_hf(folder, kind="causal-lm").model
    old = prune_transformer(dense, new.calibration, target_params=0.8, score="greedy", sequential=True, batch_size=4)
    assert new.report["widths"] == old.report["widths"]
    _same_weights(old.model, _reloaded(new.folder))


def test_source_dtype_kept_and_latency(folders, tmp_path):
    """A bfloat16 source gives a bfloat16 folder (computed in float32); latency is timed."""
    folder = _llama_folder(tmp_path / "bf16", dtype=torch.bfloat16)
    options = {**OPTIONS, "latency_repeats": 1}
    new = prune_language_model_layerwise(folder, tmp_path / "out", f"text:{folders['text']}", **options)
    stored = LazyWeights.open(new.folder)
    assert {stored.dtype(name) for name in stored.names()} == {torch.bfloat16}
    assert new.metrics["latency_speedup"] > 0 and new.metrics["params_ratio"] <= 0.8


def test_refusals_leave_out_untouched(folders, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    text = f"text:{folders['text']}"
    with pytest.raises(InputError, match="positions"):
        prune_language_model_layerwise(folders["untied"], out, text, **{**OPTIONS, "length": 65})
    with pytest.raises(InputError, match="unknown method"):
        prune_language_model_layerwise(folders["untied"], out, text, method="nope")
    assert (out / "keep.txt").is_file()
