"""evaluate on a Hugging Face language model, dense vs pruned on held-out text: a causal
LM's perplexity, an encoder's sentence-embedding agreement."""

from __future__ import annotations

import hashlib
import json

from kinds.language import LanguageKind
from kinds.language.train_base import load_base
from modhifi_core.operations.evaluate_language_model import evaluate_language_model
from modhifi_core.safe_io import atomic_write_json, atomic_write_text, sha256_file
from tasks.inputs import checked_input
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """The pruned model against the dense one on `language.eval_text`
    (`evaluate_language_model`, held-out draws seeded with seed + 1, as `modhifi evaluate`):
    a causal LM's perplexities, an encoder's sentence-embedding agreement; with the prune
    stage's ratios and speed-up and a per-window (per-sentence) table for the report and
    `dvc plots`."""
    base = load_base(ws, kind)
    text = checked_input(ws, params, "eval_text", kind)
    pruned = kind.sibling(f"hf:{ws.artifact('pruned_hf')}").load(need_tokenizer=False)
    lang = params.language
    metrics = evaluate_language_model(
        pruned.model,
        base.tokenizer,
        text["path"],
        reference=base.model,
        samples=lang.eval_samples,
        length=lang.length,
        seed=params.seed + 1,
        batch_size=lang.batch_size,
        per_item=True,
    )
    rows = item_rows(metrics.pop("per_item"))
    prune_metrics = json.loads(ws.artifact("pruned_metrics").read_text())
    metrics |= {k: prune_metrics[k] for k in ("params_ratio", "flops_ratio", "latency_speedup") if k in prune_metrics}
    files = json.dumps(text["files"], sort_keys=True).encode()
    held_out_text = {"path": text["path"], "files": len(text["files"]), "sha256": hashlib.sha256(files).hexdigest()}
    metrics |= {"eval_text": held_out_text, "method": lang.method}
    metrics["model_sha256"] = {"base": sha256_file(ws.artifact("base_model")), **pruned_weights(ws)}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    atomic_write_text(ws.artifact("per_class"), "\n".join(rows) + "\n")
    return metrics


def item_rows(items: dict[str, list[float]]) -> list[str]:
    """The CSV rows of `evaluate_language_model`'s `per_item`: each window's nats per token
    dense and pruned (a causal LM), or each sentence's cosine (an encoder)."""
    if "cosine" in items:
        return ["sentence,cosine", *(f"{i},{c:.6f}" for i, c in enumerate(items["cosine"]))]
    pairs = enumerate(zip(items["dense_nll"], items["nll"]))
    return ["window,dense_nll,pruned_nll", *(f"{i},{d:.6f},{p:.6f}" for i, (d, p) in pairs)]


def pruned_weights(ws: Workspace) -> dict[str, str]:
    """sha256 of the pruned folder's weight files, as `pruned/<file>`."""
    return {f"pruned/{p.name}": sha256_file(p) for p in sorted(ws.artifact("pruned_hf").glob("*.safetensors"))}
