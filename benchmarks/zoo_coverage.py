"""Zoo coverage: modhifi's public `prune` beside Torch-Pruning's own `MetaPruner` on every
torchvision classification architecture and one small member of a dozen timm families.

    /work/main/.venv/zoo/bin/python benchmarks/zoo_coverage.py            # the whole table
    ... benchmarks/zoo_coverage.py --only torchvision:resnet18 timm:ghostnet_050

Each architecture is built with random weights (10 classes) at the smallest of
`--sizes` px its forward accepts, calibrated on `--samples` gaussian images, and pruned to
`--target` of its FLOPs: by modhifi (`modhifi_core.prune`, defaults: ModHiFi-P, full
compensation; FLOPs by modhifi's own count, and re-counted by Torch-Pruning's
`count_ops_and_params`) and by Torch-Pruning's `MetaPruner` (L2 group magnitude,
per-layer uniform ratio, `--steps` progressive steps until its own count reaches the
target). Outcome `ok`: the pruned model runs and its FLOPs ratio (by the pruner's own
count) is at most the target + `--tolerance` (Torch-Pruning stops at the first step at or
below the target; modhifi refuses a result off the target by more than ±0.02); otherwise the failure's one line (an
`InputError` is a refusal; any other exception is an internal failure, named so).
Architectures over `--max-params` parameters are listed as skipped on both sides; each
side has `--time-limit` seconds per architecture. Needs the zoo venv (torchvision, timm).
"""

from __future__ import annotations

import json
import signal
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# One small member of each timm family the issue names.
TIMM = (
    "resnet10t",
    "efficientnet_b0",
    "mobilenetv3_small_050",
    "convnext_atto",
    "regnetx_002",
    "regnety_002",
    "ghostnet_050",
    "densenet121",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "resnext26ts",
)


class TimeLimit(Exception):
    pass


def _alarm(signum, frame):
    raise TimeLimit


def architectures(only: list[str]) -> list[str]:
    import torchvision

    if only:
        return only
    names = [f"torchvision:{name}" for name in torchvision.models.list_models(module=torchvision.models)]
    return [f"timm:{name}" for name in TIMM] + names


def build(source: str, sizes: list[int]):
    """The random-init model and an input batch shape at the smallest size it accepts."""
    import torch

    from modhifi_core.sources.torchvision_zoo import build_zoo_model

    library = source.split(":")[0]
    last = None
    for size in sizes:
        kwargs = {"num_classes": 10}
        if library == "timm":
            kwargs["img_size"] = size
        elif "vit_" in source:
            kwargs["image_size"] = size
        try:
            model = build_zoo_model(source, **kwargs)
        except Exception:
            kwargs.pop("img_size", None)
            model = build_zoo_model(source, **kwargs)
        try:
            with torch.no_grad():
                model(torch.randn(1, 3, size, size))
            return model, size, kwargs
        except Exception as exc:
            last = exc
    raise RuntimeError(f"no forward at sizes {sizes}: {last}")


def tp_count(model, size: int) -> tuple[float, int]:
    import torch
    import torch_pruning as tp

    flops, params = tp.utils.count_ops_and_params(model, torch.randn(1, 3, size, size))
    return float(flops), int(params)


def run_modhifi(model, calibration, target: float, compensation: str | None) -> dict:
    from modhifi_core import prune

    options = {"compensation": compensation} if compensation else {}
    result = prune(model, calibration, target, batch_size=len(calibration), **options)
    return {"model": result.model, "flops_ratio": result.report["flops_ratio"]}


def run_torch_pruning(model, calibration, target: float, steps: int) -> dict:
    import torch_pruning as tp

    from modhifi_core.models import output_layer_name

    example = calibration[:1]
    base, _ = tp.utils.count_ops_and_params(model, example)
    ignored = [model.get_submodule(output_layer_name(model))]
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        iterative_steps=steps,
        pruning_ratio=0.95,
        ignored_layers=ignored,
    )
    ratio = 1.0
    for _ in range(steps):
        pruner.step()
        ratio = tp.utils.count_ops_and_params(model, example)[0] / base
        if ratio <= target:
            break
    return {"model": model, "flops_ratio": ratio}


