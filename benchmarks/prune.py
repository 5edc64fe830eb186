"""ModHiFi-P benchmarks: accuracy without fine-tuning, real CPU speed-ups, scoring cost,
and the HiFi noise sanity check. Prints a table per section and writes
benchmarks/results/prune_<section>.json.

    python benchmarks/prune.py accuracy   # digits ResNet-18 w16, 3 trainings: methods x FLOPs x calibration
    python benchmarks/prune.py noise      # HiFi 20% vs non-HiFi 80% vs random 20%
    python benchmarks/prune.py speed18    # ResNet-18 w64 32x32, random weights and inputs
    python benchmarks/prune.py speed50    # ResNet-50 224x224 (latency batch 16 by default)
    python benchmarks/prune.py cost       # scoring time / forward time, peak memory

Each section takes a few minutes on 2 CPU cores; `--images`, `--repeats` and `--batch`
shrink the heavy ones. Timings on a shared machine are noisy: ratios are measured within
one run, dense and pruned timed alternately, one thread by default (`--threads`).
"""

from __future__ import annotations

import copy
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
from common import mean_std, parse, parser, result_path, write_result
from torch import nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.calibration import seeded_subset
from modhifi_core.data import load_dataset
from modhifi_core.fidelity import scores_from_statistics
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.pruning import prune_model
from modhifi_core.pruning.coupling import Coupling
from modhifi_core.pruning.report import latency_report
from modhifi_core.statistics import collect_statistics
from modhifi_core.synthesis import synthesize
from modhifi_core.training import TrainConfig, accuracy, train_model

TARGETS = (0.5, 0.25, 0.15, 0.08)
SEEDS = (0, 1, 2)


def modhifi_run(score: str, compensation: str, order: str = "joint") -> tuple[str, str, dict]:
    label = f"ModHiFi-P {score}, {compensation}" + (f", {order}" if compensation != "none" else "")
    return label, "modhifi", {"score": score, "compensation": compensation, "compensation_order": order}


BASELINE_RUNS = [
    (f"{label}{suffix}", method, {"recalibrate": recal})
    for label, method in (("L2", "l2"), ("L1", "l1"), ("random", "random"))
    for suffix, recal in ((" + BN recal", True), (", no BN recal", False))
]
L2 = ("L2 + BN recal", "l2", {"recalibrate": True})
# The grid is cut to fit a shared 2-core CPU: sequential order (≈4x the cost of joint) is run
# for the saliency score only, and the calibration-set ablations run the main contenders only.
MAIN_RUNS = (
    [modhifi_run("saliency", "none")]
    + [modhifi_run("saliency", c, o) for c in ("scalar", "full") for o in ("joint", "sequential")]
    + [modhifi_run("fidelity", "none"), modhifi_run("fidelity", "scalar"), modhifi_run("fidelity", "full")]
    + BASELINE_RUNS
)
CALIBRATIONS = {  # label -> (source, count, runs)
    "real 512": ("real", 512, MAIN_RUNS),
    "synthetic 512": (
        "synthetic",
        512,
        [modhifi_run("saliency", c, o) for c in ("scalar", "full") for o in ("joint", "sequential")] + [L2],
    ),
    "synthetic 2000": ("synthetic", 2000, [modhifi_run("saliency", "scalar"), modhifi_run("saliency", "full"), L2]),
    "real 1437 (all)": ("real", 1437, [modhifi_run("saliency", "scalar"), modhifi_run("saliency", "full"), L2]),
}
SYNTHETIC_PER_CLASS = 200


def digits_model(seed: int = 0, cache: Path | None = None) -> tuple[nn.Module, object]:
    """The default digits model: ResNet-18 width 16 on 8x8 digits, 30 epochs, seeded
    (weights cached in `cache` when given)."""
    data = load_dataset("digits")
    torch.manual_seed(seed)
    model = build_model(ModelConfig())
    path = cache / f"digits_seed{seed}.pt" if cache else None
    if path and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train_model(model, data.train, TrainConfig(seed=seed))
        if path:
            torch.save(model.state_dict(), path)
    return model.eval(), data


