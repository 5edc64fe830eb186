"""report of a Hugging Face language model's run: the language section, the prune and
evaluate stages' results, figures, and the stages that do not apply (`kind.skipped`)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from kinds.language import LanguageKind
from tasks.rendering import Report, plot_fidelity, plot_kept_channels, png, to_html
from tasks.reports import read_json, write_report
from tasks.tables import read_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """report.md, report.html and the figures of the run into the report folder."""
    results = LanguageResults(
        params=params,
        evaluation=read_json(ws.artifact("evaluation")),
        pruned=read_json(ws.artifact("pruned_metrics")),
        layers=read_csv(ws.artifact("pruned_layers")),
        scores=torch.load(ws.artifact("scores"), weights_only=True)["layers"],
        windows=read_csv(ws.artifact("per_class")),
        skipped=dict(kind.skipped),
    )
    return write_report(ws, language_report(results))


@dataclass
class LanguageResults:
    """What the report of a language-model run shows: the evaluate stage's metrics (a
    causal LM's perplexity dense and pruned, or an encoder's embedding agreement; ratios,
    speed-up), the prune stage's metrics, FFN neurons per layer (`layer`,
    `channels_before`, `channels_after`), the score stage's per-neuron scores by layer,
    per-window rows (`window`, `dense_nll`, `pruned_nll`; an encoder's `sentence`,
    `cosine`), and the stages that did not apply with their reason."""

    params: object
    evaluation: dict
    pruned: dict
    layers: list[dict]
    scores: dict[str, torch.Tensor]
    windows: list[dict]
    skipped: dict[str, str]


def language_report(results: LanguageResults) -> Report:
    """The report of a language-model run: its language section, figures of the FFN
    neurons kept per layer, the neuron scores per layer and the held-out measurement per
    window (perplexity) or per sentence (embedding cosine)."""
    encoder = "mean_cosine" in results.evaluation
    figures = {
        "kept_neurons.png": png(plot_kept_channels(results.layers, "FFN neurons")),
        "neuron_scores.png": png(plot_fidelity(results.scores, f"{results.pruned['score']} score per FFN neuron")),
    }
    if encoder:
        figures["cosine_per_sentence.png"] = png(plot_sentence_cosines(results.windows))
    else:
        figures["perplexity_per_window.png"] = png(plot_windows(results.windows))
    text = render_language(results, list(figures))
    return Report(text, to_html(text), figures)


def _held_out_rows(e: dict) -> tuple[list[tuple[str, float]], str]:
    """The measured rows and how they were measured: perplexity (a causal LM) or the
    agreement of mean-pooled sentence embeddings (an encoder)."""
    if "mean_cosine" in e:
        k = e["neighbours"]
        rows = [
            ("mean cosine, pruned vs dense sentence embedding", e["mean_cosine"]),
            ("minimum cosine", e["min_cosine"]),
            (f"top-{k} neighbour agreement", e[f"top{k}_agreement"]),
        ]
        return rows, f"mean-pooled sentence embeddings of {e['eval_sentences']} held-out sentences"
    rows = [
        ("dense perplexity", e["dense_perplexity"]),
        ("pruned perplexity", e["perplexity"]),
        ("perplexity ratio (pruned / dense)", e["perplexity_ratio"]),
    ]
    return rows, f"perplexity on {e['eval_tokens']} held-out tokens"


def render_language(results: LanguageResults, figures: list[str]) -> str:
    e, p, lang = results.evaluation, results.pruned, results.params.language
    target = (
        f"{lang.target_params:.0%} of its parameters"
        if lang.target_params
        else f"{lang.ffn_fraction:.0%} fewer FFN neurons"
    )
    measured, how = _held_out_rows(e)
    rows = [
        *measured,
        ("parameters remaining", e["params_ratio"]),
        (f"FLOPs per token remaining (at {lang.length} tokens)", e["flops_ratio"]),
        ("CPU latency speed-up (dense / pruned, one sequence)", e.get("latency_speedup", float("nan"))),
    ]
    calibration = (
        "sequences sampled from the model itself (data-free)" if lang.calibration == "self" else lang.calibration
    )
    lines = [
        "# modhifi run report",
        "",
        "## Language model",
        "",
        f"`{results.params.model.source}` pruned with **{lang.method}** (score {p['score']}, compensation "
        f"{p['compensation']}) to {target}, calibrated on {lang.samples} × {lang.length} tokens of {calibration}; "
        f"{how} of `{lang.eval_text}`. No fine-tuning.",
        "",
        "| result | value |",
        "|---|---|",
        *[f"| {label} | {value:.4g} |" for label, value in rows],
        "",
        "The prune stage scored each FFN block from collect's statistics itself; the score stage's "
        "scores (`outputs/scores/scores.pt`, plotted below) are the same ranking, not read back.",
        "",
        *[f"- {stage}: skipped: {reason}" for stage, reason in results.skipped.items()],
        "",
        f"Lineage: `{p['lineage']}` (parents' sha256, params, code version); the folder loads with "
        "`transformers` `from_pretrained` alone.",
        "",
    ]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)


def plot_windows(rows: list[dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [int(r["window"]) for r in rows]
    for column, label in (("dense_nll", "dense"), ("pruned_nll", "pruned")):
        ax.plot(x, [float(r[column]) for r in rows], marker="o", label=label)
    ax.set_xlabel("held-out window")
    ax.set_ylabel("nats per token (log perplexity)")
    ax.set_title("Perplexity per held-out window")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_sentence_cosines(rows: list[dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    cosines = sorted(float(r["cosine"]) for r in rows)
    ax.plot(range(len(cosines)), cosines, marker=".", linestyle="none")
    ax.set_xlabel("held-out sentence (sorted)")
    ax.set_ylabel("cosine, pruned vs dense embedding")
    ax.set_title("Sentence-embedding agreement per held-out sentence")
    fig.tight_layout()
    return fig
