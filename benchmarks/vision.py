"""Vision benchmarks on real data bigger than digits (Fashion-MNIST) and standard shapes.
Prints a table per section and writes benchmarks/results/vision_<section>.json.

    python benchmarks/vision.py train     # ResNet-18 w32 (3 seeds) and HF ViT/Swin (--models resnet vit swin)
    python benchmarks/vision.py prune     # ModHiFi-P vs L2/L1/random at 50/25/15% FLOPs, ResNet-18
    python benchmarks/vision.py prune-mlp # ViT MLP neurons: ModHiFi saliency/energy + LS vs Wanda-sp/magnitude/random
    python benchmarks/vision.py unlearn   # ModHiFi-U, all 10 classes: ResNet-18 (zero) and ViT/Swin (negate)
    python benchmarks/vision.py finetune-ln   # ViT/Swin: ModHiFi-U, then 1 epoch of synthetic-data distillation
    python benchmarks/vision.py calibrate-ln  # ViT/Swin: MLP pruning + ModHiFi-U on real/synthetic/gaussian calibration
    python benchmarks/vision.py speed     # HF ResNet-50 224 px, random weights: latency vs FLOPs cut
    python benchmarks/vision.py speed-vit # HF ViT-S/16 224 px, random weights: MLP neurons, latency vs FLOPs cut
    python benchmarks/vision.py speed-zoo # torchvision resnet50 (run with .venv/zoo/bin/python)

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (installed with apt-get when
absent, said on stdout). Trained models are cached under workspace/vision/ (not
committed); `train` re-uses them unless `--retrain`. CPU budget on the shared 2-core
machine sets the recipe: the training set is subsampled (`--train-per-class`, default
500 per class = 5k images) and images are resized to 16 px for the ResNet (the full
28 px costs 3.5x the time per step); the test set is the full 10k. One torch thread.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, parse, parser, write_result
from torch import nn

from modhifi_core.calibration import seeded_subset
from modhifi_core.data import FASHION_MNIST_DIR, load_dataset
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.training import TrainConfig, accuracy, train_model

CACHE = Path(__file__).resolve().parent.parent / "workspace" / "vision"
RESNET = ModelConfig(name="resnet18", width=32, image_size=16, in_channels=1)
RESNET_TRAIN = TrainConfig(epochs=3, lr=0.05, batch_size=64)
# HF ViT on 28 px Fashion-MNIST: 7x7 patches (16 tokens + CLS), 4 pre-LN blocks of width 64.
# (4x4 patches, 49 tokens, 6 epochs reached 73.9% in 608 s wall / 82 s CPU, still underfit.)
VIT = {"image_size": 28, "patch_size": 7, "num_channels": 1, "hidden_size": 64, "num_hidden_layers": 4,
       "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 10}  # fmt: skip
# HF Swin on 28 px: 2x2 patches (14x14 tokens), windows of 7, two stages (depths 2, 2) of
# width 32 and 64 (MLP ratio 2); trained with the ViT's recipe.
SWIN = {"image_size": 28, "patch_size": 2, "num_channels": 1, "embed_dim": 32, "depths": [2, 2],
        "num_heads": [2, 4], "window_size": 7, "mlp_ratio": 2.0, "num_labels": 10}  # fmt: skip
VIT_TRAIN = {"epochs": 12, "lr": 3e-3, "weight_decay": 0.05, "batch_size": 128, "per_class": 1000}


def ensure_fashion_mnist() -> None:
    """Install Debian's dataset-fashion-mnist when its folder is absent (and say so)."""
    if FASHION_MNIST_DIR.is_dir():
        return
    print(f"{FASHION_MNIST_DIR} absent: apt-get install dataset-fashion-mnist", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)


def fashion(image_size: int | None, per_class: int, seed: int = 0):
    """Fashion-MNIST at `image_size` px; the training set subsampled to `per_class` images
    per class (0 = all 60k), the same subsample for every model seed."""
    ensure_fashion_mnist()
    data = load_dataset("fashion-mnist", image_size=image_size)
    if per_class:
        generator = torch.Generator().manual_seed(seed)
        keep = []
        for k in range(10):
            index = torch.nonzero(data.train.labels == k).flatten()
            keep.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
        train = data.train.subset(torch.cat(keep).sort().values)
        data = type(data)(data.name, train, data.test)
    return data


def resnet_path(seed: int) -> Path:
    return CACHE / f"resnet18_w32_seed{seed}.pt"