def synthetic_images(model: nn.Module, data, seed: int, cache: Path | None) -> torch.Tensor:
    """2000 DeepInversion samples (200 per class, labels interleaved), seeded, cached."""
    path = cache / f"synthetic_seed{seed}.pt" if cache else None
    if path and path.exists():
        return torch.load(path, weights_only=True)
    result = synthesize(model, SYNTHETIC_PER_CLASS, image_shape=(1, 8, 8), seed=seed, reference=data.train)
    images = result.samples.images
    if path:
        torch.save(images, path)
    return images


def summarise(rows: list[dict]) -> list[dict]:
    keys = sorted({(r["calibration"], r["method"], r["target_flops"]) for r in rows}, key=str)
    summary = []
    for calibration, method, target in keys:
        key = (calibration, method, target)
        picked = [r for r in rows if (r["calibration"], r["method"], r["target_flops"]) == key]
        mean, std = mean_std([r["test_accuracy"] for r in picked])
        summary.append(
            {
                "calibration": calibration,
                "method": method,
                "target_flops": target,
                "seeds": sorted(r["seed"] for r in picked),
                "test_accuracy_mean": mean,
                "test_accuracy_std": std,
                "seconds_mean": statistics.fmean(r["seconds"] for r in picked),
            }
        )
    return summary


def section_accuracy(args) -> dict:
    """Methods x FLOPs targets x calibration sets on 3 trainings, no fine-tuning."""
    rows, dense = [], {}
    out = result_path(args.out, "prune_accuracy.json")
    for seed in args.seeds:
        model, data = digits_model(seed, args.cache)
        dense[seed] = accuracy(model, data.test)
        pools = {"real": data.train.images}
        if any(CALIBRATIONS[c][0] == "synthetic" for c in args.calibrations):
            pools["synthetic"] = synthetic_images(model, data, seed, args.cache)
        print(f"seed {seed}: dense test accuracy {dense[seed]:.2f}%", flush=True)
        for calibration in args.calibrations:
            source, count, runs = CALIBRATIONS[calibration]
            runs = [run for run in runs if not args.methods or run[0] in args.methods]
            images = pools[source][:count] if source == "synthetic" else seeded_subset(data.train, count, seed).images
            for target in TARGETS:
                for label, method, options in runs:
                    start = time.perf_counter()
                    result = prune_model(model, images, method, target_flops=target, **options)
                    row = {
                        "seed": seed,
                        "calibration": calibration,
                        "calibration_samples": len(images),
                        "target_flops": target,
                        "method": label,
                        "options": options,
                        "flops_ratio": result.report["flops_ratio"],
                        "params_ratio": result.report["params_ratio"],
                        "test_accuracy": accuracy(result.model, data.test),
                        "rounds": len(result.report["rounds"]),
                        "seconds": time.perf_counter() - start,
                    }
                    rows.append(row)
                    print(
                        f"{seed} {calibration:16s} {target:5.2f}  {label:38s} flops {row['flops_ratio']:.3f}  "
                        f"acc {row['test_accuracy']:6.2f}  ({row['seconds']:.1f}s)",
                        flush=True,
                    )
            partial = {"dense_test_accuracy": dense, "rows": rows, "summary": summarise(rows), "complete": False}
            write_result(out, partial)
    return {"dense_test_accuracy": dense, "rows": rows, "summary": summarise(rows), "complete": True}


