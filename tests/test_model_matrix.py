"""Every model family end to end on every dataset, each family in one multirun process to share start-up."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, run_cli

IMAGES = ["digits", "mnist", "fashion_mnist"]
TOYS = ["ring8", "grid25", "moons", "swissroll"]
# Settings that keep each job to seconds: few importance samples, a short VaDE pretraining.
FAST = {
    "vae": ["model.eval_k=50"],
    "iwae": ["model.eval_k=50", "model.k=3"],
    "vade": ["model.eval_k=50", "model.pretrain_epochs=1", "trainer.max_epochs=2"],
    "gan": ["model.feature_classifier_steps=20", "model.eval_samples=200"],
}
# Batches of 16, so that the tiny MNIST files (54 training images) give the 3 steps of TINY too.
SMALL = ["data.batch_size=16"]
# (model, datasets, extra overrides): real-valued toys need a Gaussian decoder for the VAE family.
CASES = [
    ("vae", IMAGES, ["data.binarize=dynamic", *SMALL]),
    ("vae", TOYS, ["model.likelihood=gaussian"]),
    ("iwae", IMAGES, ["data.binarize=static", *SMALL]),
    ("iwae", TOYS, ["model.likelihood=gaussian"]),
    ("vade", IMAGES, SMALL),
    ("vade", TOYS, ["model.likelihood=gaussian", "model.n_clusters=4"]),
    ("gan", IMAGES + TOYS, SMALL),
]
# What each family minimises, logged at each of its 3 steps (trainer.log_every_n_steps=1). After 3 steps it must be
# below its first value: a model that does not learn (no gradient reaching the weights, a sign error in the loss,
# an optimizer that never steps) leaves it where it began or raises it. VaDE's first epoch is its autoencoder
# pretraining; the GAN's discriminator loss falls first, while the generator's rises.
FALLING = {"vae": "train/loss_step", "iwae": "train/loss_step", "vade": "train/pretrain_loss_step",
           "gan": "train/d_loss_step"}


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of ``key`` in ``csv/metrics.csv``, in logged order."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [float(row[key]) for row in csv.DictReader(file) if row.get(key)]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.parametrize(("model", "datasets", "extra"), CASES, ids=[f"{m}-{d[0]}" for m, d, _ in CASES])
def test_model_on_every_dataset(model, datasets, extra, tmp_path, data_root):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", f"model={model}", f"data={','.join(datasets)}", *TINY, "trainer.log_every_n_steps=1",
                   *FAST[model], *extra,
                   f"hydra.sweep.dir={sweep}", env={"GENLAB_DATA_DIR": str(data_root)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = job_dirs(sweep)
    assert len(dirs) == len(datasets)
    for run_dir, data in zip(dirs, datasets):
        assert (run_dir / ".hydra" / "config.yaml").is_file()
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        metrics = read_metrics(run_dir)
        assert (metrics["model"], metrics["data"]) == (model, data)
        assert any(k.startswith("val/") for k in metrics), metrics
        if model != "gan":
            assert metrics["test/nll"] == metrics["test/nll"]  # finite: NaN != NaN
        assert list((run_dir / "images").glob("*.png")), f"no pictures for {model} on {data}"
        losses = logged(run_dir, FALLING[model])
        assert len(losses) == 3 and losses[-1] < losses[0], (model, data, FALLING[model], losses)
