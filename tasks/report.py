"""Stage report: a Markdown (and HTML) report of the run with plots a person can read.

Plots: kept channels per layer, fidelity score distributions per layer, per-class
accuracy of every model (the forgotten class marked), the unlearning metrics before
and after, and the synthetic calibration samples.
"""

from __future__ import annotations

import csv
import html
import io
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import torch  # noqa: E402

from modhifi_core.params import Params  # noqa: E402
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_text  # noqa: E402
from tasks.workspace import Workspace  # noqa: E402


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    out = ws.artifact("report")
    out.mkdir(parents=True, exist_ok=True)
    evaluation = json.loads(ws.artifact("evaluation").read_text())
    pruned = json.loads(ws.artifact("pruned_metrics").read_text())
    figures = {
        "kept_channels.png": plot_kept_channels(_read_csv(ws.artifact("pruned_layers"))),
        "fidelity_scores.png": plot_fidelity(torch.load(ws.artifact("scores"), weights_only=True)),
        "per_class_accuracy.png": plot_per_class(_read_csv(ws.artifact("per_class")), evaluation["forget_class"]),
        "unlearning.png": plot_unlearning(_unlearning_rows(ws)),
    }
    for name, figure in figures.items():
        atomic_write_bytes(out / name, _png(figure))
    preview = ws.artifact("synthetic") / "preview.png"
    if preview.exists():
        shutil.copyfile(preview, out / "synthetic_preview.png")
    shown = list(figures) + (["synthetic_preview.png"] if preview.exists() else [])
    markdown = render_markdown(params, evaluation, pruned, shown)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", markdown_to_html(markdown))
    if mlflow_run is not None:
        from tasks.tracking import log_artifacts

        log_artifacts(out)
    return {"figures": len(figures)}


def plot_kept_channels(rows: list[dict]) -> plt.Figure:
    names = [r["layer"] for r in rows]
    before = [int(r["channels_before"]) for r in rows]
    after = [int(r["channels_after"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows)), 4))
    x = range(len(rows))
    ax.bar(x, before, color="#cccccc", label="dense")
    ax.bar(x, after, color="#1f77b4", label="kept after pruning")
    ax.set_xticks(list(x), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("Channels kept per layer (ModHiFi-P)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_fidelity(scores: dict[str, torch.Tensor]) -> plt.Figure:
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    ax.boxplot([scores[n].flatten().numpy() for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("singleton fidelity s_ci (0-1)")
    ax.set_title("How much of each output a single input channel explains, per layer")
    fig.tight_layout()
    return fig


def plot_per_class(rows: list[dict], forget_class: int) -> plt.Figure:
    models = [k for k in rows[0] if k != "class"]
    fig, ax = plt.subplots(figsize=(9.5, 4))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        xs = [int(r["class"]) + index * width for r in rows]
        ax.bar(xs, [float(r[model]) for r in rows], width=width, label=model)
    ax.axvspan(forget_class - 0.1, forget_class + 0.9, color="red", alpha=0.1, label=f"forgotten class {forget_class}")
    ax.set_xticks([int(r["class"]) + 0.4 for r in rows], [r["class"] for r in rows])
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-class test accuracy of each model")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_unlearning(rows: dict[str, dict[str, float]]) -> plt.Figure:
    metrics = ["UA", "RA", "TA", "MIA"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(rows), 1)
    for index, (label, values) in enumerate(rows.items()):
        ax.bar([m + index * width for m in range(len(metrics))], [values[k] for k in metrics], width=width, label=label)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 105)
    ax.set_title("Unlearning evidence (UA: forgotten, RA/TA: kept, MIA: looks unseen)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _unlearning_rows(ws: Workspace) -> dict[str, dict[str, float]]:
    unlearned = json.loads(ws.artifact("unlearned_metrics").read_text())
    final = json.loads(ws.artifact("evaluation").read_text())
    return {
        "before unlearning (pruned)": {k: unlearned[f"before_{k}"] for k in ("UA", "RA", "TA", "MIA")},
        f"after {unlearned['method']}": {k: unlearned[k] for k in ("UA", "RA", "TA", "MIA")},
        "after fine-tuning (final)": {k: final[k] for k in ("UA", "RA", "TA", "MIA")},
    }


def render_markdown(params: Params, evaluation: dict, pruned: dict, figures: list[str]) -> str:
    rows = [
        ("base model test accuracy (%)", evaluation["base_test_accuracy"]),
        ("pruned test accuracy (%)", evaluation["pruned_test_accuracy"]),
        ("FLOPs remaining (pruned / dense)", evaluation["flops_ratio"]),
        ("parameters remaining", evaluation["params_ratio"]),
        ("CPU latency speed-up", evaluation["latency_speedup"]),
        (f"UA, class {evaluation['forget_class']} (%)", evaluation["UA"]),
        ("RA (%)", evaluation["RA"]),
        ("TA (%)", evaluation["TA"]),
        ("MIA-Efficacy (%)", evaluation["MIA"]),
        ("UA after BN recalibration on retained data (%)", evaluation["UA_after_bn_recalibration"]),
        ("final test accuracy, all classes (%)", evaluation["final_test_accuracy"]),
    ]
    lines = [
        "# modhifi run report",
        "",
        f"Pruned with **{pruned['method']}** to {params.prune.target_flops:.0%} of the dense FLOPs "
        f"(calibration: {pruned['calibration']}), then unlearned class **{evaluation['forget_class']}** "
        f"with **{params.unlearn.method}** ({params.unlearn.data} data), "
        f"then fine-tuned {params.finetune.epochs} epochs.",
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


def markdown_to_html(markdown: str) -> str:
    """Just enough Markdown for this report: headings, tables, images, paragraphs."""
    body = []
    table: list[str] = []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= {"-"}:
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : line.rindex(")")]
            body.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    style = "body{font-family:sans-serif;max-width:960px;margin:auto}td,th{border:1px solid #ccc;padding:4px 8px}"
    head = f"<head><meta charset='utf-8'><title>modhifi report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
