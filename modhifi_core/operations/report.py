"""Operation `report`: a Markdown and HTML report of a pipeline run with plots a person
can read — kept channels per layer, score distributions per layer, per-class accuracy of
every model (the forgotten class marked), the unlearning evidence before and after, and
the synthetic calibration samples. Objects in (the run's metrics), objects out (text and
PNG bytes); the report stage writes them."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import markdown as markdown_lib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import torch  # noqa: E402

from tasks.params import Params  # noqa: E402

UNLEARNING_METRICS = ("UA", "RA", "TA", "MIA")


@dataclass
class RunResults:
    """What the report shows: the evaluate stage's metrics, the prune stage's metrics and
    per-layer rows (`layer`, `channels_before`, `channels_after`), the score tensors per
    layer, per-class test accuracy rows (`class`, one column per model), the unlearn
    stage's metrics, and extra figures already rendered (name -> PNG bytes)."""

    params: Params
    evaluation: dict
    pruned: dict
    layers: list[dict]
    scores: dict[str, torch.Tensor]
    per_class: list[dict]
    unlearned: dict
    images: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Report:
    markdown: str
    html: str
    figures: dict[str, bytes]


def report(results: RunResults) -> Report:
    """Render the figures and the Markdown/HTML text (figures referenced by file name)."""
    figures = {
        "kept_channels.png": _png(plot_kept_channels(results.layers)),
        "fidelity_scores.png": _png(plot_fidelity(results.scores)),
        "per_class_accuracy.png": _png(plot_per_class(results.per_class, results.evaluation["forget_class"])),
        "unlearning.png": _png(plot_unlearning(unlearning_rows(results))),
        **results.images,
    }
    text = render_markdown(results.params, results.evaluation, results.pruned, list(figures))
    return Report(text, _html(text), figures)


def _html(text: str) -> str:
    html = markdown_lib.markdown(text, extensions=["tables"])
    style = "body{font-family:sans-serif;max-width:960px;margin:auto}td,th{border:1px solid #ccc;padding:4px 8px}"
    head = f"<head><meta charset='utf-8'><title>modhifi report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{html}</body></html>\n"


@dataclass
class LanguageResults:
    """What the report of a language-model run shows: the evaluate stage's metrics (a
    causal LM's perplexity dense and pruned, or an encoder's embedding agreement; ratios,
    speed-up), the prune stage's metrics, FFN neurons per layer (`layer`,
    `channels_before`, `channels_after`), the score stage's per-neuron scores by layer,
    per-window rows (`window`, `dense_nll`, `pruned_nll`; an encoder's `sentence`,
    `cosine`), and the stages that did not apply with their reason."""

    params: Params
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
        "kept_neurons.png": _png(plot_kept_channels(results.layers, "FFN neurons")),
        "neuron_scores.png": _png(plot_fidelity(results.scores, f"{results.pruned['score']} score per FFN neuron")),
    }
    if encoder:
        figures["cosine_per_sentence.png"] = _png(plot_sentence_cosines(results.windows))
    else:
        figures["perplexity_per_window.png"] = _png(plot_windows(results.windows))
    text = render_language(results, list(figures))
    return Report(text, _html(text), figures)


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


@dataclass
class ImageResults:
    """What the report of an open-weight image classifier's run shows: the evaluate stage's
    metrics (accuracy of base, pruned and unlearned; UA/RA/TA/MIA and their audit), the prune
    and unlearn stages' metrics, per-layer rows (`layer`, `channels_before`,
    `channels_after`), per-class test accuracy rows (`class`, one column per model), and
    the stages that did not apply with their reason."""

    params: Params
    evaluation: dict
    pruned: dict
    unlearned: dict
    layers: list[dict]
    per_class: list[dict]
    skipped: dict[str, str]
    images: dict[str, bytes] = field(default_factory=dict)


