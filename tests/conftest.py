"""Shared fixtures: a CLI runner for `python -m genlab` and small MNIST-format data made on the fly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genlab.data.idx import write_idx

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
    if wandb_env:
        full_env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    else:
        full_env = {k: v for k, v in full_env.items() if not k.startswith("WANDB_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "genlab", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