def measure(side: str, source: str, args) -> dict:
    import copy

    import torch

    from modhifi_core.errors import InputError

    start = time.perf_counter()
    row = {"outcome": "", "flops_ratio": None, "tp_count_ratio": None, "params_ratio": None}
    signal.alarm(args.time_limit)
    try:
        dense, size, kwargs = build(source, args.sizes)
        row["size"] = size
        torch.manual_seed(0)
        calibration = torch.randn(args.samples, 3, size, size)
        dense_flops, dense_params = tp_count(dense, size)
        if side == "modhifi":
            result = run_modhifi(dense, calibration, args.target, args.compensation)
        else:
            result = run_torch_pruning(copy.deepcopy(dense), calibration, args.target, args.steps)
        with torch.no_grad():
            result["model"](calibration[:1])
        flops, params = tp_count(result["model"], size)
        row.update(flops_ratio=result["flops_ratio"], tp_count_ratio=flops / dense_flops)
        row["params_ratio"] = params / dense_params
        ok = result["flops_ratio"] <= args.target + args.tolerance
        row["outcome"] = "ok" if ok else f"missed: FLOPs ratio {result['flops_ratio']:.3f}"
    except TimeLimit:
        row["outcome"] = f"time limit ({args.time_limit} s)"
    except InputError as exc:
        row["outcome"] = f"refused: {exc}"
    except Exception as exc:
        row["outcome"] = f"INTERNAL {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        signal.alarm(0)
    row["seconds"] = time.perf_counter() - start
    return row


def parameters(source: str) -> int:
    import torch

    from modhifi_core.sources.torchvision_zoo import build_zoo_model

    try:
        with torch.device("meta"):  # no memory, no init time
            model = build_zoo_model(source, num_classes=10)
    except Exception:  # an initialiser that copies (torchvision's RegNets)
        model = build_zoo_model(source, num_classes=10)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> None:
    made = common.parser(__doc__, "result JSON (default results/zoo_coverage.json)")
    made.add_argument("--only", nargs="*", default=[], help="LIBRARY:ARCH sources (default: the whole zoo)")
    made.add_argument("--target", type=float, default=0.5, help="FLOPs fraction that remains (default 0.5)")
    made.add_argument("--tolerance", type=float, default=0.02, help="success: |ratio - target| <= this")
    made.add_argument("--samples", type=int, default=8, help="gaussian calibration images (default 8)")
    made.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 160, 224], help="input sizes tried, px")
    made.add_argument(
        "--compensation", default=None, help="modhifi's compensation (default: prune's, full); none is faster"
    )
    made.add_argument("--steps", type=int, default=40, help="Torch-Pruning's progressive steps (default 40)")
    made.add_argument("--time-limit", type=int, default=120, help="seconds per architecture and side")
    made.add_argument("--resume", action="store_true", help="keep the rows --out already holds")
    made.add_argument("--max-params", type=float, default=30e6, help="skip larger architectures (both sides)")
    args = common.parse(made, argv)
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    rows, path = [], common.result_path(args.out, "zoo_coverage.json")
    done = {r["architecture"]: r for r in json.loads(path.read_text())["rows"]} if args.resume else {}
    for source in architectures(args.only):
        if source in done:  # --resume: measured by an earlier run with these settings
            rows.append(done[source])
            continue
        size = parameters(source)
        entry = {"architecture": source, "params": size}
        if size > args.max_params:
            entry["modhifi"] = entry["torch_pruning"] = {"outcome": f"skipped: {size / 1e6:.0f}M params > --max-params"}
        else:
            entry["modhifi"] = measure("modhifi", source, args)
            entry["torch_pruning"] = measure("torch_pruning", source, args)
        rows.append(entry)
        m, t = entry["modhifi"], entry["torch_pruning"]
        print(f"{source:40s} modhifi {_cell(m)} | torch-pruning {_cell(t)}", flush=True)
        common.write_result(path, {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows})
    summary = {side: sum(r[side]["outcome"] == "ok" for r in rows) for side in ("modhifi", "torch_pruning")}
    internal = {side: sum(r[side]["outcome"].startswith("INTERNAL") for r in rows) for side in summary}
    common.write_result(
        path,
        {
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "rows": rows,
            "succeeded": summary,
            "internal_failures": internal,
        },
    )
    print(f"\n{len(rows)} architectures; succeeded: {summary}; internal failures: {internal}")
    for row in rows:
        for side in summary:
            if row[side]["outcome"] != "ok":
                print(f"  {row['architecture']} [{side}]: {row[side]['outcome']}")
    print(f"wrote {path}")


def _cell(row: dict) -> str:
    if row.get("flops_ratio") is None:
        return f"{row['outcome'][:60]}"
    tp_ratio = row["tp_count_ratio"]
    return (
        f"FLOPs {row['flops_ratio']:.3f} (TP count {tp_ratio:.3f}) params {row['params_ratio']:.3f} "
        f"{row['seconds']:5.1f}s {row['outcome'][:40]}"
    )


if __name__ == "__main__":
    main()