def image_report(results: ImageResults) -> Report:
    """The report of an image classifier's run: its results table, the kept channels (or
    MLP neurons) per layer, per-class accuracy of each model and the unlearning evidence."""
    e, u = results.evaluation, results.unlearned
    unit = "MLP neurons" if results.pruned["components"] == "mlp" else "output channels"
    evidence = {
        "before unlearning (pruned)": {k: u[f"before_{k}"] for k in UNLEARNING_METRICS},
        f"after {u['method']}": {k: e[k] for k in UNLEARNING_METRICS},
    }
    figures = {
        "kept_channels.png": _png(plot_kept_channels(results.layers, unit)),
        "per_class_accuracy.png": _png(plot_per_class(results.per_class, e["forget_class"])),
        "unlearning.png": _png(plot_unlearning(evidence)),
        **results.images,
    }
    text = render_image(results, unit, list(figures))
    return Report(text, _html(text), figures)


def render_image(results: ImageResults, unit: str, figures: list[str]) -> str:
    e, p, u, params = results.evaluation, results.pruned, results.unlearned, results.params
    rows = [
        (f"base test accuracy on {e['dataset']} (%)", e["base_test_accuracy"]),
        ("pruned test accuracy (%)", e["pruned_test_accuracy"]),
        ("unlearned test accuracy, all classes (%)", e["unlearned_test_accuracy"]),
        *_pruning_and_forgetting_rows(e),
    ]
    untouched = p.get("untouched") or {}
    lines = [
        "# modhifi run report",
        "",
        "## Image classifier",
        "",
        f"`{params.model.source}` pruned ({unit}) with **{p['method']}** to {params.prune.target_flops:.0%} of the "
        f"dense FLOPs, calibrated on {p['calibration_images']} {p['calibration']} images; then unlearned "
        f"**{e['forget']}** with **{u['method']}** ({u['data']} data). Measured on `{e['dataset']}` at the "
        "model's input size.",
        "",
        "| result | value |",
        "|---|---|",
        *[f"| {label} | {value:.4g} |" for label, value in rows],
        "",
        *[f"- left untouched: {name}: {why}" for name, why in untouched.items()],
        *[f"- {stage}: skipped: {reason}" for stage, reason in results.skipped.items()],
        "",
        f"Lineage: `{p['lineage']}` and `{u['lineage']}` (parents' sha256, params, code version).",
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


def unlearning_rows(results: RunResults) -> dict[str, dict[str, float]]:
    """UA/RA/TA/MIA before unlearning, after it, and after fine-tuning."""
    unlearned, final = results.unlearned, results.evaluation
    return {
        "before unlearning (pruned)": {k: unlearned[f"before_{k}"] for k in UNLEARNING_METRICS},
        f"after {unlearned['method']}": {k: unlearned[k] for k in UNLEARNING_METRICS},
        "after fine-tuning (final)": {k: final[k] for k in UNLEARNING_METRICS},
    }


def plot_kept_channels(rows: list[dict], unit: str = "output channels") -> plt.Figure:
    names = [r["layer"] for r in rows]
    before = [int(r["channels_before"]) for r in rows]
    after = [int(r["channels_after"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows)), 4))
    x = range(len(rows))
    ax.bar(x, before, color="#cccccc", label="dense")
    ax.bar(x, after, color="#1f77b4", label="kept after pruning")
    ax.set_xticks(list(x), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(unit)
    ax.set_title(f"{unit.capitalize()} kept per layer")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_fidelity(
    scores: dict[str, torch.Tensor], label: str = "score per component (saliency R̃ or fidelity s_ci)"
) -> plt.Figure:
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    ax.boxplot([scores[n].flatten().numpy() for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(label)
    ax.set_title("How much each input channel contributes to each output, per layer")
    fig.tight_layout()
    return fig


def plot_per_class(rows: list[dict], forget_class: int | None) -> plt.Figure:
    models = [k for k in rows[0] if k != "class"]
    fig, ax = plt.subplots(figsize=(9.5, 4))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        xs = [int(r["class"]) + index * width for r in rows]
        ax.bar(xs, [float(r[model]) for r in rows], width=width, label=model)
    if forget_class is not None:
        label = f"forgotten class {forget_class}"
        ax.axvspan(forget_class - 0.1, forget_class + 0.9, color="red", alpha=0.1, label=label)
    ax.set_xticks([int(r["class"]) + 0.4 for r in rows], [r["class"] for r in rows])
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-class test accuracy of each model")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_unlearning(rows: dict[str, dict[str, float]]) -> plt.Figure:
    metrics = list(UNLEARNING_METRICS)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(rows), 1)
    for index, (label, values) in enumerate(rows.items()):
        ax.bar([m + index * width for m in range(len(metrics))], [values[k] for k in metrics], width=width, label=label)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 105)
    ax.set_title("Unlearning evidence (UA: forgotten, RA/TA: kept, MIA: looks unseen)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _pruning_and_forgetting_rows(e: dict) -> list[tuple[str, float]]:
    """The summary rows a classifier's report shares: what pruning cost and gained, and
    the unlearning evidence (NaN where a measurement was skipped)."""
    return [
        ("FLOPs remaining (pruned / dense)", e["flops_ratio"]),
        ("parameters remaining", e["params_ratio"]),
        ("CPU latency speed-up", e.get("latency_speedup", float("nan"))),
        (f"UA, forgetting {e['forget']} (%)", e["UA"]),
        ("RA (%)", e["RA"]),
        ("TA (%)", e["TA"]),
        ("MIA-Efficacy (%)", e["MIA"]),
        ("UA after BN recalibration on retained data (%)", e["UA_after_bn_recalibration"]),
        ("UA after the relearning attack on retained data (%)", e.get("UA_after_relearning", float("nan"))),
    ]


def render_markdown(params: Params, evaluation: dict, pruned: dict, figures: list[str]) -> str:
    rows = [
        ("base model test accuracy (%)", evaluation["base_test_accuracy"]),
        ("pruned test accuracy (%)", evaluation["pruned_test_accuracy"]),
        *_pruning_and_forgetting_rows(evaluation),
        ("final test accuracy, all classes (%)", evaluation["final_test_accuracy"]),
    ]
    lines = [
        "# modhifi run report",
        "",
        f"Pruned with **{pruned['method']}** to {params.prune.target_flops:.0%} of the dense FLOPs "
        f"(calibration: {pruned['calibration']}), then unlearned **{evaluation['forget']}** "
        f"with **{params.unlearn.method}** ({params.unlearn.data} data), "
        f"then fine-tuned {params.finetune.epochs} epochs.",
        "",
        pruning_provenance(pruned),
        "",
        "| result | value |",
        "|---|---|",
        *[f"| {label} | {value:.4g} |" for label, value in rows],
        "",
        "Lineage: `modhifi lineage outputs/final/model.pt` lists every stage, its parameters and hashes.",
        "",
    ]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)


def pruning_provenance(pruned: dict) -> str:
    """One sentence: what the prune stage's first round ranked by, from which statistics,
    and how many later rounds re-collected statistics on the pruned model."""
    statistics = "its own statistics"
    if pruned.get("first_round_statistics") == "given":
        statistics = "collect's statistics (`outputs/statistics/statistics.pt`)"
    if pruned["method"] != "modhifi":
        ranking = f"{pruned['method']} importance"
    elif pruned.get("first_round_scores") == "given":
        ranking = "the score stage's scores (`outputs/scores/scores.pt`)"
    else:
        ranking = "scores it computed itself"
    later = int(pruned.get("rounds", 1)) - 1
    rest = (
        f"the {later} later round{'s' if later > 1 else ''} re-collected statistics and re-scored on the pruned model"
        if later
        else "it took a single round"
    )
    return f"Pruning round 1 ranked channels by {ranking}, with {statistics}; {rest}."


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