def trained_resnet(seed: int, data, retrain: bool = False) -> tuple[nn.Module, dict]:
    """ResNet-18 width 32 trained on `data` with `RESNET_TRAIN` and `seed` (cached)."""
    path, log_path = resnet_path(seed), resnet_path(seed).with_suffix(".json")
    model = build_model(RESNET)
    if path.exists() and log_path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), json.loads(log_path.read_text())
    torch.manual_seed(seed)
    model = build_model(RESNET)
    cpu = time.process_time()
    log = train_model(model, data.train, TrainConfig(**{**RESNET_TRAIN.__dict__, "seed": seed}))
    cpu = time.process_time() - cpu
    log = {
        "seconds": log["seconds"],
        "cpu_seconds": cpu,
        "losses": log["losses"],
        "test_accuracy": accuracy(model, data.test),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    log_path.write_text(json.dumps(log))
    return model.eval(), log


def section_train(args) -> dict:
    rows = []
    if "resnet" in args.models:
        data = fashion(RESNET.image_size, args.train_per_class)
        for seed in args.seeds:
            _, log = trained_resnet(seed, data, args.retrain)
            rows.append({"model": "resnet18-w32", "seed": seed, "train_images": len(data.train), **log})
            print(f"resnet18 w32 seed {seed}: test {log['test_accuracy']:.2f}%  {log['seconds']:.0f}s", flush=True)
    for kind in ("vit", "swin"):
        if kind not in args.models:
            continue
        data = fashion(None, VIT_TRAIN["per_class"])
        for seed in args.seeds:
            _, log = trained_transformer(kind, seed, data, args.retrain)
            rows.append({"model": f"hf-{kind}", "seed": seed, "train_images": len(data.train), **log})
            print(f"hf {kind} seed {seed}: test {log['test_accuracy']:.2f}%  {log['seconds']:.0f}s", flush=True)
    recipe = {"resnet": RESNET.model_dump(), "resnet_train": RESNET_TRAIN.__dict__, "vit": VIT, "swin": SWIN,
              "vit_train": VIT_TRAIN}  # fmt: skip
    return {"rows": rows, "recipe": recipe}


def transformer_path(kind: str, seed: int) -> Path:
    return CACHE / f"hf_{kind}_seed{seed}"


def trained_transformer(kind: str, seed: int, data, retrain: bool = False) -> tuple[nn.Module, dict]:
    """The HF ViT (`VIT`) or Swin (`SWIN`) trained with AdamW + cosine decay (`VIT_TRAIN`),
    cached as a `save_pretrained` folder."""
    import transformers

    from modhifi_core.vision import LogitsOnly, load_hf_image_classifier

    folder = transformer_path(kind, seed)
    log_path = folder / "train_log.json"
    if log_path.exists() and not retrain:
        return load_hf_image_classifier(folder), json.loads(log_path.read_text())
    torch.manual_seed(seed)
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT))
    else:
        model = transformers.SwinForImageClassification(transformers.SwinConfig(**SWIN))
    wrapper = LogitsOnly(model)
    cpu, wall = time.process_time(), time.perf_counter()
    losses = train_adamw(wrapper, data.train, seed)
    log = {
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "losses": losses,
        "test_accuracy": accuracy(wrapper, data.test),
    }
    model.save_pretrained(str(folder))
    log_path.write_text(json.dumps(log))
    return model.eval(), log


