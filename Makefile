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

# On a CUDA machine: every model family under trainer=gpu (32, bf16-mixed, 16-mixed) and trainer=ddp, then the
# bench, into experiments/gpu_check.json; without CUDA it says so and fails. At most 10 minutes.
gpu-check: install $(VENV)/.bench-installed
	$(PY) experiments/gpu_check.py

clean:
	rm -rf outputs multirun .pytest_cache
