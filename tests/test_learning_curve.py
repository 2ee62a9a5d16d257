"""The test-NLL learning curve: its points are the estimator's values on the fixed subset, and it leaves training alone."""

from __future__ import annotations

import csv
import functools
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from genlab.callbacks.learning_curve import CURVE_SEED, LearningCurve
from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP


def tiny_vae() -> VAE:
    torch.manual_seed(0)
    net = functools.partial(MLP, hidden=(16,), activation="tanh")
    return VAE(
        (1, 8, 8), encoder=net, decoder=net, optimizer=functools.partial(torch.optim.Adam, lr=3e-3), latent_dim=2
    )


def fit(tmp_path, callbacks: list, epochs: int = 3) -> tuple[VAE, DigitsDataModule]:
    L.seed_everything(0)
    dm, model = DigitsDataModule(batch_size=64), tiny_vae()
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=1,
        limit_test_batches=1,
        callbacks=callbacks,
        logger=CSVLogger(tmp_path, name="csv", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=dm)
    return model, dm


def test_curve_points_are_the_nll_on_the_subset_every_n_epochs_and_the_last(tmp_path) -> None:
    model, dm = fit(tmp_path, [LearningCurve(every_n_epochs=2, n_images=30, k=16, chunk=8, batch_size=12)], epochs=5)
    rows = [r for r in csv.DictReader(open(tmp_path / "csv" / "metrics.csv")) if r.get("curve/test_nll")]
    assert [int(r["epoch"]) for r in rows] == [1, 3, 4]  # after epochs 2 and 4, and the last (5th)
    values = [float(r["curve/test_nll"]) for r in rows]
    assert len(set(values)) == 3  # the model changed between points
    x = dm.split_tensors("test")[0][:30]
    with torch.random.fork_rng():
        torch.manual_seed(CURVE_SEED)
        expected = -torch.cat([model.log_marginal_likelihood(xb, 16, 8) for xb in x.split(12)]).double().mean()
    assert values[-1] == pytest.approx(float(expected), rel=1e-5)
    wrong_subset = -model.log_marginal_likelihood(dm.split_tensors("test")[0][30:60], 16, 8).mean()
    assert abs(float(wrong_subset) - values[-1]) > 1e-3


def test_the_curve_does_not_move_the_training_rng(tmp_path) -> None:
    with_curve, _ = fit(tmp_path / "a", [LearningCurve(every_n_epochs=1, n_images=10, k=4, chunk=4)])
    without, _ = fit(tmp_path / "b", [])
    for (name, a), b in zip(with_curve.state_dict().items(), without.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_curve_rejects_bad_settings_and_models_without_a_likelihood() -> None:
    with pytest.raises(ConfigError, match="learning_curve.every_n_epochs"):
        LearningCurve(every_n_epochs=0)
    trainer = SimpleNamespace(datamodule=DigitsDataModule())
    with pytest.raises(ConfigError, match="needs a VAE-family model"):
        LearningCurve().test_nll(trainer, torch.nn.Linear(2, 2))
