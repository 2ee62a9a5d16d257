# genlab: `make run` sets up and trains the default experiment; `make test` sets up and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install run test lint bench gpu-check clean

install: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. TORCH is passed to pip unquoted, so it
# may carry pip options: a CUDA build is `rm -rf .venv && make install TORCH='torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cu128'` (the cuXYZ your driver supports; README, Hardware).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# One torch thread: the default model is tiny, and more threads mostly spin (measured on 2 cores: 25 s wall with
# one thread, 84 s with the default).
run: install
	OMP_NUM_THREADS=1 $(PY) -m genlab

# Two test workers with one torch thread each: more threads than cores makes every step many times slower.
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check genlab tests experiments

# The bench extra (pythae, for the vae_vs_pythae comparison) on top of the install; torch stays as installed.
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $@

bench: install $(VENV)/.bench-installed
	$(PY) -m experiments.bench

# The acceptance test on a CUDA machine, from a fresh clone: installs a CUDA build of torch where nvidia-smi exists
# (CUDA_TORCH; a .venv that already holds a CPU build must go first: rm -rf .venv), then every family on the GPU
# against the CPU and in mixed precision, a SIGINT resume, deterministic=true, and DDP with 2+ GPUs: one table, exit
# 1 on any miss, at most 10 minutes on one H100 (genlab/gpu_check.py; GPU_CHECK_ARGS=--device cpu: a dry run).
CUDA_TORCH ?= torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
GPU_CHECK_ARGS ?=
PINNED_TORCH := $(TORCH)
HAVE_NVIDIA := $(shell command -v nvidia-smi 2>/dev/null)
gpu-check: TORCH = $(if $(HAVE_NVIDIA),$(CUDA_TORCH),$(PINNED_TORCH))
gpu-check: install
	$(PY) -m genlab.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