def train_adamw(model: nn.Module, train, seed: int, epochs: int | None = None, lr: float | None = None) -> list[float]:
    """AdamW with cosine decay over all steps (transformers train badly with plain SGD);
    returns the mean loss per epoch. The model is left in eval mode."""
    epochs = epochs or VIT_TRAIN["epochs"]
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr or VIT_TRAIN["lr"], weight_decay=VIT_TRAIN["weight_decay"])
    steps = epochs * -(-len(train) // VIT_TRAIN["batch_size"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses = []
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for images, labels in train.loader(VIT_TRAIN["batch_size"], shuffle=True, seed=seed + epoch):
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(labels)
        losses.append(total / len(train))
    model.eval()
    return losses


PRUNE_TARGETS = (0.5, 0.25, 0.15)
PRUNE_RUNS = [  # (label, method, options); every method ends with BN recalibration
    ("ModHiFi-P uniform, scalar δ*", "modhifi", {"compensation": "scalar"}),
    ("ModHiFi-P uniform, full refit", "modhifi-full", {"compensation": "full"}),
    ("L2 magnitude", "l2", {}),
    ("L1 magnitude", "l1", {}),
    ("random", "random", {}),
]


def section_prune(args) -> dict:
    """ModHiFi-P vs L2/L1/random on the Fashion-MNIST ResNet-18s, no fine-tuning."""
    from modhifi_core.pruning import prune_model

    data = fashion(RESNET.image_size, args.train_per_class)
    test = per_class_subset(data.test, args.test_per_class)
    calibration = seeded_subset(data.train, args.images or 256, 0).images
    runs = [run for run in PRUNE_RUNS if run[1] in args.methods] if args.methods else PRUNE_RUNS
    rows = []
    for seed in args.seeds:
        model, _ = trained_resnet(seed, data)
        dense = accuracy(model, test)
        print(f"seed {seed}: dense test accuracy {dense:.2f}% ({len(test)} test images)", flush=True)
        for target in args.targets or PRUNE_TARGETS:
            for label, method, options in runs:
                options = {**options, "seed": seed} if method == "random" else options
                start = time.perf_counter()
                engine_method = "modhifi" if method.startswith("modhifi") else method
                result = prune_model(model, calibration, engine_method, target_flops=target, **options)
                seconds = time.perf_counter() - start
                row = pruned_row(seed, {"target_flops": target}, label, dense, result, accuracy(result.model, test))
                row["seconds"] = seconds
                rows.append(row)
                print(
                    f"  {target:4.2f} {label:32s} flops {row['flops_ratio']:.3f} acc {row['test_accuracy']:6.2f}"
                    f"  ({row['seconds']:.0f}s)",
                    flush=True,
                )
    summary = summarise(rows, ("target_flops", "method"), "test_accuracy")
    goals = {}
    for label in ("ModHiFi-P uniform, scalar δ*", "ModHiFi-P uniform, full refit"):
        margins = paired_margins(rows, 0.25, label, "L2 magnitude")
        if margins:
            goals[f"{label} - L2 at 0.25"] = {
                "margin_mean": statistics.mean(margins),
                "margins": margins,
                "goal": 5.0,
                "met": statistics.mean(margins) >= 5.0,
            }
    for key, goal in goals.items():
        print(f"goal {key}: {goal['margin_mean']:+.2f} points (need +5) -> {'met' if goal['met'] else 'NOT met'}")
    return {
        "calibration_images": len(calibration),
        "test_images": len(test),
        "rows": rows,
        "summary": summary,
        "goals": goals,
    }


MLP_FRACTIONS = (0.25, 0.5, 0.75)
MLP_RUNS = [  # (label, score, compensation) of `prune_transformer` on the ViT's MLP neurons
    ("ModHiFi saliency + LS refit", "saliency", "ls"),
    ("ModHiFi saliency, no refit", "saliency", "none"),
    ("energy Q_jj + LS refit", "energy", "ls"),
    ("Wanda-sp", "wanda-sp", "none"),
    ("magnitude", "magnitude", "none"),
    ("random", "random", "none"),
]


def section_prune_mlp(args) -> dict:
    """MLP neurons of the Fashion-MNIST HF ViTs removed (attention a pass-through), every
    score x compensation on one set of statistics per model, no fine-tuning."""
    from modhifi_core.pruning.ffn import collect_ffn_statistics, prune_transformer
    from modhifi_core.vision import LogitsOnly

    data = fashion(None, VIT_TRAIN["per_class"])
    test = per_class_subset(data.test, args.test_per_class)
    calibration = seeded_subset(data.train, args.images or 256, 0).images
    rows = []
    for seed in args.seeds:
        model, _ = trained_transformer("vit", seed, data)
        dense = accuracy(LogitsOnly(model), test)
        stats_start = time.perf_counter()
        statistics_ = collect_ffn_statistics(model, calibration, batch_size=64)
        stats_s = time.perf_counter() - stats_start
        print(f"seed {seed}: dense {dense:.2f}% ({len(test)} test images), statistics {stats_s:.1f}s", flush=True)
        for fraction in args.fractions or MLP_FRACTIONS:
            for label, score, compensation in MLP_RUNS:
                result = prune_transformer(
                    model, fraction=fraction, score=score, compensation=compensation, statistics=statistics_,
                    seq_len=17, seed=seed,
                )  # fmt: skip
                measured = accuracy(LogitsOnly(result.model), test)
                row = pruned_row(seed, {"mlp_fraction_removed": fraction}, label, dense, result, measured)
                row["seconds"] = result.report["seconds"]
                rows.append(row)
                print(
                    f"  {fraction:4.2f} {label:30s} flops {row['flops_ratio']:.3f} acc {row['test_accuracy']:6.2f}",
                    flush=True,
                )
    summary = summarise(rows, ("mlp_fraction_removed", "method"), "test_accuracy")
    return {"calibration_images": len(calibration), "test_images": len(test), "rows": rows, "summary": summary}


def pruned_row(seed: int, target: dict, label: str, dense: float, result, test_accuracy: float) -> dict:
    """One table row of a pruning benchmark: the target, the method, dense and pruned test
    accuracy (%), and the FLOPs/params ratios of the result's report."""
    report = result.report
    return {"seed": seed, **target, "method": label, "dense_test_accuracy": dense,
            "flops_ratio": report["flops_ratio"], "params_ratio": report["params_ratio"],
            "test_accuracy": test_accuracy}  # fmt: skip


def summarise(rows: list[dict], keys: tuple[str, ...], value: str) -> list[dict]:
    """Mean and sample std of `value` over the rows sharing `keys` (in first-seen order)."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row[value])
    out = []
    for key, values in groups.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append({**dict(zip(keys, key)), "mean": statistics.mean(values), "std": std, "n": len(values)})
    return out


def paired_margins(rows: list[dict], target: float, label: str, baseline: str) -> list[float]:
    by = {(r["seed"], r["target_flops"], r["method"]): r["test_accuracy"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return [
        by[(s, target, label)] - by[(s, target, baseline)]
        for s in seeds
        if (s, target, label) in by and (s, target, baseline) in by
    ]


def per_class_subset(data, per_class: int):
    """The first `per_class` samples of each class (order kept): a fixed, stratified subset."""
    keep = [torch.nonzero(data.labels == k).flatten()[:per_class] for k in range(data.num_classes)]
    return data.subset(torch.cat(keep).sort().values)


def relearn(model: nn.Module, retain, kind: str, steps: int = 20, seed: int = 0) -> nn.Module:
    """The relearning attack of method.md §3: `steps` optimiser steps (batch 64) on
    retained data only, at a tenth of the training learning rate. Returns a new model."""
    import copy

    model = copy.deepcopy(model).train()
    if kind == "resnet":
        optimizer = torch.optim.SGD(model.parameters(), lr=RESNET_TRAIN.lr / 10, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=VIT_TRAIN["lr"] / 10)
    batches = iter(retain.loader(64, shuffle=True, seed=seed))
    for _ in range(steps):
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(retain.loader(64, shuffle=True, seed=seed + 1))
            images, labels = next(batches)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def section_unlearn(args) -> dict:
    """ModHiFi-U for every class: UA/RA/TA/MIA without fine-tuning, then the durability
    figures — UA after BN recalibration on retained data (BN networks) and after a
    20-step relearning attack on retained data. ViT/Swin: every `--vit-layers` x
    `--centres` x `--fractions` setting; `--quick` (a selection sweep) measures UA and RA
    only (no TA, MIA, relearning)."""
    from modhifi_core.metrics import unlearning_metrics
    from modhifi_core.splits import class_split
    from modhifi_core.unlearning import unlearn

    kind = args.model
    size = RESNET.image_size if kind == "resnet" else None
    full = fashion(size, args.split_per_class)
    train, test = full.train, per_class_subset(full.test, args.test_per_class)
    settings = unlearn_settings(args)
    rows = []
    for seed in args.seeds:
        model = unlearn_subject(kind, seed, size, args)
        for forget_class in args.classes:
            split = class_split(train, forget_class)
            original = quick_metrics(model, split) if args.quick else unlearning_metrics(model, split, test)
            for setting in settings:
                options = {key: value for key, value in setting.items() if value is not None}
                if "layers" in options:
                    options["layers"] = ln_layers(model, options["layers"])
                result = unlearn(model, split, "modhifi", **options)
                spared = {} if kind == "resnet" else {"retain_fraction": setting.get("retain_fraction", 0.0),
                                                      "logit_mask": setting.get("logit_mask", False)}  # fmt: skip
                row = {"model": kind, "seed": seed, "forget_class": forget_class, **setting, **spared,
                       "edit": result.log.get("edit"), "seconds": result.seconds, "original": original}  # fmt: skip
                row.update(
                    quick_metrics(result.model, split) if args.quick else unlearning_metrics(result.model, split, test)
                )
                if not args.quick:
                    row.update(durability(result.model, split, kind, seed))
                rows.append(row)
                print(unlearn_line(row), flush=True)
        write_partial(args, {"rows": rows})
    summary = unlearn_summary(rows, ("seed", "layers", "centre", "retain_fraction", "logit_mask", "fraction"))
    for entry in summary:
        print(f"summary {entry}", flush=True)
    return {"model": kind, "split_train_per_class": args.split_per_class, "test_per_class": args.test_per_class,
            "quick": args.quick, "rows": rows, "summary": summary}  # fmt: skip


def unlearn_settings(args) -> list[dict]:
    """The ModHiFi-U settings a run sweeps: fractions (None = engine default) for the
    ResNet; layer set x centre x fraction for a ViT/Swin."""
    fractions = args.fractions or [None]
    if args.model == "resnet":
        return [{"fraction": fraction} for fraction in fractions]
    head = {"logit_mask": True} if args.logit_mask else {}
    return [
        {"layers": layers, "centre": centre, "fraction": fraction, **spare_options(spared), **head}
        for layers in args.vit_layers
        for centre in args.centres
        for spared in args.contrastive
        for fraction in fractions
    ]


def spare_options(retain_fraction: float) -> dict:
    """`--contrastive` entry: 0 = plain ModHiFi-U; r > 0 = `contrastive=True` sparing the
    retain samples' top-r components."""
    return {"contrastive": True, "retain_fraction": retain_fraction} if retain_fraction else {}


def unlearn_subject(kind: str, seed: int, size: int | None, args) -> nn.Module:
    """The trained model to unlearn from, as `model(images) -> logits`."""
    if kind == "resnet":
        return trained_resnet(seed, fashion(size, args.train_per_class))[0]
    from modhifi_core.vision import LogitsOnly

    return LogitsOnly(trained_transformer(kind, seed, fashion(None, VIT_TRAIN["per_class"]))[0]).eval()


LN_LAYER_SETS = ("all", "last", "last2")


def ln_layers(model: nn.Module, choice: str) -> tuple[str, ...]:
    """The residual-stream MLP fc2 layers of a ViT/Swin named by `choice`: every block's
    (`all`), the last block's (`last`) or the last two blocks' (`last2`: the Swin's last stage)."""
    from modhifi_core.vision import mlp_output_layers

    fc2 = mlp_output_layers(model)
    return {"all": fc2, "last": fc2[-1:], "last2": fc2[-2:]}[choice]


def quick_metrics(model: nn.Module, split) -> dict:
    """UA and RA (%) only: what a selection sweep needs."""
    return {"UA": 100.0 - accuracy(model, split.forget), "RA": accuracy(model, split.retain)}


def durability(model: nn.Module, split, kind: str, seed: int) -> dict:
    """UA after BN recalibration on retained data (BN networks only) and after `relearn`."""
    import copy

    from modhifi_core.batchnorm import has_batchnorm, recalibrate_batchnorm

    out = {}
    if has_batchnorm(model):
        recalibrated = copy.deepcopy(model)
        recalibrate_batchnorm(recalibrated, split.retain.images[:512].split(128))
        out["UA_after_bn_recalibration"] = 100.0 - accuracy(recalibrated, split.forget)
    attacked = relearn(model, split.retain, kind, seed=seed)
    out["UA_after_relearn"] = 100.0 - accuracy(attacked, split.forget)
    return out


def unlearn_line(row: dict) -> str:
    original = row["original"]
    keys = ("layers", "centre", "retain_fraction", "logit_mask", "fraction")
    setting = " ".join(f"{k} {row[k]}" for k in keys if k in row)
    text = f"{row['model']} seed {row['seed']} {setting} class {row['forget_class']}: UA {row['UA']:5.1f} "
    text += f"RA {row['RA']:5.1f} (orig {original['RA']:5.1f})"
    if "TA" in row:
        text += f" TA {row['TA']:5.1f} (orig {original['TA']:5.1f}) MIA {row['MIA']:5.1f}"
    text += "".join(f" {k.replace('UA_after_', 'UA@')} {row[k]:5.1f}" for k in row if k.startswith("UA_after"))
    return text + f"  {row['seconds']:.1f}s"


def unlearn_summary(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Per group of `keys` (present in the rows): forget accuracy and RA/TA drops over the
    classes, the classes forgotten to <= 2%, and the means of MIA / UA after relearning."""
    keys = tuple(k for k in keys if rows and k in rows[0])
    rows = (
        [{**r, "retain_fraction": r.get("retain_fraction", 0.0)} for r in rows] if "retain_fraction" in keys else rows
    )
    summary = []
    for key, group in _group(rows, keys).items():
        forget = [100 - r["UA"] for r in group]
        drops = [r["original"]["RA"] - r["RA"] for r in group]
        entry = {**dict(zip(keys, key)), "forget_accuracy_mean": statistics.mean(forget),
                 "forget_accuracy_max": max(forget), "classes_forgotten_2pct": sum(f <= 2.0 for f in forget),
                 "retain_drop_mean": statistics.mean(drops), "retain_drop_max": max(drops),
                 "classes": len(group)}  # fmt: skip
        for name in ("TA", "MIA", "UA_after_relearn", "UA_after_bn_recalibration"):
            if name in group[0]:
                values = [r[name] if name != "TA" else r["original"]["TA"] - r["TA"] for r in group]
                entry["test_drop_mean" if name == "TA" else f"{name}_mean"] = statistics.mean(values)
        summary.append(entry)
    return summary


def write_partial(args, result: dict) -> None:
    """The rows so far, to the run's result file (a long run leaves evidence if stopped)."""
    write_result(result_file(args), {**result, "section": args.section, "partial": True})


def result_file(args) -> Path:
    """`--out` is a file name under results/ (default vision_<section>.json)."""
    return RESULTS / (args.out or f"vision_{args.section.replace('-', '_')}.json")


def synthetic_samples(kind: str, seed: int, model: nn.Module, per_class: int, draw: int):
    """DeepInversion samples of every class from the trained `kind` model `seed` (draw =
    synthesis seed), cached under workspace/vision/. Without BatchNorm the inversion
    matches nothing but the class: cross-entropy + total variation + L2 (the engine says so
    with a warning); returns `(samples ArrayDataset, quality dict, seconds)`."""
    import warnings

    from modhifi_core.data import ArrayDataset
    from modhifi_core.synthesis import synthesize

    path = CACHE / f"synthetic_{kind}_seed{seed}_pc{per_class}_draw{draw}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return ArrayDataset(saved["images"], saved["labels"], 10), saved["quality"], saved["seconds"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-BatchNorm warning: the point of this benchmark
        result = synthesize(model, per_class, image_shape=(1, 28, 28), seed=draw)
    quality = {k: v for k, v in result.quality.items() if k != "agreement_per_class"}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"images": result.samples.images, "labels": result.samples.labels, "quality": quality,
                "seconds": result.seconds}, path)  # fmt: skip
    return result.samples, quality, result.seconds


