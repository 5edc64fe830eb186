# Two front-door targets: `make run` (the main job on embedded defaults) and `make test`.
# Both create .venv and install the pinned dependency set (requirements.lock) when
# pyproject.toml or the lock file changed since the last install.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Which torch build: `cuda` where an NVIDIA GPU is visible (`nvidia-smi -L` succeeds), else
# `cpu`; `make install TORCH=cuda` (or cpu) chooses. Both pinned:
#   cpu:  torch==2.13.0, requirements.lock's pin (pip takes the 2.13.0+cpu wheel this machine
#         holds; PyPI's Linux wheel of that version would be a CUDA build).
#   cuda: torch==2.14.1, a CUDA 13 build (PyPI's Linux x86_64 wheel; ~5.5 GB with the nvidia-*
#         wheels, whose versions torch pins exactly), the newest pip admits here
#         (/etc/xdg/pip caps torch at 2.14.1); the lock's torch==2.13.0 line is left out for it.
# The stamp names the build, so switching TORCH reinstalls.
TORCH ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
TORCH_PIN_cpu := torch==2.13.0
TORCH_PIN_cuda := torch==2.14.1
TORCH_PIN := $(TORCH_PIN_$(TORCH))
ifeq ($(TORCH_PIN),)
$(error TORCH must be cpu or cuda, got '$(TORCH)')
endif
STAMP := $(VENV)/.install-stamp-$(TORCH)
LOCK := $(VENV)/requirements-$(TORCH).lock
# pip's own output (its warnings included) goes here; each step prints one line, and a
# failed step prints the tail of this log.
LOG := $(VENV)/install.log

export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-slow test-zoo lint format bench clean

install: $(STAMP) $(BIN)/modhifi

# The `modhifi` command: this checkout's flows.cli (tasks/ and flows/ are not installed
# packages; see pyproject.toml). A PYTHONPATH the caller sets comes first.
$(BIN)/modhifi: Makefile $(STAMP)
	@printf '#!/bin/sh\n# modhifi command line of the checkout %s (written by make install)\nPYTHONPATH="$${PYTHONPATH:+$$PYTHONPATH:}%s" exec "%s/$(BIN)/python" -m flows.cli "$$@"\n' "$(CURDIR)" "$(CURDIR)" "$(CURDIR)" > $@
	@chmod +x $@

# $(call step,WHAT,COMMAND): print "==> WHAT", run COMMAND into $(LOG), show its tail on failure.
define step
	@echo "==> $(1)"
	@$(2) >>$(LOG) 2>&1 || { echo "error: $(1) failed; the end of $(LOG):"; tail -n 40 $(LOG); exit 1; }
endef

# torch first, the build TORCH names; asking for it later would pull another build.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || { echo "==> creating $(VENV) ($(PYTHON) -m venv)"; $(PYTHON) -m venv $(VENV); }
	@rm -f $(VENV)/.install-stamp*
	@date > $(LOG)
	@grep -v -E '^torch==' requirements.lock > $(LOCK); echo '$(TORCH_PIN)' >> $(LOCK)
	$(call step,upgrading pip,$(BIN)/python -m pip install -q --upgrade pip)
	$(call step,installing $(TORCH_PIN) ($(TORCH) build),$(BIN)/python -m pip install -q $(TORCH_PIN))
	$(call step,installing pinned dependencies (requirements.lock; $(TORCH_PIN)),$(BIN)/python -m pip install -q -r $(LOCK))
	$(call step,installing modhifi (editable),$(BIN)/python -m pip install -q --no-deps -e .)
	@touch $(STAMP)
	@echo "==> installed (pip's log: $(LOG))"

run: install
	$(BIN)/modhifi run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

# torchvision/timm adapters: their own venv (torch 2.14.1 + torchvision 0.29.1, 5.7 GB),
# never the main one; CI runs it after make test (.ci/run). 5 min to build the venv here; the
# tests about 10 min on 2 cores. The zoo venv's `modhifi` (what a pipeline's stages run
# there): this checkout's flows.cli.
test-zoo:
	bash scripts/zoo_venv.sh
	@printf '#!/bin/sh\n# modhifi command line of the checkout %s in the zoo venv (written by make test-zoo)\nPYTHONPATH="$${PYTHONPATH:+$$PYTHONPATH:}%s" exec "%s/.venv/zoo/bin/python" -m flows.cli "$$@"\n' "$(CURDIR)" "$(CURDIR)" "$(CURDIR)" > .venv/zoo/bin/modhifi
	@chmod +x .venv/zoo/bin/modhifi
	.venv/zoo/bin/python -m pytest -q tests/zoo tests/test_vision_shapes.py
	.venv/zoo/bin/python -m pytest -q tests/test_kinds_conformance.py -k "torchvision or timm"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/prune.py
	$(BIN)/python benchmarks/unlearn.py table

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
