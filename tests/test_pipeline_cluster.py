"""`cluster.address` in the pipeline, against a real `dask scheduler` and two `dask worker`
processes: the same workspace run in-process and then on the cluster gives the same
artifacts — statistics to float64 round-off, the same pruned architecture and weights to
float32 round-off, the same unlearning metrics — and DVC re-runs exactly the stages that
declare `cluster` and those below them.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from pipeline_workspace import isolated_env, make_workspace, run_pipeline, write_params
from test_cluster import dask_processes  # noqa: F401 (the module fixture: scheduler + 2 workers)

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.metadata import without_timings
from modhifi_core.operations.statistics import ModelStatistics
from tasks.tracking import flatten

pytestmark = pytest.mark.slow

BELOW_COLLECT = ["collect", "score", "prune", "unlearn", "finetune", "evaluate", "report"]


def _statistics(root):
    payload = torch.load(root / "outputs/statistics/statistics.pt", weights_only=True)
    return ModelStatistics.from_payload(payload).layers


def _collect_workers(root) -> list[int]:
    """The `workers` metric of every MLflow run of the collect stage, oldest first."""
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "attributes.run_name = 'collect'",
        order_by=["start_time"],
    )
    return [int(run.data.metrics["workers"]) for run in runs]


def _scheduler_task_prefixes(address) -> list[str]:
    from distributed import Client

    with Client(address, timeout=30) as client:
        return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))


def _metrics(root, path):
    return json.loads((root / path).read_text())


def test_pipeline_on_a_dask_scheduler_gives_the_in_process_artifacts(tmp_path, dask_processes):  # noqa: F811
    address, _ = dask_processes
    root, env = make_workspace(tmp_path / "ws"), isolated_env(tmp_path)
    run_pipeline(root, env)
    local_stats = _statistics(root)
    local_pruned = load_checkpoint(root / "outputs/pruned/model.pt")
    local_unlearn = _metrics(root, "outputs/unlearned/metrics.json")
    assert _collect_workers(root) == [1]

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["cluster"] = {"address": address, "workers": 2}
    write_params(root, params)
    summary = run_pipeline(root, env)

    assert sorted(summary["ran"]) == sorted(BELOW_COLLECT)  # train_base and synthesize do not read `cluster`
    assert _collect_workers(root) == [1, 2]  # MLflow: the second collect saw the cluster's two workers
    assert any(prefix.startswith("run_shard") for prefix in _scheduler_task_prefixes(address))
    for name, stats in _statistics(root).items():
        reference = local_stats[name]
        for field in ("cross", "gram_diag", "output_sq", "input_sum"):
            x, y = getattr(stats, field), getattr(reference, field)
            assert (x - y).abs().max() <= 1e-10 * y.abs().max().clamp_min(1e-300), (name, field)
    pruned = load_checkpoint(root / "outputs/pruned/model.pt")
    assert pruned.config == local_pruned.config  # the same channels kept in every layer
    for key, value in local_pruned.model.state_dict().items():
        torch.testing.assert_close(pruned.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    unlearn = flatten(without_timings(_metrics(root, "outputs/unlearned/metrics.json")))
    expected = flatten(without_timings(local_unlearn))  # UA/RA/TA/MIA and every count
    assert unlearn.keys() == expected.keys()
    for key, value in expected.items():
        assert unlearn[key] == (pytest.approx(value, abs=1e-9) if isinstance(value, float) else value), key


def test_language_model_collect_on_the_scheduler_gives_the_in_process_statistics(tmp_path, dask_processes):  # noqa: F811
    """A tiny Llama's FFN statistics (`cluster.address` in a language-model run) through the
    scheduler and its two workers equal the in-process ones; the pruned folder is the same."""
    from llm_models import tiny, word_text, word_tokenizer
    from pipeline_workspace import language_params
    from safetensors.torch import load_file

    from kinds.language import CausalLMKind

    address, _ = dask_processes
    folder = tmp_path / "tiny-llama"
    tiny("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    root, env = make_workspace(tmp_path / "ws", CausalLMKind), isolated_env(tmp_path)
    params = language_params(folder, word_text(tmp_path / "held-out.txt", 2000, 2))
    write_params(root, params)
    run_pipeline(root, env)
    local = torch.load(root / "outputs/statistics/statistics.pt", weights_only=True)["blocks"]
    local_weights = load_file(root / "outputs/pruned/hf/model.safetensors")

    params["cluster"] = {"address": address, "workers": 2}
    write_params(root, params)
    summary = run_pipeline(root, env)
    assert "collect" in summary["ran"] and "synthesize" not in summary["ran"]
    assert _collect_workers(root) == [1, 2]
    for name, block in torch.load(root / "outputs/statistics/statistics.pt", weights_only=True)["blocks"].items():
        for field in ("gram", "total"):
            x, y = block[field], local[name][field]
            assert (x - y).abs().max() <= 1e-10 * y.abs().max(), (name, field)
        assert block["tokens"] == local[name]["tokens"]
    for key, value in load_file(root / "outputs/pruned/hf/model.safetensors").items():
        torch.testing.assert_close(value, local_weights[key], rtol=1e-4, atol=1e-5)
