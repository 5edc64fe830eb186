"""Data-free operation on the default digits model: what synthetic calibration data is
worth. Prints a table per section and writes benchmarks/results/synthesis_<section>.json.

    python benchmarks/synthesis.py synthesize  # time + quality of 100/class DeepInversion vs gaussian vs real
    python benchmarks/synthesis.py prune       # ModHiFi-P at 50% / 25% FLOPs calibrated on synthetic / real / gaussian
    python benchmarks/synthesis.py unlearn     # ModHiFi-U per class with synthetic vs real forget samples, + 3-epoch KD
    python benchmarks/synthesis.py distill     # recovery of damaged/pruned models: KD synthetic/gaussian, CE real

The model is ResNet-18 width 16 trained 30 epochs (`TrainConfig` defaults, seed 0) with
one thread, like benchmarks/unlearn.py, so the two benchmarks share a model. The model
and the 100-per-class synthetic set are cached in `--workdir`; the first section that
needs them makes them. One torch thread by default (`--threads`): on a shared machine a
second thread mostly adds contention. Each section takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, parse, parser, result_path, write_result
from sklearn.linear_model import LogisticRegression

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.data import ArrayDataset, data_spec, load_from_spec
from modhifi_core.distillation import finetune
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.pruning import prune_model
from modhifi_core.splits import class_split
from modhifi_core.synthesis import InversionConfig, load_synthetic, save_synthetic, synthesize
from modhifi_core.synthesis.inversion import BatchStatisticsLoss
from modhifi_core.training import TrainConfig, accuracy, train_model
from modhifi_core.unlearning import unlearn

SHAPE = (1, 8, 8)
PER_CLASS = 100


def default_model(workdir: Path):
    """The default digits model (cached) and its data."""
    path = workdir / "model.pt"
    data = load_from_spec(data_spec())
    if not path.exists():
        torch.manual_seed(0)
        config = ModelConfig()
        model = build_model(config)
        train_model(model, data.train, TrainConfig(seed=0))
        save_checkpoint(path, model, config, metadata={"data": data_spec()})
    return load_checkpoint(path).model, data


def synthetic_set(model, data, workdir: Path) -> tuple[ArrayDataset, dict]:
    """100 DeepInversion samples per class with the default settings (cached), and how
    it was made (seconds of the inversion alone, quality with real data for scale)."""
    folder = workdir / "synthetic"
    if not (folder / "synthesis.json").exists():
        cpu = time.process_time()
        result = synthesize(model, PER_CLASS, image_shape=SHAPE, seed=0, reference=data.train)
        timing = {"wall_seconds": result.seconds, "cpu_seconds_with_quality": time.process_time() - cpu}
        save_synthetic(result, folder)
        (workdir / "timing.json").write_text(json.dumps(timing))
    manifest = json.loads((folder / "synthesis.json").read_text())
    manifest["timing"] = json.loads((workdir / "timing.json").read_text())
    return load_synthetic(folder), manifest


def gaussian_set(model) -> ArrayDataset:
    return synthesize(model, PER_CLASS, image_shape=SHAPE, method="gaussian", seed=0).samples


def real_set(data, per_class: int = PER_CLASS) -> ArrayDataset:
    """The first `per_class` training images of each class, class-interleaved."""
    index = [torch.nonzero(data.train.labels == k).flatten()[:per_class] for k in range(10)]
    return data.train.subset(torch.stack(index, 1).flatten())


def pixel_probe(samples: ArrayDataset, test: ArrayDataset) -> float:
    """Real test accuracy of a logistic regression trained on the samples' raw pixels:
    how much of the digits' appearance the samples carry, judged without the model."""
    probe = LogisticRegression(max_iter=3000, C=0.1).fit(samples.images.flatten(1).numpy(), samples.labels.numpy())
    return 100.0 * probe.score(test.images.flatten(1).numpy(), test.labels.numpy())


