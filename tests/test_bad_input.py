"""Bad input through the real CLI: a non-zero exit, one short line naming the key or file and the fix, no traceback.

Each case is its own `python -m genlab` process (imports cost seconds), so the module runs them all at once on
a small thread pool and the parametrized tests check one result each.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli, write_tiny_mnist

BAD_INPUTS = [
    # (id, overrides, words the message must contain); {root}, {bad_magic}, ... are filled in by the fixture.
    ("unknown group option", ["model=vea"], ["model", "vea", "ae"]),
    ("misspelt key", ["model.latnt_dim=3"], ["latnt_dim"]),
    ("misspelt added key", ["+model.latnt_dim=3"], ["model.latnt_dim", "model.latent_dim"]),
    ("wrong type", ["model.latent_dim=abc"], ["model.latent_dim", "'abc'", "int"]),
    ("zero size", ["model.latent_dim=0"], ["model.latent_dim=0", "> 0"]),
    ("negative size", ["data.batch_size=-4"], ["data.batch_size=-4", "positive"]),
    ("negative lr", ["model.optimizer.lr=-0.1"], ["model.optimizer.lr=-0.1", "> 0"]),
    ("unknown option value", ["model.reconstruction=l1"], ["model.reconstruction='l1'", "mse", "bce"]),
    ("iwae k=0", ["model=iwae", "model.k=0"], ["model.k=0", "> 0"]),
    ("gan n_critic=0", ["model=gan", "data=ring8", "model.n_critic=0"], ["model.n_critic=0", "> 0"]),
    ("unknown cpu_matmul", ["cpu_matmul=fast"], ["cpu_matmul='fast'", "auto", "blas", "onednn"]),
    ("unknown precision", ["trainer.precision=bf17"], ["trainer.precision='bf17'", "bf16-mixed", "16-mixed"]),
    # limit_*_batches are null in conf/trainer/cpu.yaml (Lightning's default) and still checked against the Trainer.
    ("wrong batch limit", ["trainer.limit_val_batches=all"], ["trainer.limit_val_batches='all'", "int", "float"]),
    ("missing data root", ["data=mnist", "paths.data_dir=/nonexistent/genlab-data"],
     ["/nonexistent/genlab-data", "GENLAB_DATA_DIR", "data.root"]),
    ("idx wrong magic", ["data=mnist", "paths.data_dir={bad_magic}"],
     ["train-images-idx3-ubyte", "magic", "data.download=true"]),
    ("idx truncated", ["data=mnist", "paths.data_dir={truncated}"],
     ["t10k-labels-idx1-ubyte", "truncated", "data.download=true"]),
    ("idx count mismatch", ["data=mnist", "paths.data_dir={mismatch}"],
     ["60 images", "59 labels", "train-labels-idx1-ubyte", "intact copy"]),
    ("unreadable checkpoint", ["ckpt_path={garbage}"], ["garbage.ckpt", "cannot be read", "last.ckpt"]),
    ("checkpoint of another model", ["model=pca", "ckpt_path={ae_ckpt}"],
     ["genlab.models.autoencoder.Autoencoder", "genlab.models.pca.PCA", "model="]),
    ("checkpoint of other sizes", ["model=ae", "model.latent_dim=3", "ckpt_path={ae_ckpt}"],
     ["has shape", "(2, 128)", "(3, 128)", ".hydra/config.yaml"]),
]
if not torch.cuda.is_available():  # this machine: a CPU build of torch, no GPU
    BAD_INPUTS.append(("trainer=gpu without CUDA", ["trainer=gpu"],
                       ["trainer=gpu needs a CUDA GPU", "has no CUDA support", "make install TORCH=", "trainer=cpu"]))
# Hydra's own composition errors exit with 1, genlab's checks with 2.
HYDRA_ERRORS = {"unknown group option", "misspelt key"}


def corrupt(root: Path, name: str, how: str) -> Path:
    """Tiny MNIST under ``root`` with one file damaged: its magic bytes, its tail, or one label fewer."""
    folder = write_tiny_mnist(root)
    path = folder / f"{name}.gz"
    raw = gzip.decompress(path.read_bytes())
    if how == "magic":
        raw = b"\x1f\x00" + raw[2:]
    elif how == "truncate":
        raw = raw[: len(raw) - 3]
    elif how == "one_label_fewer":  # the count in the header and the data both lose one entry
        count = int.from_bytes(raw[4:8], "big")
        raw = raw[:4] + (count - 1).to_bytes(4, "big") + raw[8:-1]
    path.write_bytes(gzip.compress(raw))
    return root


def run(overrides: list[str], run_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # One torch thread per process: the pool already keeps every core busy.
    return run_cli(*overrides, "logger=csv", f"hydra.run.dir={run_dir}", env={"OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every BAD_INPUTS case (and one with HYDRA_FULL_ERROR=1) run through the CLI, two or more at a time."""
    tmp = tmp_path_factory.mktemp("bad_input")
    garbage = tmp / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    values = {
        "bad_magic": str(corrupt(tmp / "magic", "train-images-idx3-ubyte", "magic")),
        "truncated": str(corrupt(tmp / "trunc", "t10k-labels-idx1-ubyte", "truncate")),
        "mismatch": str(corrupt(tmp / "count", "train-labels-idx1-ubyte", "one_label_fewer")),
        "garbage": str(garbage),
        "ae_ckpt": str(tmp / "ae_run" / "checkpoints" / "last.ckpt"),
    }
    workers = max(2, min(4, os.cpu_count() or 2))
    out: dict[str, tuple[subprocess.CompletedProcess, Path]] = {}
    with ThreadPoolExecutor(workers) as pool:
        # A real AE checkpoint for the "another model" case, trained while the other cases run.
        ae_run = pool.submit(run, ["model=ae", *TINY, "test=false"], tmp / "ae_run")
        futures = {}
        for i, (case, overrides, _) in enumerate(BAD_INPUTS):
            if "{ae_ckpt}" in " ".join(overrides):
                continue
            run_dir = tmp / f"case{i}"
            futures[case] = (pool.submit(run, [o.format(**values) for o in overrides], run_dir), run_dir)
        full_dir = tmp / "full_error"
        futures["HYDRA_FULL_ERROR"] = (pool.submit(run, ["model.latent_dim=0"], full_dir, {"HYDRA_FULL_ERROR": "1"}),
                                       full_dir)
        trained = ae_run.result()
        assert trained.returncode == 0, trained.stderr[-3000:]
        for i, (case, overrides, _) in enumerate(BAD_INPUTS):
            if case not in futures:
                run_dir = tmp / f"case{i}"
                futures[case] = (pool.submit(run, [o.format(**values) for o in overrides], run_dir), run_dir)
        for case, (future, run_dir) in futures.items():
            out[case] = (future.result(), run_dir)
    return out


@pytest.mark.parametrize(("case", "overrides", "words"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_fails_early_with_a_short_message(case, overrides, words, results):
    proc, run_dir = results[case]
    assert proc.returncode == (1 if case in HYDRA_ERRORS else 2), proc.stderr[-2000:]
    message = proc.stderr + proc.stdout
    for word in words:
        assert word in message, message[-2000:]
    assert "Traceback" not in message
    error_lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert error_lines and all(len(line) < 700 for line in error_lines), proc.stderr[-2000:]
    assert not list(run_dir.rglob("*.ckpt")), "it must fail before a checkpoint is written"


def test_full_traceback_only_with_hydra_full_error(results):
    proc, _ = results["HYDRA_FULL_ERROR"]
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert "model.latent_dim=0" in proc.stderr
