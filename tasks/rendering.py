"""What every kind's report is made of: the rendered `Report` (Markdown, HTML, figures as
PNG bytes), the figures a classifier's and a language model's reports share, and the rows
of what pruning and forgetting did. Each kind's report stage (`kinds/<kind>/report.py`)
composes its own report from these; objects in, text and PNG bytes out."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import markdown as markdown_lib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import torch  # noqa: E402

UNLEARNING_METRICS = ("UA", "RA", "TA", "MIA")


@dataclass
class Report:
    markdown: str
    html: str
    figures: dict[str, bytes]


def to_html(text: str) -> str:
    """The Markdown `text` as a standalone HTML page (its tables rendered)."""
    html = markdown_lib.markdown(text, extensions=["tables"])
    style = "body{font-family:sans-serif;max-width:960px;margin:auto}td,th{border:1px solid #ccc;padding:4px 8px}"
    head = f"<head><meta charset='utf-8'><title>modhifi report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{html}</body></html>\n"


def png(figure: plt.Figure) -> bytes:
    """`figure` as PNG bytes (no timestamp in them: the same figure hashes the same), closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


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


def pruning_and_forgetting_rows(e: dict) -> list[tuple[str, float]]:
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
        *audit_rows(e),
    ]


# The forgetting audit's figures (`modhifi_core.durability.audit_forgetting`), as reported.
AUDIT_ROWS = [
    ("feature probe: held-out forget-class samples recognised (%)", "probe_forget_accuracy"),
    ("feature probe: held-out retained-class samples recognised (%)", "probe_retain_accuracy"),
    ("feature probe before unlearning: forget class (%)", "original_probe_forget_accuracy"),
    ("feature probe on the last stage's input: forget class (%)", "probe_stage_forget_accuracy"),
    ("forget-data relearning: SGD steps until > 50% recognised", "relearn_forget_steps"),
    ("the same after resetting its class row of the classifier", "relearn_forget_steps_after_head_reset"),
    ("the same, the model before unlearning with its class row reset", "head_reset_relearn_forget_steps"),
]


def audit_rows(e: dict) -> list[tuple[str, float]]:
    """The audit's rows present in the evaluation `e` (an unlearned class)."""
    return [(label, float(e[key])) for label, key in AUDIT_ROWS if key in e]


def audit_paragraph(e: dict) -> list[str]:
    """Where the forgetting lives, in words (`durability.verdict_sentence`, the rule of
    `where_forgetting_lives`), as Markdown lines; none without an audit."""
    if "forgetting_lives_in" not in e:
        return []
    from modhifi_core.durability import verdict_sentence

    lines = [f"**{verdict_sentence(e)}**", ""]
    if e.get("forgetting_is_logit_mask"):
        lines += ["The unlearning method was asked for a logit mask: the forgetting is a mask by construction.", ""]
    return lines


@dataclass
class ImageResults:
    """What the report of an open-weight image classifier's run shows: the evaluate stage's
    metrics (accuracy of base, pruned and unlearned; UA/RA/TA/MIA and their audit), the prune
    and unlearn stages' metrics, per-layer rows (`layer`, `channels_before`,
    `channels_after`), per-class test accuracy rows (`class`, one column per model), and
    the stages that did not apply with their reason."""

    params: object
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
        "kept_channels.png": png(plot_kept_channels(results.layers, unit)),
        "per_class_accuracy.png": png(plot_per_class(results.per_class, e["forget_class"])),
        "unlearning.png": png(plot_unlearning(evidence)),
        **results.images,
    }
    text = render_image(results, unit, list(figures))
    return Report(text, to_html(text), figures)


def render_image(results: ImageResults, unit: str, figures: list[str]) -> str:
    e, p, u, params = results.evaluation, results.pruned, results.unlearned, results.params
    rows = [
        (f"base test accuracy on {e['dataset']} (%)", e["base_test_accuracy"]),
        ("pruned test accuracy (%)", e["pruned_test_accuracy"]),
        ("unlearned test accuracy, all classes (%)", e["unlearned_test_accuracy"]),
        *pruning_and_forgetting_rows(e),
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
        *audit_paragraph(e),
        f"Lineage: `{p['lineage']}` and `{u['lineage']}` (parents' sha256, params, code version).",
        "",
    ]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)
