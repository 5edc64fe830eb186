"""Measurements for language models: perplexity (causal LMs) and agreement of mean-pooled
sentence embeddings between a dense and a pruned encoder."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modhifi_core.errors import InputError


@torch.no_grad()
def perplexity(model: nn.Module, windows: Tensor, batch_size: int = 4) -> dict:
    """`exp` of the mean next-token negative log-likelihood over every window of
    `windows` `(N, L)` (each predicts its last L−1 tokens). Returns `perplexity`, `nll`
    (nats per token), `tokens` (predicted tokens counted) and `window_nll` (each window's
    nats per token, N floats)."""
    model.eval()
    window_nll = []
    for chunk in windows.split(batch_size):
        logits = model(input_ids=chunk, use_cache=False).logits[:, :-1].float()
        targets = chunk[:, 1:].to(logits.device)
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L-1)
        window_nll.extend(losses.double().mean(1).tolist())
    tokens = int(windows.shape[0] * (windows.shape[1] - 1))
    nll = sum(window_nll) / len(window_nll)  # every window predicts the same number of tokens
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": tokens, "window_nll": window_nll}


@torch.no_grad()
def sentence_embeddings(
    model: nn.Module, tokenizer: Any, sentences: list[str], batch_size: int = 64, max_length: int = 128
) -> Tensor:
    """Mean-pooled last hidden states over each sentence's real tokens `(S, hidden)`
    (sentence-transformers' pooling for all-MiniLM-L6-v2, before normalisation)."""
    model.eval()
    rows = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(
            sentences[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.device, hidden.dtype)
        rows.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))
    return torch.cat(rows)


def neighbours(embeddings: Tensor, k: int) -> Tensor:
    """Indices `(S, k)` of each row's k nearest other rows by cosine similarity."""
    unit = F.normalize(embeddings.double(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-math.inf)
    return similarity.topk(k, dim=1).indices


def embedding_cosines(dense: Tensor, pruned: Tensor) -> Tensor:
    """Cosine `(S,)` float64 between each sentence's dense and pruned embedding `(S, hidden)`."""
    return F.cosine_similarity(dense.double(), pruned.double(), dim=1)


def encoder_agreement(dense: Tensor, pruned: Tensor, k: int = 10) -> dict:
    """From embeddings `(S, hidden)` of the same sentences: `mean_cosine` between each
    sentence's dense and pruned embedding (and its minimum), and `top{k}_agreement`, the
    mean fraction of each sentence's k nearest neighbours (among the S) that both agree on."""
    if dense.shape[0] <= k:
        raise InputError(f"top-{k} neighbour agreement needs more than {k} sentences, got {dense.shape[0]}")
    cosine = embedding_cosines(dense, pruned)
    a, b = neighbours(dense, k), neighbours(pruned, k)
    overlap = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).double().mean(1)
    return {
        "mean_cosine": cosine.mean().item(),
        "min_cosine": cosine.min().item(),
        f"top{k}_agreement": overlap.mean().item(),
        "sentences": dense.shape[0],
    }


def embedding_agreement(
    dense: nn.Module, pruned: nn.Module, tokenizer: Any, sentences: list[str], k: int = 10
) -> tuple[dict, Tensor]:
    """`encoder_agreement` of two encoders' `sentence_embeddings` of the same `sentences`
    (plus `neighbours`: k), and each sentence's cosine `(S,)` between them."""
    a, b = (sentence_embeddings(model, tokenizer, sentences) for model in (dense, pruned))
    return {**encoder_agreement(a, b, k), "neighbours": k}, embedding_cosines(a, b)
