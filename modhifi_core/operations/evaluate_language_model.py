"""Operation `evaluate_language_model`: a Hugging Face language model on held-out text —
what `modhifi evaluate --model hf:DIR --text FILE [--reference hf:DENSE]` runs, and what
`prune_language_model` reports on `eval_text`.

A causal LM has a perplexity of its own (`reference`: also the reference's, e.g. the dense
model a pruned one came from). An encoder has none: it is measured against a `reference`
encoder — mean cosine between the two models' mean-pooled sentence embeddings and top-10
neighbour agreement over held-out sentences (issue 12's encoder metrics).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from modhifi_core.compute import place, requested
from modhifi_core.errors import InputError
from modhifi_core.language import embedding_agreement, held_out_sentences, perplexity, text_windows


def evaluate_language_model(
    model: nn.Module,
    tokenizer: Any,
    text: str,
    *,
    reference: nn.Module | None = None,
    samples: int = 16,
    length: int = 256,
    seed: int = 1,
    batch_size: int = 4,
    per_item: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """`model` on held-out `text` (a file or folder), draws seeded with `seed`; what is
    measured follows what the model computes, not what it is called.

    A model with a language-modelling head (`has_lm_head`: a causal LM): `perplexity`,
    `nll`, `tokens` (predicted) and `eval_tokens` (read) over `samples` windows of `length`
    tokens; with `reference`, also `dense_perplexity` (the reference's on the same windows)
    and `perplexity_ratio`. A model without one (a bare encoder, e.g. `BertModel`):
    `reference` required (InputError without it); over `samples` held-out sentences,
    `mean_cosine`, `min_cosine`, `top10_agreement` of the reference's and `model`'s
    embeddings, `eval_sentences`, `neighbours`.

    `per_item`: also `per_item`, the values behind the means for a report's table or plot —
    `{"nll": [...], "dense_nll": [...]}` per window (nats per token; `dense_nll` with a
    reference) or `{"cosine": [...]}` per sentence."""
    for module in (model, reference) if reference is not None else (model,):
        place(module, requested(device, dtype))
    if tokenizer is None:
        raise InputError("the model folder has no tokenizer: evaluating on text needs one")
    if not has_lm_head(model):
        if reference is None:
            raise InputError(
                "an encoder has no perplexity: give a reference encoder (--reference hf:DENSE) to compare "
                "its sentence embeddings with"
            )
        sentences = held_out_sentences(text, samples, seed)
        metrics, cosines = embedding_agreement(reference, model, tokenizer, sentences)
        metrics = {**metrics, "eval_sentences": metrics.pop("sentences")}
        return metrics | ({"per_item": {"cosine": cosines.tolist()}} if per_item else {})
    from modhifi_core.sources.huggingface import check_length

    check_length(model, length)
    windows = text_windows(text, tokenizer, samples, length, seed)
    metrics = {**perplexity(model, windows, batch_size), "eval_tokens": int(windows.numel())}
    items = {"nll": metrics.pop("window_nll")}
    if reference is not None:
        dense = perplexity(reference, windows, batch_size)
        metrics |= {
            "dense_perplexity": dense["perplexity"],
            "perplexity_ratio": metrics["perplexity"] / dense["perplexity"],
        }
        items["dense_nll"] = dense["window_nll"]
    return metrics | ({"per_item": items} if per_item else {})


def has_lm_head(model: nn.Module) -> bool:
    """Whether `model` predicts tokens (a transformers model whose output embeddings exist)."""
    output = getattr(model, "get_output_embeddings", None)
    return output is not None and output() is not None
