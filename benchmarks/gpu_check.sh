#!/usr/bin/env bash
# The GPU evidence of issue 23 in one run (< 10 min on one H100), printed as one table and
# written to benchmarks/results/gpu_check.json:
#   - the engine's tests marked `gpu` (pytest -m gpu: every kind's commands on cuda, bfloat16);
#   - float64 vs float32 GEMM throughput on the device (what float64 statistics cost);
#   - SmolLM2-135M pruned on cuda vs cpu: same kept neurons, perplexity within 0.5%;
#   - a 224-px ResNet-50: DeepInversion synthesis and a statistics pass vs one forward pass;
#   - the 1.1 B from-config Llama pruned on cuda, by benchmarks/scale_llm.py where it exists.
#
#   benchmarks/gpu_check.sh            # on a machine with CUDA; without one: says so, exits 0
#   benchmarks/gpu_check.sh --cpu      # without CUDA: the CPU half on tiny models (checks the script)
#
# PYTHON (default .venv/bin/python, else python3) runs it; the SmolLM2 row needs the `llm`
# extra and Debian's python3.11-doc (its text), as benchmarks/llm.py does.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 MODHIFI_PROGRESS=0 PYTHONUNBUFFERED=1
THREADS=$(nproc)
ROWS=$(mktemp -d)
trap 'rm -rf "$ROWS"' EXIT

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    DEVICE=cuda QUICK=()
    "$PY" -c 'import torch; print("==> CUDA:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
elif [ "${1:-}" = "--cpu" ]; then
    DEVICE=cpu QUICK=(--quick)
    echo "==> no CUDA: running the CPU half on tiny models (checks the script; no GPU numbers)"
else
    echo "no CUDA: torch in $PY sees no GPU (make install TORCH=cuda on a GPU machine); nothing to check."
    echo "benchmarks/gpu_check.sh --cpu runs the CPU half on tiny models."
    exit 0
fi

# $1 row name, $2 seconds allowed, rest: the command; a failure or timeout becomes a row.
check() {
    local name=$1 limit=$2
    shift 2
    echo "==> $name"
    timeout "$limit" "$@"
    local code=$?
    if [ $code -ne 0 ]; then
        local why="exit $code"
        [ $code -eq 124 ] && why="timed out after ${limit} s"
        printf '{"check": "%s", "device": "%s", "result": "%s", "passed": false}\n' "$name" "$DEVICE" "$why" >"$ROWS/$name.json"
    fi
}

py_check() {  # a check of benchmarks/gpu_check.py
    check "$1" "$2" "$PY" benchmarks/gpu_check.py "$1" "$ROWS" --device "$DEVICE" --threads "$THREADS" "${QUICK[@]}"
}

if [ "$DEVICE" = cuda ]; then
    start=$SECONDS
    summary=$(timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -n 1)
    code=${PIPESTATUS[0]}
    passed=false
    [ "$code" -eq 0 ] && passed=true
    printf '{"check": "pytest -m gpu", "device": "cuda", "result": "%s (%d s)", "passed": %s}\n' \
        "${summary//\"/}" "$((SECONDS - start))" "$passed" >"$ROWS/pytest.json"
    echo "==> pytest -m gpu: $summary"
fi

py_check gemm 60
py_check smollm2 300
py_check vision 180

if [ "$DEVICE" = cuda ] && [ -f benchmarks/scale_llm.py ]; then
    start=$SECONDS
    out=$(timeout 300 "$PY" benchmarks/scale_llm.py --device cuda 2>&1)
    code=$?
    passed=false
    [ "$code" -eq 0 ] && passed=true
    last=$(printf '%s\n' "$out" | tail -n 1 | tr -d '"\\')
    printf '{"check": "llama_1.1b_prune", "device": "cuda", "result": "%s (%d s)", "passed": %s}\n' \
        "$last" "$((SECONDS - start))" "$passed" >"$ROWS/scale.json"
elif [ "$DEVICE" = cuda ]; then
    echo "==> llama_1.1b_prune: skipped, benchmarks/scale_llm.py is not in this checkout"
    printf '{"check": "llama_1.1b_prune", "device": "cuda", "result": "skipped: benchmarks/scale_llm.py absent", "passed": null}\n' >"$ROWS/scale.json"
fi

out=()
[ "$DEVICE" = cpu ] && out=(--out "$ROWS/gpu_check_cpu.json")  # the CPU half writes no result file
"$PY" benchmarks/gpu_check.py table "$ROWS" "${out[@]}"
