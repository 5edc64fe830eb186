"""GGUF out when GGUF came in (issue 27): a pruned safetensors folder written back as GGUF
beside it (`modhifi_core.sources.gguf_export.write_gguf`), reloaded by transformers' own
GGUF loader (`gguf_file=`). The source is a tiny from-config Llama written as a Q8_0 GGUF
the way llama.cpp's converter writes one (q/k rows permuted for rotary), so the check of
names, layout and metadata is transformers' independent reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from modhifi_core.errors import InputError
from modhifi_core.pruning.ffn import prune_transformer
from modhifi_core.sources.huggingface import _forget_gguf_origin

gguf = pytest.importorskip("gguf")  # the `llm` extra

from modhifi_core.sources.gguf_export import write_gguf  # noqa: E402

CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=64, rms_norm_eps=1e-5)  # fmt: skip


def _permuted(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: the rotary halves interleaved per head."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _source_gguf(path):
    """A tiny Llama as a Q8_0 GGUF (norms F32), names and layout as llama.cpp writes them."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, tie_word_embeddings=False)).eval()
    writer = gguf.GGUFWriter(path, "llama")
    c = model.config
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    writer.add_token_types([1] * c.vocab_size)
    writer.add_token_merges([])
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        data = tensor.numpy()
        if name.endswith("q_proj.weight"):
            data = _permuted(data, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = _permuted(data, c.num_key_value_heads)
        target = table.get_name(name, try_suffixes=(".weight",))
        if data.ndim == 1:
            writer.add_tensor(target, data.astype(np.float32))
        else:
            quantised = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _load(folder, name):
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The source GGUF, and the model transformers loads from it, saved as safetensors."""
    root = tmp_path_factory.mktemp("gguf")
    path = _source_gguf(root / "tiny.Q8_0.gguf")
    model = _load(root, path.name)
    _forget_gguf_origin(model)
    model.save_pretrained(root / "dense")
    return path, model


IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


def test_an_unchanged_model_round_trips_to_the_sources_quantised_bytes(source):
    path, model = source
    summary = write_gguf(path.parent / "dense", path)
    assert summary["kept_type"] == {"Q8_0": 16, "F32": 5} and summary["written_as"] == {}
    written, original = gguf.GGUFReader(summary["path"]), gguf.GGUFReader(path)
    for ours, theirs in zip(written.tensors, original.tensors):
        assert ours.name == theirs.name and np.array_equal(ours.data, theirs.data)
    assert torch.equal(_logits(_load(path.parent / "dense", path.name), IDS), _logits(model, IDS))


@pytest.mark.parametrize("float_type", ["f32", "f16"])
def test_a_pruned_model_reloads_with_transformers_gguf_loader(source, tmp_path, float_type):
    """Kept gate/up rows keep their Q8_0 bytes; the refit down projections are written in
    `float_type`; the metadata describes the pruned FFN. The logits difference to the
    safetensors output: none in f32, f16 rounding in f16 (reported)."""
    path, model = source
    calibration = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(2))
    pruned = prune_transformer(model, calibration, fraction=0.5).model
    pruned.save_pretrained(tmp_path / "pruned")
    summary = write_gguf(tmp_path / "pruned", path, float_type=float_type)
    assert summary["kept_type"] == {"Q8_0": 14, "F32": 5} and summary["written_as"] == {float_type.upper(): 2}
    reloaded = _load(tmp_path / "pruned", path.name)
    assert reloaded.config.intermediate_size == 32
    expected, got = _logits(pruned, IDS), _logits(reloaded, IDS)
    difference = (got - expected).abs().max().item()
    print(f"{float_type}: GGUF vs safetensors max |logits diff| {difference:.2e} (of {expected.abs().max():.2f})")
    assert difference <= (1e-6 if float_type == "f32" else 1e-2) * expected.abs().max().item()
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_a_folder_that_does_not_match_the_source_is_refused_in_one_line(source, tmp_path):
    path, _ = source
    other = LlamaForCausalLM(LlamaConfig(**{**CONFIG, "num_hidden_layers": 1}))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match="hold different tensors") as refused:
        write_gguf(tmp_path / "other", path)
    assert "\n" not in str(refused.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(InputError, match="no .safetensors weights"):
        write_gguf(tmp_path / "empty", path)
