"""End to end through `python -m genlab`: the run-folder contract, every model x dataset, and bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TINY, read_metrics, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

DATASETS = ["digits", "mnist", "fashion_mnist", "ring8", "grid25", "moons", "swissroll"]


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def scored_batches(data: str, data_root: Path | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The first val and test batches, flattened (what a run with ``limit_{val,test}_batches=1`` scores), by split,
    and the training split's mean."""
    overrides = [f"data={data}"] + ([f"paths.data_dir={data_root}"] if data_root else [])
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    datamodule = instantiate(cfg.data)
    batches = {s: datamodule.split_tensors(s)[0][: cfg.data.batch_size].flatten(1) for s in ("val", "test")}
    return batches, datamodule.split_tensors("train")[0].flatten(1).mean(0)


def squared_error(x: torch.Tensor, reconstruction: torch.Tensor | float) -> float:
    """E ||x - reconstruction||^2 over the batch: what genlab's summed squared error averages."""
    return (x - reconstruction).pow(2).sum(1).mean().item()


def assert_run_folder(run_dir: Path, model: str, data: str) -> dict:
    """The contract later tools rely on: .hydra/, checkpoints (last + best), metrics.json."""
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    metrics = read_metrics(run_dir)
    assert metrics["model"] == model and metrics["data"] == data and metrics["seed"] == 0
    assert all(isinstance(v, float) for k, v in metrics.items() if "/" in k)
    return metrics


@pytest.mark.parametrize("model", ["pca", "ae"])
def test_every_dataset_in_one_multirun(model, tmp_path, data_root):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", f"model={model}", f"data={','.join(DATASETS)}", *TINY, f"hydra.sweep.dir={sweep}",
                   env={"GENLAB_DATA_DIR": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(sweep)
    assert len(dirs) == len(DATASETS)
    for run_dir, data in zip(dirs, DATASETS):
        metrics = assert_run_folder(run_dir, model, data)
        # Summed squared errors per example, bounded by simpler reconstructions of the same batch. PCA projects
        # x - mean_train onto 2 components, so its error is at most that of the training mean itself. 3 Adam steps
        # move the AE's output from ~0 towards the data: below the error of zeros, but nowhere near 1 % of it
        # (measured on an AMD EPYC; the tightest, tiny MNIST: 60.8 against 63.9). A sum over the batch, or an
        # image's mean over pixels (64 or 784 times smaller), lands outside; NaN and inf fail every comparison.
        batches, train_mean = scored_batches(data, data_root)
        for split, key in (("val", "val/loss"), ("test", "test/recon")):
            x = batches[split]
            if model == "pca":
                low, high = 0.0, squared_error(x, train_mean)
            else:
                high = squared_error(x, 0.0)
                low = 0.01 * high
            assert math.isfinite(metrics[key]) and low <= metrics[key] < high, (data, key, metrics[key], low, high)


def test_default_run_writes_images_and_prints_its_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={run_dir}", wandb_env=False)  # the default logger with no W&B settings at all
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"genlab: run folder {run_dir}" in proc.stdout
    assert_run_folder(run_dir, "ae", "digits")
    pngs = {p.name for p in (run_dir / "images").glob("*.png")}
    assert {"reconstructions_epoch000.png", "latent_epoch000.png"} <= pngs
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B must run offline without an account"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["model"]["_target_"] == "genlab.models.autoencoder.Autoencoder"


# Same seed, same numbers (AE, VAE, IWAE, GAN): tests/test_determinism.py.
# Bad input through the CLI: tests/test_bad_input.py (BAD_INPUTS moved there and extended).


def test_the_readme_lists_every_option_of_each_config_group() -> None:
    # A preset without its line in the README's table of config groups is one that no reader finds.
    table = (REPO / "README.md").read_text().split("## Config groups (`conf/`)\n\n", 1)[1].split("\n\n", 1)[0]
    listed = {}
    for line in table.splitlines()[2:]:
        group, options = line.split("|")[1:3]
        listed[group.strip(" `")] = set(re.findall(r"`([^`]+)`", options))
    groups = {p.name for p in (REPO / "conf").iterdir() if p.is_dir()} - {"table", "hydra"}  # table: its own section
    assert groups <= set(listed), f"config groups missing from the README: {sorted(groups - set(listed))}"
    for group in groups:
        shipped = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
        assert shipped <= listed[group], f"README, config group {group}: missing {sorted(shipped - listed[group])}"