def ln_setting(args) -> dict:
    """The one ModHiFi-U setting (`--vit-layers`, `--centres`, `--contrastive`, `--fractions`:
    the first of each) that the fine-tuning and calibration sections apply."""
    fraction = (args.fractions or [0.05])[0]
    head = {"logit_mask": True} if args.logit_mask else {}
    return {"layers": args.vit_layers[0], "centre": args.centres[0], "fraction": fraction,
            **spare_options(args.contrastive[0]), **head}  # fmt: skip


def section_finetune_ln(args) -> dict:
    """ModHiFi-U on a ViT/Swin with the `ln_setting`, then 1 epoch (`--epochs`) of the
    engine's distillation fine-tuning (`modhifi_core.distillation.finetune`) from the
    original model on its own synthetic samples of the retained classes (teacher
    renormalised over them; `--ft-data real|gaussian`: the same on real training images or
    noise, the controls): UA/RA/TA before and after, every class."""
    import copy

    from modhifi_core.distillation import finetune
    from modhifi_core.metrics import unlearning_test_set
    from modhifi_core.splits import class_split
    from modhifi_core.unlearning import unlearn

    kind, setting = args.model, ln_setting(args)
    full = fashion(None, args.split_per_class)
    train, test = full.train, per_class_subset(full.test, args.test_per_class)
    rows, synthesis = [], []
    for seed in args.seeds:
        model = unlearn_subject(kind, seed, None, args)
        if args.ft_data == "synthetic":
            samples, quality, seconds = synthetic_samples(kind, seed, model, args.per_class, draw=0)
            synthesis.append({"seed": seed, "per_class": args.per_class, "seconds": seconds, **quality})
            print(f"{kind} seed {seed}: synthetic {len(samples)} images in {seconds:.0f}s, {quality}", flush=True)
        else:  # the controls: real training images (the model's own subset) or gaussian noise
            training = fashion(None, VIT_TRAIN["per_class"]).train
            samples = calibration_images(kind, seed, model, args.ft_data, 0, training, args.per_class)
        for forget_class in args.classes:
            split = class_split(train, forget_class)
            test_set = unlearning_test_set(test, split)
            result = unlearn(model, split, "modhifi", **{**setting, "layers": ln_layers(model, setting["layers"])})
            retained = [k for k in range(10) if k != forget_class]
            row = {"model": kind, "seed": seed, "forget_class": forget_class, **setting}
            row.update(original=with_ta(model, split, test_set), unlearned=with_ta(result.model, split, test_set))
            for lr in args.ft_lrs:
                student = copy.deepcopy(result.model)
                log = finetune(student, model, samples, args.epochs, lr=lr, classes=retained, seed=seed,
                               batchnorm="frozen")  # fmt: skip
                row[f"finetuned_lr{lr}"] = {**with_ta(student, split, test_set), "seconds": log["seconds"],
                                            "samples": log["samples"]}  # fmt: skip
            rows.append(row)
            after = " ".join(
                f"lr {lr}: UA {row[f'finetuned_lr{lr}']['UA']:5.1f} RA {row[f'finetuned_lr{lr}']['RA']:5.1f}"
                for lr in args.ft_lrs
            )
            print(f"{kind} seed {seed} class {forget_class}: orig RA {row['original']['RA']:5.1f} | unlearned UA "
                  f"{row['unlearned']['UA']:5.1f} RA {row['unlearned']['RA']:5.1f} | {after}", flush=True)  # fmt: skip
        write_partial(args, {"rows": rows, "synthesis": synthesis})
    summary = []
    for stage in ["unlearned", *(f"finetuned_lr{lr}" for lr in args.ft_lrs)]:
        for seed, group in _group(rows, ("seed",)).items():
            summary.append({"seed": seed[0], "stage": stage, **stage_summary(group, stage)})
            print(f"summary {summary[-1]}", flush=True)
    return {"model": kind, "setting": setting, "epochs": args.epochs, "per_class": args.per_class,
            "data": args.ft_data, "rows": rows, "synthesis": synthesis, "summary": summary}  # fmt: skip