def section_noise(args) -> dict:
    model, data = digits_model()
    calibration = seeded_subset(data.train, args.images or 512, 0).images
    stats = collect_statistics(model, calibration.split(128))
    modules = dict(model.named_modules())
    hifi = {}
    for name, layer_stats in stats.items():
        if name == "conv1":  # one image channel: its only component is HiFi
            continue
        layer = modules[name]
        scores = scores_from_statistics(layer_stats, layer, centered=isinstance(layer, nn.Conv2d))
        top = scores.argsort(1, descending=True)[:, : max(1, round(0.2 * scores.shape[1]))]
        hifi[name] = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
    selections = {
        "HiFi 20%": lambda mask, g: mask,
        "non-HiFi 80%": lambda mask, g: ~mask,
        "random 20%": lambda mask, g: torch.rand(mask.shape, generator=g) < 0.2,
    }
    dense = accuracy(model, data.test)
    rows = []
    for edit, noise in (("zeroed", None), ("noise x1", 1.0), ("noise x2", 2.0)):
        for label, select in selections.items():
            scores = []
            for seed in range(3 if noise else 1):
                generator = torch.Generator().manual_seed(seed)
                edited = copy.deepcopy(model)
                edited_modules = dict(edited.named_modules())
                with torch.no_grad():
                    for name, mask in hifi.items():
                        weight = edited_modules[name].weight
                        chosen = select(mask, generator).float()
                        chosen = chosen.view(*chosen.shape, *([1] * (weight.ndim - 2)))
                        if noise is None:
                            weight *= 1 - chosen
                        else:
                            weight += noise * weight * torch.randn(weight.shape, generator=generator) * chosen
                recalibrate_batchnorm(edited, calibration.split(128))
                scores.append(accuracy(edited, data.test))
            rows.append({"edit": edit, "components": label, "test_accuracy": sum(scores) / len(scores)})
            print(f"{edit:9s} {label:13s} acc {rows[-1]['test_accuracy']:6.2f}  (dense {dense:.2f})", flush=True)
    return {"dense_test_accuracy": dense, "rows": rows}


SPEED_MODELS = {
    "speed18": ("ResNet-18 w64 32x32", ModelConfig(name="resnet18", width=64, in_channels=3, image_size=32), (1, 8)),
    "speed50": (
        "ResNet-50 224x224",
        ModelConfig(name="resnet50", width=64, in_channels=3, image_size=224, stem="imagenet"),
        (8,),
    ),
}


def section_speed(args, which: str) -> dict:
    """Random weights (BN statistics recalibrated on gaussian images) and random inputs,
    as the paper measures speed: FLOPs cut vs measured CPU latency speed-up."""
    torch.set_num_threads(args.threads)
    setting, config, round_tos = SPEED_MODELS[which]
    batch = args.batch or (64 if which == "speed18" else 16)
    torch.manual_seed(0)
    model = build_model(config).eval()
    shape = (config.in_channels, config.image_size, config.image_size)
    calibration = torch.randn(args.images or 32, *shape, generator=torch.Generator().manual_seed(0))
    recalibrate_batchnorm(model, calibration.split(16))
    runs = [("L2 magnitude", "l2", {}), ("ModHiFi-P scalar", "modhifi", {"compensation": "scalar"})]
    rows = []
    for target in (0.5, 0.25):
        for round_to in round_tos:
            for label, method, options in runs:
                start = time.perf_counter()
                result = prune_model(
                    model, calibration, method, target_flops=target, round_to=round_to, batch_size=16, **options
                )
                prune_seconds = time.perf_counter() - start
                latency = latency_report(model, result.model, shape, batch, warmup=2, repeats=args.repeats)
                flops_ratio = result.report["flops_ratio"]
                row = {
                    "model": setting,
                    "method": label,
                    "target_flops": target,
                    "round_to": round_to,
                    "flops_ratio": flops_ratio,
                    "flops_speedup": 1 / flops_ratio,
                    "params_ratio": result.report["params_ratio"],
                    "prune_seconds": prune_seconds,
                    **latency,
                    "speedup_per_flops_cut": latency["latency_speedup"] * flops_ratio,
                }
                rows.append(row)
                print(
                    f"{setting:20s} {label:17s} target {target:.2f} round_to {round_to}: flops {flops_ratio:.3f} "
                    f"({1 / flops_ratio:.2f}x)  latency {latency['latency_dense_ms']:.0f} -> "
                    f"{latency['latency_pruned_ms']:.0f} ms  speed-up {latency['latency_speedup']:.2f}x  "
                    f"= {row['speedup_per_flops_cut']:.2f} of the FLOPs cut  (batch {batch})",
                    flush=True,
                )
    return {"threads": args.threads, "repeats": args.repeats, "batch": batch, "rows": rows}


