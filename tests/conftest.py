"""Shared fixtures: a CLI runner for `python -m genlab` and small MNIST-format data made on the fly.

The suite isolates itself from the machine and from the developer's shell, so that it passes alike on an AMD EPYC,
an Intel Xeon with AMX and a CPU without oneDNN:

- one torch thread in the workers and in every child process (set here, not only in the Makefile);
- every `cpu_matmul=auto` run multiplies with torch's BLAS: ``auto``'s verdict is read from a session-temporary
  ``GENLAB_CACHE_DIR`` seeded with "no oneDNN", so nothing is timed and no two processes can choose differently
  (tests/test_cpu_matmul.py tests the probe itself on purpose, with caches of its own);
- caches and settings that libraries keep (matplotlib, W&B, XDG) go to the same temporary folder, so nothing is
  written under ``~``;
- the developer's GENLAB_*, SLURM_*, MASTER_*/rank variables and proxies are dropped, and every test's changes to
  threads, the matmul library, the environment, seeds and deterministic mode are undone after it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Variables of the developer's shell that would change what a run does or where it writes.
_DROPPED_PREFIXES = ("GENLAB_", "SLURM_", "WANDB_", "HYDRA_")
_DROPPED = {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
            "CUDA_VISIBLE_DEVICES", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
# Where libraries keep caches and settings during the session; set before they are imported, since they read it once.
# HOME too: W&B's service writes logs under ~ whatever the XDG variables say.
_CACHE_FOLDERS = {"HOME": "home", "GENLAB_CACHE_DIR": "genlab", "XDG_CACHE_HOME": "cache", "XDG_CONFIG_HOME": "config",
                  "XDG_DATA_HOME": "data", "XDG_STATE_HOME": "state", "MPLCONFIGDIR": "matplotlib",
                  "WANDB_CONFIG_DIR": "wandb-config", "WANDB_CACHE_DIR": "wandb-cache", "WANDB_DATA_DIR": "wandb-data"}
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="genlab-tests-"))
for _name in [n for n in os.environ if n in _DROPPED or n.startswith(_DROPPED_PREFIXES)]:
    del os.environ[_name]
for _name, _sub in _CACHE_FOLDERS.items():
    (_SESSION_DIR / _sub).mkdir()
    os.environ[_name] = str(_SESSION_DIR / _sub)
# Before torch is imported anywhere in this process: its thread pools read these once.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from genlab import cpu_matmul  # noqa: E402
from genlab.data.idx import write_idx  # noqa: E402

torch.set_num_threads(1)

# Random examples change from run to run; a property that holds only for most seeds must not decide CI.
settings.register_profile("genlab", derandomize=True, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "genlab"))


def pytest_configure(config: pytest.Config) -> None:
    """Seed the session's cpu_matmul cache with "no oneDNN", so every ``auto`` run here and in children uses BLAS."""
    verdict = {cpu_matmul.machine_key(): {"onednn": False, "onednn_error": None, "blas_us": None, "onednn_us": None}}
    cpu_matmul.cache_file().write_text(json.dumps(verdict))
    if cpu_matmul.available() and cpu_matmul.auto_verdict():
        raise pytest.UsageError("conftest: the seeded cpu_matmul verdict was not read; the suite would time the libraries")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    """Undo what a test changed in process-wide state: threads, matmul library, environment, RNGs, determinism."""
    threads, onednn = torch.get_num_threads(), cpu_matmul.onednn_enabled()
    environ = dict(os.environ)
    torch_rng, np_rng, py_rng = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    deterministic, default_dtype = torch.are_deterministic_algorithms_enabled(), torch.get_default_dtype()
    yield
    torch.set_num_threads(threads)
    cpu_matmul.use_onednn(onednn)
    os.environ.clear()
    os.environ.update(environ)
    torch.random.set_rng_state(torch_rng)
    np.random.set_state(np_rng)
    random.setstate(py_rng)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_default_dtype(default_dtype)


REPO = Path(__file__).resolve().parent.parent
# A run small enough for a test: one short epoch, one val and test batch.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def write_tiny_mnist(root: Path, dataset: str = "mnist", n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """Write MNIST-format IDX files (28x28 uint8 images, labels 0-9) under ``root/<dataset>/``."""
    rng = np.random.default_rng(seed)
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
        for i, label in enumerate(labels):  # a bright bar whose row depends on the label
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root holding tiny MNIST and Fashion-MNIST files."""
    root = tmp_path / "data"
    write_tiny_mnist(root, "mnist")
    write_tiny_mnist(root, "fashion_mnist", seed=1)
    return root


def run_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: int = 300, wandb_env: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python -m genlab ARGS`` in a subprocess; W&B is kept offline and quiet.

    ``wandb_env=False`` runs with no W&B variables at all, as on a fresh machine.
    """
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if wandb_env:
        full_env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    else:
        full_env = {k: v for k, v in full_env.items() if not k.startswith("WANDB_") or k.endswith("_DIR")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "genlab", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(run_dir: Path) -> dict:
    """The run's metrics.json without its provenance (commit, wall time, load), which differs between equal runs."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("provenance", None)
    return metrics
