"""Stage report of a zoo run: a Markdown and HTML report a person can read — kept channels
per layer, score distributions per layer, per-class accuracy of every model (the forgotten
class marked), the unlearning evidence before and after, and the synthetic calibration
samples — written to the report folder."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tasks.rendering import (
    UNLEARNING_METRICS,
    Report,
    audit_paragraph,
    plot_fidelity,
    plot_kept_channels,
    plot_per_class,
    plot_unlearning,
    png,
    pruning_and_forgetting_rows,
    to_html,
)
from tasks.reports import read_json, write_report
from tasks.tables import read_csv
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    preview = ws.artifact("synthetic") / "preview.png"
    results = RunResults(
        params=params,
        evaluation=read_json(ws.artifact("evaluation")),
        pruned=read_json(ws.artifact("pruned_metrics")),
        layers=read_csv(ws.artifact("pruned_layers")),
        scores=torch.load(ws.artifact("scores"), weights_only=True)["layers"],  # the score stage's ModelScores payload
        per_class=read_csv(ws.artifact("per_class")),
        unlearned=read_json(ws.artifact("unlearned_metrics")),
        images={"synthetic_preview.png": preview.read_bytes()} if preview.exists() else {},
    )
    return write_report(ws, report(results))


@dataclass
class RunResults:
    """What the report shows: the evaluate stage's metrics, the prune stage's metrics and
    per-layer rows (`layer`, `channels_before`, `channels_after`), the score tensors per
    layer, per-class test accuracy rows (`class`, one column per model), the unlearn
    stage's metrics, and extra figures already rendered (name -> PNG bytes)."""

    params: object
    evaluation: dict
    pruned: dict
    layers: list[dict]
    scores: dict[str, torch.Tensor]
    per_class: list[dict]
    unlearned: dict
    images: dict[str, bytes] = field(default_factory=dict)


def report(results: RunResults) -> Report:
    """Render the figures and the Markdown/HTML text (figures referenced by file name)."""
    figures = {
        "kept_channels.png": png(plot_kept_channels(results.layers)),
        "fidelity_scores.png": png(plot_fidelity(results.scores)),
        "per_class_accuracy.png": png(plot_per_class(results.per_class, results.evaluation["forget_class"])),
        "unlearning.png": png(plot_unlearning(unlearning_rows(results))),
        **results.images,
    }
    text = render_markdown(results.params, results.evaluation, results.pruned, list(figures))
    return Report(text, to_html(text), figures)


def unlearning_rows(results: RunResults) -> dict[str, dict[str, float]]:
    """UA/RA/TA/MIA before unlearning, after it, and after fine-tuning."""
    unlearned, final = results.unlearned, results.evaluation
    return {
        "before unlearning (pruned)": {k: unlearned[f"before_{k}"] for k in UNLEARNING_METRICS},
        f"after {unlearned['method']}": {k: unlearned[k] for k in UNLEARNING_METRICS},
        "after fine-tuning (final)": {k: final[k] for k in UNLEARNING_METRICS},
    }


def render_markdown(params: object, evaluation: dict, pruned: dict, figures: list[str]) -> str:
    rows = [
        ("base model test accuracy (%)", evaluation["base_test_accuracy"]),
        ("pruned test accuracy (%)", evaluation["pruned_test_accuracy"]),
        *pruning_and_forgetting_rows(evaluation),
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
        *audit_paragraph(evaluation),
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