def with_ta(model: nn.Module, split, test_set) -> dict:
    """UA, RA and TA (%; TA on `test_set`, the test images without the forget class)."""
    return {**quick_metrics(model, split), "TA": accuracy(model, test_set)}


def stage_summary(group: list[dict], stage: str) -> dict:
    """Forget accuracy (mean, max) and RA/TA drops from the original of one stage's rows."""
    forget = [100 - r[stage]["UA"] for r in group]
    return {
        "forget_accuracy_mean": statistics.mean(forget),
        "forget_accuracy_max": max(forget),
        "retain_drop_mean": statistics.mean(r["original"]["RA"] - r[stage]["RA"] for r in group),
        "test_drop_mean": statistics.mean(r["original"]["TA"] - r[stage]["TA"] for r in group),
    }


CALIBRATIONS = ("real", "synthetic", "gaussian")


def calibration_images(kind: str, seed: int, model: nn.Module, source: str, draw: int, train, per_class: int):
    """`per_class` images of each class from `source` as an ArrayDataset: `real` (a
    seeded draw from the training subset), `synthetic` (DeepInversion without BN, synthesis
    seed `draw`) or `gaussian` (standard-normal noise, labelled round-robin)."""
    from modhifi_core.data import ArrayDataset

    if source == "synthetic":
        return synthetic_samples(kind, seed, model, per_class, draw)[0]
    labels = torch.arange(10).repeat(per_class)
    if source == "gaussian":
        generator = torch.Generator().manual_seed(draw)
        return ArrayDataset(torch.randn(len(labels), 1, 28, 28, generator=generator), labels, 10)
    generator = torch.Generator().manual_seed(draw)
    keep = [torch.nonzero(train.labels == k).flatten() for k in range(10)]
    keep = [index[torch.randperm(len(index), generator=generator)[:per_class]] for index in keep]
    return train.subset(torch.cat(keep).sort().values)