@torch.no_grad()
def bn_loss(model, images: torch.Tensor, batch: int = 250) -> float:
    """Mean BN-statistics loss (first layer x10, as in the inversion) over class-balanced batches."""
    statistics = BatchStatisticsLoss(model, first_weight=10.0)
    try:
        losses = []
        for chunk in images.split(batch):
            model(chunk)
            losses.append(float(statistics.loss()))
    finally:
        statistics.remove()
    return sum(losses) / len(losses)


def section_synthesize(args) -> dict:
    model, data = default_model(args.workdir)
    synthetic, manifest = synthetic_set(model, data, args.workdir)
    shutil.copyfile(args.workdir / "synthetic" / "preview.png", RESULTS / "synthesis_preview.png")
    rows = []
    gaussian = synthesize(model, PER_CLASS, image_shape=SHAPE, method="gaussian", seed=0)
    real = synthesize(model, None, image_shape=SHAPE, method="folder", source=_as_folder(real_set(data), args))
    for label, samples, quality in (
        ("DeepInversion (default)", synthetic, manifest["quality"]),
        ("gaussian noise", gaussian.samples, gaussian.quality),
        ("real training images", real.samples, real.quality),
    ):
        rows.append(
            {
                "samples": label,
                "count": len(samples),
                "agreement": quality["agreement"],
                "diversity": quality["diversity"],
                "bn_loss": bn_loss(model, samples.images),
                "pixel_probe_accuracy": pixel_probe(samples, data.test),
            }
        )
        r = rows[-1]
        print(
            f"{label:26s} n={r['count']:5d}  agreement {r['agreement']:6.2f}  diversity {r['diversity']:.3f}  "
            f"BN loss {r['bn_loss']:7.2f}  pixel probe {r['pixel_probe_accuracy']:5.1f}",
            flush=True,
        )
    timing = manifest["timing"]
    print(f"DeepInversion {PER_CLASS}/class: {timing['wall_seconds']:.1f} s wall", flush=True)
    return {"timing": timing, "config": manifest["config"], "rows": rows, "test_accuracy": accuracy(model, data.test)}


def _as_folder(samples: ArrayDataset, args) -> Path:
    folder = args.workdir / "real"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"images": samples.images, "labels": samples.labels}, folder / "real.pt")
    return folder


