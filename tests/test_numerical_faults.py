"""Numerical faults: a NaN/Inf loss or gradient stops the run naming the step, keeps the last good checkpoint and
the logs; no checkpoint of non-finite weights is written; a GAN whose discriminator wins is reported."""

from __future__ import annotations

import csv
import functools
import io
import math
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import read_metrics, run_cli
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.finite_checkpoints import FiniteCheckpoints, non_finite_entries
from genlab.callbacks.gan_divergence import DivergenceDetector
from genlab.checkpoints import LastCheckpoint, load_genlab_checkpoint
from genlab.checks import ConfigError
from genlab.models.base import GenerativeModule, NonFiniteError

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}

# SGD at lr 0.12 on the default AE and digits is unstable: the loss grows slowly for a few steps, then overflows
# in the third epoch (global step 6), after the epoch-end checkpoints of the first two.
EXPLODING = [
    "model=ae", "model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.12", "trainer.max_epochs=6",
    "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
    "logger=csv",
]
# A discriminator 10^4 times faster than its generator wins within a few dozen steps on ring8.
D_WINS = [
    "model=gan", "data=ring8", "model.optimizer_g.lr=1e-6", "model.optimizer_d.lr=1e-2", "model.sample_metrics=false",
    "callbacks.gan_divergence.patience=10", "trainer.log_every_n_steps=1", "trainer.max_epochs=1", "trainer.limit_train_batches=25",
    "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "logger=csv", "test=false",
]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The exploding AE run and the diverging GAN run, side by side."""
    tmp = tmp_path_factory.mktemp("faults")
    runs = {"exploding": (EXPLODING, tmp / "exploding"), "d_wins": (D_WINS, tmp / "d_wins")}
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(run_cli, *args, f"hydra.run.dir={run_dir}", env={"OMP_NUM_THREADS": "1"})
            for name, (args, run_dir) in runs.items()
        }
        return {name: (future.result(), runs[name][1]) for name, future in futures.items()}


def test_exploding_loss_stops_naming_the_step_and_keeps_checkpoint_and_logs(cli_runs):
    proc, run_dir = cli_runs["exploding"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("genlab: error:"))
    assert "is not finite" in line and "model.grad_clip_norm" in line
    fault_step = int(line.split("at global step ")[1].split(",")[0])

    state = load_genlab_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert 0 < state["global_step"] <= fault_step, "a checkpoint from before the fault"
    assert state["epoch"] < int(line.split(", epoch ")[1].split(".")[0])
    assert not non_finite_entries(state["state_dict"])
    best = load_genlab_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert not non_finite_entries(best["state_dict"])

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val and math.isfinite(val[0]), "the epochs before the fault are logged"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert not (run_dir / "metrics.json").exists()


def test_a_gan_whose_discriminator_wins_is_reported_as_warning_and_metric(cli_runs):
    proc, run_dir = cli_runs["d_wins"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "GAN divergence at global step" in line]
    assert len(warned) == 1, proc.stderr[-3000:]
    assert "model.optimizer_d.lr" in warned[0]
    assert read_metrics(run_dir)["train/diverged"] == 1.0


# -- the detector on synthetic loss sequences ------------------------------------------------------------
def feed(detector: DivergenceDetector, pairs: list[tuple[float, float]], every: int = 1) -> list[int]:
    """The indices of the observations (one per ``every`` batches) on which ``detector`` reports divergence."""
    return [i for i, (d, g) in enumerate(pairs) if detector.update((i + 1) * every, d, g)]


def test_detector_fires_once_after_patience_steps_of_d_near_zero_and_g_growing():
    healthy = [(0.69 + 0.01 * (i % 3), 0.7 - 0.01 * (i % 2)) for i in range(30)]
    collapse = [(0.01, 2.0 + 0.1 * i) for i in range(30)]
    detector = DivergenceDetector(patience=10, d_loss_max=0.05)
    assert feed(detector, healthy + collapse) == [30 + 9]
    assert detector.diverged and detector.growth[1] > detector.growth[0]


@pytest.mark.parametrize(
    "pairs",
    [
        [(0.5, 2.0 + 0.1 * i) for i in range(40)],  # G loss grows but D is not winning
        [(0.01, 5.0 - 0.1 * i) for i in range(40)],  # D near 0 but G recovers
        [(0.01, 3.0) for _ in range(40)],  # D near 0, G flat
        [(0.01 if i % 7 else 0.3, 2.0 + 0.1 * i) for i in range(40)],  # the streak keeps being broken
    ],
    ids=["d_not_near_zero", "g_falling", "g_flat", "interrupted_streak"],
)
def test_detector_stays_quiet_without_a_sustained_divergence(pairs):
    assert feed(DivergenceDetector(patience=10, d_loss_max=0.05), pairs) == []


def test_detector_counts_batches_whatever_the_logging_cadence():
    # Losses observed every 5th batch (the loggers' cadence): the streak starts at batch 55, so 20 batches of
    # it have passed at batch 74, and the first observation after that, batch 75, reports it.
    pairs = [(0.7, 0.7)] * 10 + [(0.01, 2.0 + 0.1 * i) for i in range(10)]
    assert [(i + 1) * 5 for i in feed(DivergenceDetector(patience=20), pairs, every=5)] == [75]


def test_detector_state_survives_a_checkpoint():
    first, resumed = DivergenceDetector(patience=10), DivergenceDetector(patience=10)
    pairs = [(0.01, 2.0 + 0.1 * i) for i in range(20)]
    for i, (d, g) in enumerate(pairs[:6]):
        first.update(i + 1, d, g)
    resumed.load_state_dict(torch.load(io.BytesIO(save(first.state_dict())), weights_only=True))
    assert [i for i, (d, g) in enumerate(pairs) if i >= 6 and resumed.update(i + 1, d, g)] == [9]


def save(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_detector_growth_threshold_and_bad_settings():
    slow = [(0.01, 2.0 + 0.001 * i) for i in range(20)]
    assert feed(DivergenceDetector(patience=10, min_g_growth=0.0), slow) == [9]
    assert feed(DivergenceDetector(patience=10, min_g_growth=0.5), slow) == []
    for kwargs, key in (({"patience": 1}, "patience=1"), ({"d_loss_max": 0}, "d_loss_max=0"),
                        ({"min_g_growth": -1.0}, "min_g_growth=-1.0")):
        with pytest.raises(ConfigError, match=key):
            DivergenceDetector(**kwargs)


# -- in-process faults: a finite loss with an infinite gradient, an overflowing update -------------------------
class Scripted(GenerativeModule):
    """One weight vector; ``fault`` picks what goes wrong on training step ``fault_step``."""

    def __init__(self, fault: str, fault_step: int) -> None:
        super().__init__((2,), functools.partial(torch.optim.SGD, lr=0.1))
        self.w = torch.nn.Parameter(torch.ones(2))
        self.fault, self.fault_step = fault, fault_step
        self.run_config = {}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        loss = ((x * self.w).sum(dim=1) ** 2).mean()
        if self.fault == "sqrt_at_zero" and self.global_step == self.fault_step:
            # sqrt is finite at 0 but its derivative is not: a finite loss with an infinite gradient.
            loss = loss + (self.w[0] - self.w[0].detach()).abs().sqrt()
        self.optimize(self.optimizers(), loss)
        if self.fault == "overflow" and self.global_step == self.fault_step + 1:
            with torch.no_grad():  # what a finite gradient times a huge learning rate does to a weight
                self.w.mul_(float("inf"))

    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"loss": ((x * self.w).sum(dim=1) ** 2).mean()}


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(32, 2), torch.zeros(32, dtype=torch.long)), batch_size=4)


def test_infinite_gradient_with_finite_loss_names_the_gradient_and_step():
    trainer = L.Trainer(max_steps=10, enable_checkpointing=False, **QUIET)
    with pytest.raises(NonFiniteError, match=r"gradient norm of train/loss is not finite .* at global step 3"):
        trainer.fit(Scripted("sqrt_at_zero", fault_step=3), train_dataloaders=loader())


def test_checkpoint_of_non_finite_weights_is_refused_and_the_last_good_one_kept(tmp_path):
    last = LastCheckpoint(tmp_path, every_n_train_steps=1)
    trainer = L.Trainer(max_steps=10, callbacks=[last, FiniteCheckpoints()], **QUIET)
    with pytest.raises(NonFiniteError, match=r"weights are not finite at global step 3, epoch 0 \(w\)"):
        trainer.fit(Scripted("overflow", fault_step=2), train_dataloaders=loader())
    state = load_genlab_checkpoint(tmp_path / "last.ckpt")
    assert state["global_step"] == 2 and torch.isfinite(state["state_dict"]["w"]).all()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no half-written temporary file is left"
