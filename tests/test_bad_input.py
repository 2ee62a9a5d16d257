"""Bad input: a non-zero exit, one short line naming the key or file and the fix, no traceback.

What the command line adds to a failed check (the one-line ``genlab: error:`` report, exit code 2 for genlab's
checks and 1 for Hydra's, no traceback unless HYDRA_FULL_ERROR=1, nothing written) is checked through real
``python -m genlab`` processes, one per kind of failure: Hydra composition, a damaged IDX file, a checkpoint,
``trainer=gpu`` without CUDA. Every other case runs the same ``genlab.train.train`` in this process on the config
Hydra composes (a process costs seconds of imports): it must raise one of the errors that ``main`` reports in one
line (``USER_ERRORS``) before a checkpoint is written.
"""

from __future__ import annotations

import gzip
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_tiny_mnist
from hydra.errors import ConfigCompositionException
from in_process import tiny_run

from genlab.train import USER_ERRORS, train

# (id, overrides, words the message must contain); {bad_magic}, {ae_ckpt}, ... are filled in by the fixtures.
IN_PROCESS = [
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
    ("unreadable checkpoint", ["ckpt_path={garbage}"], ["garbage.ckpt", "cannot be read", "last.ckpt"]),
    ("idx truncated", ["data=mnist", "paths.data_dir={truncated}"],
     ["t10k-labels-idx1-ubyte", "truncated", "data.download=true"]),
    ("idx count mismatch", ["data=mnist", "paths.data_dir={mismatch}"],
     ["60 images", "59 labels", "train-labels-idx1-ubyte", "intact copy"]),
    ("checkpoint of another model", ["model=pca", "ckpt_path={ae_ckpt}"],
     ["genlab.models.autoencoder.Autoencoder", "genlab.models.pca.PCA", "model="]),
    ("checkpoint of other sizes", ["model=ae", "model.latent_dim=3", "ckpt_path={ae_ckpt}"],
     ["has shape", "(2, 128)", "(3, 128)", ".hydra/config.yaml"]),
]
CLI = [
    # Hydra's own composition errors exit with 1, genlab's checks with 2.
    ("unknown group option", ["model=vea"], ["model", "vea", "ae"]),
]
if not torch.cuda.is_available():  # this machine: a CPU build of torch, no GPU
    # Through the CLI: the message names the trainer= option chosen, which only a Hydra run knows.
    CLI.append(("trainer=gpu without CUDA", ["trainer=gpu"],
                ["trainer=gpu needs a CUDA GPU", "has no CUDA support", "make install TORCH=", "trainer=cpu"]))
HYDRA_ERRORS = {"unknown group option"}


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
    return run_cli(*overrides, "logger=csv", f"hydra.run.dir={run_dir}", env=env)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The damaged data roots and the checkpoint that is not one, which the cases name."""
    tmp = tmp_path_factory.mktemp("bad_input_files")
    garbage = tmp / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    return {
        "bad_magic": str(corrupt(tmp / "magic", "train-images-idx3-ubyte", "magic")),
        "truncated": str(corrupt(tmp / "trunc", "t10k-labels-idx1-ubyte", "truncate")),
        "mismatch": str(corrupt(tmp / "count", "train-labels-idx1-ubyte", "one_label_fewer")),
        "garbage": str(garbage),
    }


_TRAINED: dict[str, Path] = {}


@pytest.fixture
def ae_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real AE checkpoint (latent_dim 2), trained once in this process by ``genlab.train.train``; function-scoped,
    so that conftest's autouse fixture undoes what the training changes in global state (seeds, matmul library)."""
    if "ae" not in _TRAINED:
        run_dir = tmp_path_factory.mktemp("ae_run")
        train(tiny_run(["model=ae", "test=false", "logger=csv", "trainer.log_every_n_steps=1"], run_dir))
        _TRAINED["ae"] = run_dir / "checkpoints" / "last.ckpt"
    return _TRAINED["ae"]


@pytest.fixture(scope="module")
def results(inputs: dict[str, str]) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every CLI case and one with HYDRA_FULL_ERROR=1, two processes at a time."""
    tmp = Path(inputs["garbage"]).parent
    jobs = {case: ([o.format(**inputs) for o in overrides], tmp / f"case{i}", None)
            for i, (case, overrides, _) in enumerate(CLI)}
    jobs["HYDRA_FULL_ERROR"] = (["model.latent_dim=0"], tmp / "full_error", {"HYDRA_FULL_ERROR": "1"})
    with ThreadPoolExecutor(2) as pool:
        futures = {case: pool.submit(run, *job) for case, job in jobs.items()}
        return {case: (future.result(), jobs[case][1]) for case, future in futures.items()}


@pytest.mark.parametrize(("case", "overrides", "words"), CLI, ids=[c for c, _, _ in CLI])
def test_bad_input_fails_early_with_a_short_message(case, overrides, words, results):
    proc, run_dir = results[case]
    assert proc.returncode == (1 if case in HYDRA_ERRORS else 2), proc.stderr[-2000:]
    message = proc.stderr + proc.stdout
    for word in words:
        assert word in message, message[-2000:]
    assert "Traceback" not in message
    error_lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert error_lines and all(len(line) < 700 for line in error_lines), proc.stderr[-2000:]
    if case not in HYDRA_ERRORS:
        assert any(line.startswith("genlab: error: ") for line in error_lines), proc.stderr[-2000:]
    assert not list(run_dir.rglob("*.ckpt")), "it must fail before a checkpoint is written"


def test_full_traceback_only_with_hydra_full_error(results):
    proc, _ = results["HYDRA_FULL_ERROR"]
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert "model.latent_dim=0" in proc.stderr


@pytest.mark.parametrize(("case", "overrides", "words"), IN_PROCESS, ids=[c for c, _, _ in IN_PROCESS])
def test_bad_config_is_refused_before_training_naming_the_key(case, overrides, words, inputs, tmp_path, request):
    values = {**inputs, "ae_ckpt": request.getfixturevalue("ae_ckpt")} if "{ae_ckpt}" in " ".join(overrides) else inputs
    cfg = tiny_run([o.format(**values) for o in overrides], tmp_path / "run")
    with pytest.raises(USER_ERRORS) as err:
        train(cfg)
    message = str(err.value)
    for word in words:
        assert word in message, message
    # main() prints it as one "genlab: error: ..." line
    assert "\n" not in message and len(message) < 700, message
    assert not list(tmp_path.rglob("*.ckpt")), "it must fail before a checkpoint is written"


def test_a_misspelt_key_is_refused_by_hydra_naming_it_and_the_fix(tmp_path):
    # Hydra's error, reported like "unknown group option" above (exit 1, no traceback)
    with pytest.raises(ConfigCompositionException, match=r"model\.latnt_dim") as err:
        tiny_run(["model.latnt_dim=3"], tmp_path)
    assert "+model.latnt_dim=3" in str(err.value)
