#!/usr/bin/env bash
# Create .venv/zoo: a second environment for the torchvision/timm adapters and tests/zoo.
#
# torchvision does not import beside the main venv's CPU torch 2.13.0 (toolchain.md), and
# installing torchvision or timm there would replace torch with a CUDA build. So the zoo lane
# gets its own venv: torch 2.14.1 + torchvision 0.29.1 (a CUDA build that runs on the CPU,
# ~5.5 GB), timm, and the project's pinned lock minus torch. Idempotent: a venv whose stamp
# is newer than pyproject.toml and requirements.lock is left as it is.
#
# Usage: scripts/zoo_venv.sh [VENV_DIR]   (default .venv/zoo); then
#        .venv/zoo/bin/python -m pytest -q tests/zoo
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${1:-.venv/zoo}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.install-stamp"

if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml && "$STAMP" -nt requirements.lock ]]; then
    echo "$VENV is up to date"
    exit 0
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch and torchvision first and together, so nothing later picks another torch.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
# The lock pins torch==2.13.0: drop that line, keep every other pin.
grep -v -E '^torch==' requirements.lock > "$VENV/requirements-zoo.lock"
"$VENV/bin/python" -m pip install -q -r "$VENV/requirements-zoo.lock" "timm==${TIMM_VERSION:-1.0.31}" \
    "transformers==${TRANSFORMERS_VERSION:-5.24.0}" "safetensors==${SAFETENSORS_VERSION:-0.8.0}"
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -c "import torch, torchvision, timm; print('zoo venv:', torch.__version__, torchvision.__version__, timm.__version__)"
touch "$STAMP"