def section_calibrate_ln(args) -> dict:
    """Calibration of a LayerNorm transformer without BN statistics: the same operations
    calibrated on real, synthetic (class CE + image priors only) and gaussian images,
    `--draws` draws each — MLP neurons removed (`--mlp-fractions`, energy + LS refit, no
    fine-tuning: test accuracy) and ModHiFi-U with the `ln_setting` scored on the
    calibration images of the forget class (the centre on those of the others; UA/RA
    measured on the real split), every class."""
    from modhifi_core.pruning.ffn import prune_transformer
    from modhifi_core.splits import class_split
    from modhifi_core.unlearning import unlearn

    kind, setting = args.model, ln_setting(args)
    data = fashion(None, VIT_TRAIN["per_class"])
    full = fashion(None, args.split_per_class)
    test = per_class_subset(data.test, args.test_per_class)
    rows = []
    for seed in args.seeds:
        model = unlearn_subject(kind, seed, None, args)
        dense = accuracy(model, test)
        for draw in range(args.draws):
            for source in args.calibrations:
                images = calibration_images(kind, seed, model, source, draw, data.train, args.per_class)
                base = {"model": kind, "seed": seed, "calibration": source, "draw": draw}
                for fraction in args.mlp_fractions:
                    result = prune_transformer(model, images.images, fraction=fraction, seed=seed, batch_size=64)
                    rows.append({**base, "operation": f"mlp {fraction}", "dense_test_accuracy": dense,
                                 "test_accuracy": accuracy(result.model, test)})  # fmt: skip
                    print(f"{kind} seed {seed} draw {draw} {source:9s} MLP {fraction}: test "
                          f"{rows[-1]['test_accuracy']:5.1f} (dense {dense:5.1f})", flush=True)  # fmt: skip
                for forget_class in args.classes:
                    split = class_split(full.train, forget_class)
                    forget = images.images[images.labels == forget_class]
                    others = images.images[images.labels != forget_class]
                    options = {**setting, "layers": ln_layers(model, setting["layers"])}
                    result = unlearn(model, split, "modhifi", forget_images=forget, retain_images=others, **options)
                    row = {**base, "operation": "modhifi-u", "forget_class": forget_class, **setting}
                    rows.append({**row, "original": quick_metrics(model, split), **quick_metrics(result.model, split)})
                    print(f"{kind} seed {seed} draw {draw} {source:9s} class {forget_class}: UA {rows[-1]['UA']:5.1f} "
                          f"RA {rows[-1]['RA']:5.1f} (orig {rows[-1]['original']['RA']:5.1f})", flush=True)  # fmt: skip
                write_partial(args, {"rows": rows})
    summary = []
    for (source, operation), group in _group(rows, ("calibration", "operation")).items():
        draws = _group(group, ("seed", "draw"))
        if operation == "modhifi-u":
            forget = [statistics.mean(100 - r["UA"] for r in g) for g in draws.values()]
            drop = [statistics.mean(r["original"]["RA"] - r["RA"] for r in g) for g in draws.values()]
            entry = {"forget_accuracy": forget, "retain_drop": drop}
        else:
            entry = {"test_accuracy": [g[0]["test_accuracy"] for g in draws.values()],
                     "dense": [g[0]["dense_test_accuracy"] for g in draws.values()]}  # fmt: skip
        entry = {"calibration": source, "operation": operation, **entry}
        for key in [k for k in entry if isinstance(entry[k], list)]:
            values = entry[key]
            entry[f"{key}_mean"] = statistics.mean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
        print(f"summary {entry}", flush=True)
    return {"model": kind, "setting": setting, "per_class": args.per_class, "draws": args.draws, "rows": rows,
            "summary": summary}  # fmt: skip


