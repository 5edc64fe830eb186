"""evaluate on a Hugging Face language model, dense vs pruned on held-out text: a causal
LM's perplexity, an encoder's sentence-embedding agreement."""

from __future__ import annotations

import hashlib
import json
import math

from modhifi_core.language import embedding_agreement, held_out_sentences, perplexity, text_windows
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_json, atomic_write_text, sha256_file
from modhifi_core.sources import LoadedModel, load_hf
from tasks.inputs import check_model_fits, checked_input
from tasks.lm import HF_FOLDER, NEIGHBOURS
from tasks.lm.base import load_base
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    """The dense and the pruned model on `language.eval_text` (held-out draws seeded with
    seed + 1, as `modhifi evaluate`): `perplexity_metrics` for a causal LM,
    `agreement_metrics` for an encoder; with the prune stage's ratios and speed-up and a
    per-window (per-sentence) table for the report and `dvc plots`."""
    kind = check_model_fits(ws, params, keys=("length", "eval_samples"))
    base = load_base(ws)
    text = checked_input(ws, params, "eval_text")
    pruned = load_hf(ws.artifact(HF_FOLDER), kind=kind)
    measure = perplexity_metrics if kind == "causal-lm" else agreement_metrics
    metrics, rows = measure(base, pruned, text["path"], params)
    prune_metrics = json.loads(ws.artifact("pruned_metrics").read_text())
    metrics |= {k: prune_metrics[k] for k in ("params_ratio", "flops_ratio", "latency_speedup") if k in prune_metrics}
    files = json.dumps(text["files"], sort_keys=True).encode()
    held_out_text = {"path": text["path"], "files": len(text["files"]), "sha256": hashlib.sha256(files).hexdigest()}
    metrics |= {"eval_text": held_out_text, "method": params.language.method}
    metrics["model_sha256"] = {"base": sha256_file(ws.artifact("base_model")), **pruned_weights(ws)}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    atomic_write_text(ws.artifact("per_class"), "\n".join(rows) + "\n")
    return metrics


def perplexity_metrics(base: LoadedModel, pruned: LoadedModel, text: str, params: Params) -> tuple[dict, list[str]]:
    """Perplexity dense and pruned over `eval_samples` windows of `length` tokens; rows:
    each window's nats per token."""
    lang = params.language
    held_out = text_windows(text, base.tokenizer, lang.eval_samples, lang.length, params.seed + 1)
    nll = {
        name: [perplexity(model, window[None])["nll"] for window in held_out]
        for name, model in (("dense", base.model), ("pruned", pruned.model))
    }
    dense_ppl, ppl = (math.exp(sum(v) / len(v)) for v in nll.values())
    metrics = {"dense_perplexity": dense_ppl, "perplexity": ppl, "perplexity_ratio": ppl / dense_ppl}
    metrics["eval_tokens"] = int(held_out.numel())
    rows = ["window,dense_nll,pruned_nll", *(f"{i},{d:.6f},{p:.6f}" for i, (d, p) in enumerate(zip(*nll.values())))]
    return metrics, rows


def agreement_metrics(base: LoadedModel, pruned: LoadedModel, text: str, params: Params) -> tuple[dict, list[str]]:
    """Mean-pooled sentence embeddings of `eval_samples` held-out prose sentences, dense
    vs pruned: `mean_cosine`, `min_cosine`, `top{NEIGHBOURS}_agreement`; rows: each
    sentence's cosine."""
    sentences = held_out_sentences(text, params.language.eval_samples, params.seed + 1)
    metrics, cosines = embedding_agreement(base.model, pruned.model, base.tokenizer, sentences, NEIGHBOURS)
    metrics["eval_sentences"] = metrics.pop("sentences")
    return metrics, ["sentence,cosine", *(f"{i},{c:.6f}" for i, c in enumerate(cosines.tolist()))]


def pruned_weights(ws: Workspace) -> dict[str, str]:
    """sha256 of the pruned folder's weight files, as `pruned/<file>`."""
    return {f"pruned/{p.name}": sha256_file(p) for p in sorted(ws.artifact(HF_FOLDER).glob("*.safetensors"))}