class PeakMemory:
    """Peak resident memory above the starting level while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> PeakMemory:
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak_mib = (self.peak - self.base) / 2**20


def measure_cost(model: nn.Module, images: torch.Tensor, batch: int) -> dict:
    batches = list(images.split(batch))
    with PeakMemory() as forward_memory, torch.no_grad():
        start = time.perf_counter()
        for chunk in batches:
            model(chunk)
        forward = time.perf_counter() - start
    coupling = Coupling(model, images[:1], [])
    modules = dict(model.named_modules())
    with PeakMemory() as scoring_memory:
        start = time.perf_counter()
        stats = collect_statistics(model, batches)
        statistics_seconds = time.perf_counter() - start
        for name, layer_stats in stats.items():
            centered = name in modules and isinstance(modules[name], nn.Conv2d) and coupling.feeds_batchnorm(name)
            scores_from_statistics(layer_stats, modules[name], centered)
        scoring = time.perf_counter() - start
    fields = [t for s in stats.values() for t in (s.cross, s.gram_diag, s.output_sq, s.input_sum)]
    stats_mib = sum(t.numel() * t.element_size() for t in fields) / 2**20
    return {
        "images": len(images),
        "batch": batch,
        "forward_seconds": forward,
        "statistics_seconds": statistics_seconds,
        "scoring_seconds": scoring,
        "scoring_over_forward": scoring / forward,
        "forward_peak_mib": forward_memory.peak_mib,
        "scoring_peak_mib": scoring_memory.peak_mib,
        "statistics_mib": stats_mib,
    }


def section_cost(args) -> dict:
    torch.set_num_threads(args.threads)
    rows = []
    model, data = digits_model()
    digits_images = seeded_subset(data.train, 512, 0).images
    row = {"model": "digits ResNet-18 w16 8x8", **measure_cost(model, digits_images, 128)}
    rows.append(row)
    torch.manual_seed(0)
    config = ModelConfig(name="resnet50", width=64, in_channels=3, image_size=224, stem="imagenet")
    resnet50 = build_model(config).eval()
    images = torch.randn(args.images or 128, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows.append({"model": "ResNet-50 224x224 (random weights, gaussian images)", **measure_cost(resnet50, images, 32)})
    for row in rows:
        print(
            f"{row['model']:52s} {row['images']} images: forward {row['forward_seconds']:.2f}s, scoring "
            f"{row['scoring_seconds']:.2f}s = {row['scoring_over_forward']:.2f}x; peak +{row['forward_peak_mib']:.0f} "
            f"MiB forward, +{row['scoring_peak_mib']:.0f} MiB scoring (sums {row['statistics_mib']:.0f} MiB)",
            flush=True,
        )
    return {"threads": args.threads, "rows": rows}


SECTIONS = {
    "accuracy": section_accuracy,
    "noise": section_noise,
    "speed18": lambda args: section_speed(args, "speed18"),
    "speed50": lambda args: section_speed(args, "speed50"),
    "cost": section_cost,
}


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "where the accuracy section writes (partial) results")
    options.add_argument("sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    options.add_argument("--images", type=int, default=None, help="calibration images (section default if unset)")
    options.add_argument("--repeats", type=int, default=7, help="timed forward passes per model (speed)")
    options.add_argument("--batch", type=int, default=None, help="latency batch (default 64; 16 for ResNet-50)")
    options.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="trainings (accuracy)")
    options.add_argument(
        "--calibrations", nargs="+", default=list(CALIBRATIONS), choices=list(CALIBRATIONS), help="(accuracy)"
    )
    options.add_argument(
        "--methods", type=lambda s: s.split(";"), default=None, help="accuracy: only these run labels (';'-separated)"
    )
    options.add_argument("--cache", type=Path, default=None, help="folder caching trained models and synthetic sets")
    args = parse(options, argv)
    for name in args.sections:
        if name in ("accuracy", "noise"):
            torch.set_num_threads(1)  # tiny tensors: one thread is fastest and steadiest
        start = time.perf_counter()
        result = SECTIONS[name](args)
        result.update(
            {
                "section": name,
                "seconds": time.perf_counter() - start,
                "torch": torch.__version__,
                "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs",
                "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            }
        )
        path = write_result(result_path(args.out if name == "accuracy" else None, f"prune_{name}.json"), result)
        print(f"wrote {path} ({result['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