def section_prune(args) -> dict:
    """ModHiFi-P (scalar compensation, the CLI default) calibrated on 512 images (the CLI
    default count): three random subsets of the 1000 synthetic images, of the 1437
    training images, and three gaussian draws; then 3 epochs of KD on the synthetic set."""
    model, data = default_model(args.workdir)
    synthetic, _ = synthetic_set(model, data, args.workdir)

    def calibration(label: str, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        if label == "gaussian noise":
            return torch.randn(512, *SHAPE, generator=generator)
        pool = synthetic.images if label.startswith("synthetic") else data.train.images
        return pool[torch.randperm(len(pool), generator=generator)[:512].sort().values]

    dense = accuracy(model, data.test)
    print(f"dense test accuracy {dense:.2f}%", flush=True)
    rows = []
    for target in (0.5, 0.25):
        for label in ("synthetic (DeepInversion)", "real (training images)", "gaussian noise"):
            for seed in range(3):
                result = prune_model(
                    model, calibration(label, seed), "modhifi", target_flops=target, compensation="scalar"
                )
                pruned = accuracy(result.model, data.test)
                finetune(result.model, model, synthetic, 3)
                row = {
                    "target_flops": target,
                    "calibration": label,
                    "seed": seed,
                    "flops_ratio": result.report["flops_ratio"],
                    "test_accuracy": pruned,
                    "test_accuracy_after_kd": accuracy(result.model, data.test),
                }
                rows.append(row)
                print(
                    f"{target:4.2f}  {label:26s} seed {seed}  flops {row['flops_ratio']:.3f}  acc {pruned:6.2f}  "
                    f"after 3-epoch KD on synthetic {row['test_accuracy_after_kd']:6.2f}",
                    flush=True,
                )
    summary = {}
    for target in (0.5, 0.25):
        for label in ("synthetic (DeepInversion)", "real (training images)", "gaussian noise"):
            mine = torch.tensor(
                [
                    [r["test_accuracy"], r["test_accuracy_after_kd"]]
                    for r in rows
                    if r["target_flops"] == target and r["calibration"] == label
                ]
            )
            mean, std = mine.mean(0).tolist(), mine.std(0).tolist()
            summary[f"{target} {label}"] = {
                "mean": mean[0],
                "std": std[0],
                "after_kd_mean": mean[1],
                "after_kd_std": std[1],
            }
            print(
                f"{target:4.2f}  {label:26s} {mean[0]:6.2f} ± {std[0]:4.2f}   after KD {mean[1]:6.2f} ± {std[1]:4.2f}"
            )
    return {"dense_test_accuracy": dense, "calibration_images": 512, "rows": rows, "summary": summary}


RECOVERY = {"lr": 0.001, "batchnorm": "frozen"}  # `modhifi finetune` on an unlearned model, 3 epochs


def section_unlearn(args) -> dict:
    """ModHiFi-U scored on synthetic vs real forget samples; then the data-free recovery
    (3 epochs of KD on the synthetic retain classes, BN frozen), with three controls:
    the same KD with the teacher unmasked, the same KD of the unedited model, and BN
    recalibration alone on the synthetic retain samples."""
    model, data = default_model(args.workdir)
    synthetic, _ = synthetic_set(model, data, args.workdir)
    rows, controls = [], []
    for k in args.classes:
        split = class_split(data.train, k)
        retain = [c for c in range(10) if c != k]
        original_ra = accuracy(model, split.retain)
        alone = copy.deepcopy(model)  # control: how much does the distillation forget by itself?
        finetune(alone, model, synthetic, 3, classes=retain, **RECOVERY)
        controls.append({"class": k, **unlearning_metrics(alone, split, data.test)})
        c = controls[-1]
        print(f"class {k}  KD alone  UA {c['UA']:6.1f}  RA {c['RA']:6.1f}  TA {c['TA']:6.1f}", flush=True)
        for label, forget_images in (("real", None), ("synthetic", synthetic.of_classes([k]).images)):
            options = {} if forget_images is None else {"forget_images": forget_images}
            result = unlearn(model, split, "modhifi", **options)
            row = {"class": k, "forget_samples": label, "original_RA": original_ra, "seconds": result.seconds}
            row.update(unlearning_metrics(result.model, split, data.test))
            recovered = copy.deepcopy(result.model)
            finetune(recovered, model, synthetic, 3, classes=retain, **RECOVERY)
            after = unlearning_metrics(recovered, split, data.test)
            row.update({f"{m}_after_kd": v for m, v in after.items()})
            unmasked = copy.deepcopy(result.model)  # same retain samples, teacher's full softmax
            finetune(unmasked, model, synthetic.of_classes(retain), 3, **RECOVERY)
            row["UA_after_unmasked_kd"] = unlearning_metrics(unmasked, split, data.test)["UA"]
            recalibrated = copy.deepcopy(result.model)
            recalibrate_batchnorm(recalibrated, synthetic.of_classes(retain).images.split(64))
            row["UA_after_bn_recalibration"] = unlearning_metrics(recalibrated, split, data.test)["UA"]
            row["goal_met"] = row["UA"] >= 98.0 and original_ra - row["RA"] <= 5.0
            rows.append(row)
            print(
                f"class {k}  {label:9s} UA {row['UA']:6.1f}  RA {row['RA']:6.1f} (orig {original_ra:5.1f})  "
                f"TA {row['TA']:6.1f}  MIA {row['MIA']:6.1f}  | +KD: UA {row['UA_after_kd']:6.1f} "
                f"RA {row['RA_after_kd']:6.1f}  TA {row['TA_after_kd']:6.1f}  | unmasked KD: UA "
                f"{row['UA_after_unmasked_kd']:6.1f}  | BN recalibrated: UA {row['UA_after_bn_recalibration']:6.1f}",
                flush=True,
            )
    keys = ("UA", "RA", "TA", "MIA", "UA_after_kd", "RA_after_kd", "TA_after_kd", "UA_after_unmasked_kd")
    summary = {}
    for label in ("real", "synthetic"):
        mine = [r for r in rows if r["forget_samples"] == label]
        summary[label] = {key: sum(r[key] for r in mine) / len(mine) for key in (*keys, "UA_after_bn_recalibration")}
        summary[label]["goal_met_classes"] = sum(r["goal_met"] for r in mine)
    summary["KD alone (no edit)"] = {
        key: sum(c[key] for c in controls) / len(controls) for key in ("UA", "RA", "TA", "MIA")
    }
    print(json.dumps(summary, indent=1))
    return {"recovery": {"epochs": 3, **RECOVERY}, "rows": rows, "kd_alone": controls, "summary": summary}


def section_distill(args) -> dict:
    model, data = default_model(args.workdir)
    synthetic, _ = synthetic_set(model, data, args.workdir)
    gaussian = gaussian_set(model)
    teacher_accuracy = accuracy(model, data.test)
    students = {}
    for strength in (0.5, 1.0):
        student = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in student.parameters():
                if p.ndim == 4:
                    p.add_(torch.randn(p.shape, generator=generator) * p.std() * strength)
        students[f"conv weights + noise x{strength} std"] = student
    real_calibration = data.train.images[:512]
    pruned = prune_model(model, real_calibration, "modhifi", target_flops=0.25, compensation="scalar").model
    students["ModHiFi-P 25% FLOPs (real calibration)"] = pruned
    rows = []
    print(f"teacher test accuracy {teacher_accuracy:.2f}%", flush=True)
    for name, student in students.items():
        row = {"student": name, "before": accuracy(student, data.test)}
        for label, teacher, samples in (
            ("KD on synthetic", model, synthetic),
            ("KD on gaussian", model, gaussian),
            ("CE on real (all 1437)", None, data.train),
        ):
            tuned = copy.deepcopy(student)
            log = finetune(tuned, teacher, samples, 3)
            row[label] = accuracy(tuned, data.test)
            row[f"{label} seconds"] = log["seconds"]
        rows.append(row)
        print(
            f"{name:42s} before {row['before']:6.2f}  KD synthetic {row['KD on synthetic']:6.2f}  "
            f"KD gaussian {row['KD on gaussian']:6.2f}  CE real {row['CE on real (all 1437)']:6.2f}",
            flush=True,
        )
    return {"teacher_test_accuracy": teacher_accuracy, "epochs": 3, "rows": rows}


SECTIONS = {
    "synthesize": section_synthesize,
    "prune": section_prune,
    "unlearn": section_unlearn,
    "distill": section_distill,
}


def main() -> None:
    options = parser(__doc__, "result file (default results/synthesis_<section>.json)")
    options.add_argument("section", choices=SECTIONS)
    options.add_argument("--classes", type=lambda s: [int(k) for k in s.split(",")], default=list(range(10)))
    options.add_argument("--workdir", type=Path, default=Path("/tmp/modhifi-bench-synthesis"))
    args = parse(options)
    os.environ.setdefault("MODHIFI_PROGRESS", "0")
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = SECTIONS[args.section](args)
    result["environment"] = {
        "threads": args.threads,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "load_average_1min": os.getloadavg()[0],
        "seconds": time.perf_counter() - start,
        "default_inversion": vars(InversionConfig()),
    }
    out = write_result(result_path(args.out, f"synthesis_{args.section}.json"), result)
    print(f"wrote {out} in {result['environment']['seconds']:.0f} s")


if __name__ == "__main__":
    main()
