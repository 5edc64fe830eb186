"""evaluate on a Hugging Face causal LM: perplexity dense vs pruned on held-out text."""

from __future__ import annotations

import hashlib
import json
import math

from modhifi_core.language import perplexity, text_windows
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_json, atomic_write_text, sha256_file
from modhifi_core.sources import load_hf
from tasks.inputs import checked_input
from tasks.lm import HF_FOLDER
from tasks.lm.base import load_base
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    """Perplexity of the dense and the pruned model on `eval_samples` held-out windows of
    `language.eval_text` (seed + 1, as `modhifi evaluate`), with the prune stage's ratios
    and speed-up; a per-window table (nats per token) for the report and `dvc plots`."""
    lang = params.language
    base = load_base(ws)
    text = checked_input(ws, params, "eval_text")
    pruned = load_hf(ws.artifact(HF_FOLDER), kind="causal-lm")
    held_out = text_windows(text["path"], base.tokenizer, lang.eval_samples, lang.length, params.seed + 1)
    nll = {
        name: [perplexity(model, window[None])["nll"] for window in held_out]
        for name, model in (("dense", base.model), ("pruned", pruned.model))
    }
    dense_ppl, ppl = (math.exp(sum(v) / len(v)) for v in nll.values())
    prune_metrics = json.loads(ws.artifact("pruned_metrics").read_text())
    metrics = {"dense_perplexity": dense_ppl, "perplexity": ppl, "perplexity_ratio": ppl / dense_ppl}
    metrics |= {k: prune_metrics[k] for k in ("params_ratio", "flops_ratio", "latency_speedup") if k in prune_metrics}
    files = json.dumps(text["files"], sort_keys=True).encode()
    held_out_text = {"path": text["path"], "files": len(text["files"]), "sha256": hashlib.sha256(files).hexdigest()}
    metrics |= {"eval_tokens": int(held_out.numel()), "eval_text": held_out_text, "method": lang.method}
    metrics["model_sha256"] = {"base": sha256_file(ws.artifact("base_model")), **pruned_weights(ws)}
    atomic_write_json(ws.artifact("evaluation"), metrics)
    rows = ["window,dense_nll,pruned_nll", *(f"{i},{d:.6f},{p:.6f}" for i, (d, p) in enumerate(zip(*nll.values())))]
    atomic_write_text(ws.artifact("per_class"), "\n".join(rows) + "\n")
    return metrics


def pruned_weights(ws: Workspace) -> dict[str, str]:
    """sha256 of the pruned folder's weight files, as `pruned/<file>`."""
    return {f"pruned/{p.name}": sha256_file(p) for p in sorted(ws.artifact(HF_FOLDER).glob("*.safetensors"))}