def _group(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def section_speed(args) -> dict:
    """HF ResNet-50 (the default ResNetConfig) at 224 px, random weights with BN statistics
    recalibrated on gaussian images: FLOPs cut vs measured CPU latency speed-up."""
    from transformers import ResNetConfig, ResNetForImageClassification

    from modhifi_core.vision import LogitsOnly
    from modhifi_core.vision.modify import prune_hf_classifier

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()

    def prune(method: str, target: float, options: dict):
        result = prune_hf_classifier(model, calibration, method, target_flops=target, **options)
        return LogitsOnly(result.model).eval(), result.report

    calibration = gaussian_calibration(LogitsOnly(model), args.images or 16)
    return speed_rows("HF ResNet-50 224x224", LogitsOnly(model).eval(), prune, args)


def section_speed_vit(args) -> dict:
    """HF ViT-S/16 (hidden 384, 12 blocks, 6 heads, MLP 1536) at 224 px, random weights:
    MLP neurons removed (attention a pass-through), measured CPU latency vs FLOPs cut."""
    from transformers import ViTConfig, ViTForImageClassification

    from modhifi_core.pruning.ffn import collect_ffn_statistics, prune_transformer
    from modhifi_core.pruning.report import latency_report
    from modhifi_core.vision import LogitsOnly

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                       image_size=224, patch_size=16, num_labels=1000)  # fmt: skip
    model = ViTForImageClassification(config).eval()
    calibration = torch.randn(args.images or 16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    statistics_ = collect_ffn_statistics(model, calibration, batch_size=8)
    batch, rows = args.batch or 16, []
    for fraction in args.fractions or (0.5, 0.75):
        start = time.perf_counter()
        result = prune_transformer(model, fraction=fraction, statistics=statistics_, seq_len=197, round_to=8)
        prune_seconds = time.perf_counter() - start
        latency = latency_report(LogitsOnly(model), LogitsOnly(result.model), (3, 224, 224), batch, 2, args.repeats)
        row = {
            "model": "HF ViT-S/16 224x224",
            "method": "ModHiFi energy + LS refit",
            "mlp_fraction_removed": fraction,
            "round_to": 8,
            "flops_ratio": result.report["flops_ratio"],
            "params_ratio": result.report["params_ratio"],
            "prune_seconds": prune_seconds,
            **latency,
            "speedup_per_flops_cut": latency["latency_speedup"] * result.report["flops_ratio"],
        }
        rows.append(row)
        print(
            f"ViT-S/16 MLP {fraction:.2f} removed: flops {row['flops_ratio']:.3f} latency "
            f"{latency['latency_dense_ms']:.0f} -> {latency['latency_pruned_ms']:.0f} ms  speed-up "
            f"{latency['latency_speedup']:.2f}x = {row['speedup_per_flops_cut']:.2f} of the cut (goal 0.9)",
            flush=True,
        )
    goals = {f"MLP {r['mlp_fraction_removed']}": {"value": r["speedup_per_flops_cut"], "goal": 0.9,
                                                  "met": r["speedup_per_flops_cut"] >= 0.9} for r in rows}  # fmt: skip
    return {"batch": batch, "repeats": args.repeats, "rows": rows, "goals": goals}


def section_speed_zoo(args) -> dict:
    """torchvision resnet50 at 224 px (needs .venv/zoo): as `speed`."""
    from modhifi_core.pruning import prune_model
    from modhifi_core.sources.torchvision_zoo import build_zoo_model

    torch.manual_seed(0)
    model = build_zoo_model("torchvision:resnet50")
    calibration = gaussian_calibration(model, args.images or 16)

    def prune(method: str, target: float, options: dict):
        result = prune_model(model, calibration, method, target_flops=target, **options)
        return result.model, result.report

    return speed_rows("torchvision resnet50 224x224", model, prune, args)


def gaussian_calibration(model: nn.Module, samples: int) -> torch.Tensor:
    from modhifi_core.batchnorm import recalibrate_batchnorm

    images = torch.randn(samples, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    recalibrate_batchnorm(model, images.split(8))
    return images


def speed_rows(setting: str, dense: nn.Module, prune, args) -> dict:
    from modhifi_core.pruning.report import latency_report

    batch = args.batch or 16
    runs = [("L2 magnitude", "l2", {}), ("ModHiFi-P scalar", "modhifi", {"compensation": "scalar"})]
    rows = []
    for target in (0.5, 0.25):
        for label, method, options in runs:
            start = time.perf_counter()
            pruned, report = prune(method, target, {**options, "round_to": 8, "batch_size": 8})
            prune_seconds = time.perf_counter() - start
            for layout in ("contiguous", "channels_last"):
                latency = latency_report(dense, pruned, (3, 224, 224), batch, 2, args.repeats, layout)
                row = {
                    "model": setting,
                    "method": label,
                    "target_flops": target,
                    "round_to": 8,
                    "memory_format": layout,
                    "flops_ratio": report["flops_ratio"],
                    "params_ratio": report["params_ratio"],
                    "prune_seconds": prune_seconds,
                    **latency,
                    "speedup_per_flops_cut": latency["latency_speedup"] * report["flops_ratio"],
                }
                rows.append(row)
                print(
                    f"{setting} {label:17s} target {target:.2f} {layout:13s}: flops {row['flops_ratio']:.3f} latency "
                    f"{latency['latency_dense_ms']:.0f} -> {latency['latency_pruned_ms']:.0f} ms  speed-up "
                    f"{latency['latency_speedup']:.2f}x = {row['speedup_per_flops_cut']:.2f} of the cut (goal 0.9)",
                    flush=True,
                )
    goals = {}
    for r in rows:
        value = r["speedup_per_flops_cut"]
        goals[f"{r['method']} at {r['target_flops']}, {r['memory_format']}"] = {
            "value": value,
            "goal": 0.9,
            "met": value >= 0.9,
        }
    return {"batch": batch, "repeats": args.repeats, "rows": rows, "goals": goals}


SECTIONS = {
    "train": section_train,
    "prune": section_prune,
    "prune-mlp": section_prune_mlp,
    "unlearn": section_unlearn,
    "finetune-ln": section_finetune_ln,
    "calibrate-ln": section_calibrate_ln,
    "speed": section_speed,
    "speed-vit": section_speed_vit,
    "speed-zoo": section_speed_zoo,
}


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "result file name under results/ (default vision_<section>.json)")
    options.add_argument("section", choices=sorted(SECTIONS))
    options.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    options.add_argument("--models", nargs="+", default=["resnet", "vit"])
    options.add_argument("--train-per-class", type=int, default=500)
    options.add_argument("--retrain", action="store_true")
    options.add_argument("--images", type=int, default=None, help="calibration / scoring images")
    options.add_argument("--targets", type=float, nargs="+", default=None)
    options.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="prune: methods to run (modhifi modhifi-full l2 l1 random; default all)",
    )
    options.add_argument("--batch", type=int, default=None, help="speed: latency batch (default 16)")
    options.add_argument("--repeats", type=int, default=5, help="speed: timed passes per model")
    options.add_argument("--model", choices=["resnet", "vit", "swin"], default="resnet", help="unlearn: which model")
    options.add_argument(
        "--vit-layers", nargs="+", choices=LN_LAYER_SETS, default=["all"],
        help="unlearn: fc2 of every block, the last, or the last two",
    )  # fmt: skip
    options.add_argument(
        "--centres", nargs="+", choices=["bn", "retain"], default=["bn"],
        help="unlearn (ViT/Swin): saliency centred on 0 (bn: no BN) or on the retained samples' mean output",
    )  # fmt: skip
    options.add_argument(
        "--contrastive", type=float, nargs="+", default=[0.0],
        help="unlearn (ViT/Swin): retain fractions to spare (contrastive=True); 0 = plain ModHiFi-U",
    )  # fmt: skip
    options.add_argument(
        "--logit-mask", "--durable", dest="logit_mask", action="store_true",
        help="unlearn (ViT/Swin): also negate the classifier row's HiFi inputs (logit_mask=True: a mask, not "
        "forgetting; --durable is its old name)",
    )  # fmt: skip
    options.add_argument("--quick", action="store_true", help="unlearn: UA and RA only (a selection sweep)")
    options.add_argument("--per-class", type=int, default=50, help="finetune-ln/calibrate-ln: samples per class")
    options.add_argument("--epochs", type=int, default=1, help="finetune-ln: fine-tuning epochs")
    options.add_argument("--ft-lrs", type=float, nargs="+", default=[0.01], help="finetune-ln: SGD learning rates")
    options.add_argument("--ft-data", choices=CALIBRATIONS, default="synthetic", help="finetune-ln: the samples")
    options.add_argument("--draws", type=int, default=3, help="calibrate-ln: calibration draws per source")
    options.add_argument("--calibrations", nargs="+", choices=CALIBRATIONS, default=list(CALIBRATIONS))
    options.add_argument("--mlp-fractions", type=float, nargs="*", default=[0.5, 0.75], help="calibrate-ln")
    options.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=None,
        help="HiFi fractions (unlearn), MLP fractions removed (prune-mlp, speed-vit)",
    )
    options.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    options.add_argument("--split-per-class", type=int, default=200, help="unlearn: D_f/D_r from this many per class")
    options.add_argument("--test-per-class", type=int, default=200, help="prune/unlearn: test images per class")
    args = parse(options, argv)
    start = time.perf_counter()
    result = SECTIONS[args.section](args)
    result.update(
        {"section": args.section, "seconds": time.perf_counter() - start, "torch": torch.__version__,
         "python": platform.python_version(), "threads": args.threads}
    )  # fmt: skip
    write_result(result_file(args), result)


if __name__ == "__main__":
    main()
