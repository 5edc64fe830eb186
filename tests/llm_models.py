"""Tiny transformers built from configs (no download) and a word-level tokenizer, for the
language-model tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)

VOCAB = 64


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    """A 2-layer model of `family` (llama, qwen2, gpt2, bert, vit) with FFN width 32
    (GPT-2: 4 x 16 = 64), random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    common = {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 16, "intermediate_size": 32}
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, num_key_value_heads=1, **common))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, num_key_value_heads=1, **common))
    elif family == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0
        )
        model = GPT2LMHeadModel(config)
    elif family == "bert":
        model = BertModel(BertConfig(vocab_size=VOCAB, **common))
    elif family == "vit":
        model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, num_labels=3, **common))
    else:
        raise ValueError(family)
    return model.eval()


def example_inputs(family: str, batch: int = 3, length: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=generator)}
    return {"input_ids": torch.randint(0, VOCAB, (batch, length), generator=generator)}


def outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Lower-case words and punctuation, 60 frequent English words + 4 special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = (
        "the of and to a in is it you that he was for on are with as his they be at one have this from or had by "
        "word but what some we can out other were all there when up use your how said an each she which do their "
        ". ,"
    ).split()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3} | {w: i + 4 for i, w in enumerate(words[: VOCAB - 4])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


TEXT_WORDS = "the of and to a in is it you that he was for on are with as his they be at one have this from".split()


def word_text(path: Path, words: int, seed: int) -> Path:
    """A seeded text of about `words` words of the word tokenizer's vocabulary, one
    sentence a line (capitalised, ending in " ."), so `sentences_from_text` finds them."""
    rng = random.Random(seed)
    lines = []
    for _ in range(words // 8):
        sentence = [rng.choice(TEXT_WORDS) for _ in range(rng.randint(4, 12))]
        lines.append(" ".join([sentence[0].capitalize(), *sentence[1:]]) + " .")
    path.write_text("\n".join(lines) + "\n")
    return path
