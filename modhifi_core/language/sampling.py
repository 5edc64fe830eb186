"""Data-free calibration for causal LMs: sequences sampled from the model itself."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError

PROMPTS = ("bos", "random")


@torch.no_grad()
def sample_sequences(
    model: nn.Module,
    tokenizer: Any,
    n: int,
    length: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.95,
    prompt: str = "bos",
    batch_size: int = 16,
) -> Tensor:
    """`(n, length)` token ids sampled from `model` (ancestral sampling with `temperature`
    and nucleus `top_p`, end-of-sequence suppressed so every row has `length` tokens).

    Each row starts from one token: `bos` the tokenizer's BOS (else EOS) token; `random`
    a token drawn uniformly from the vocabulary (diversifies the opening, as in LLM-QAT's
    data-free generation). Seeded: the same arguments give the same tokens on one machine."""
    if prompt not in PROMPTS:
        raise InputError(f"unknown sampling prompt {prompt!r}; choose one of {', '.join(PROMPTS)}")
    if n < 1 or length < 2:
        raise InputError(f"need n >= 1 sequences of length >= 2, got {n} x {length}")
    if not hasattr(model, "generate"):
        raise InputError(f"{type(model).__name__} cannot generate: self-sampled calibration needs a causal LM")
    generator = torch.Generator().manual_seed(seed)
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    vocab = model.get_output_embeddings().weight.shape[0]
    was_training = model.training
    model.eval()
    rows = []
    try:
        for first in range(0, n, batch_size):
            count = min(batch_size, n - first)
            if prompt == "random":
                starts = torch.randint(0, min(vocab, len(tokenizer)), (count, 1), generator=generator)
            else:
                starts = torch.full((count, 1), start_id, dtype=torch.long)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            out = model.generate(
                input_ids=starts,
                attention_mask=torch.ones_like(starts),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=length - 1,
                min_new_tokens=length - 1,
                pad_token_id=tokenizer.eos_token_id,
            )
            rows.append(out[:, :length])
    finally:
        model.train(was_training)
    return torch.cat(rows)
