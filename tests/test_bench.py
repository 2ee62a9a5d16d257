"""The speed benchmark's baselines compute genlab's maths, and the base's deferred training logs keep every value."""

from __future__ import annotations

import csv
import functools
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from genlab.losses.gan_losses import NonSaturating
from genlab.models.base import GenerativeModule
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP

sys.path.insert(0, str(REPO / "experiments"))
import bench_loops  # noqa: E402


def test_vae_baseline_loss_is_genlab_vae_loss() -> None:
    shape = (1, 8, 8)
    parts = bench_loops.make_vae(shape, latent_dim=3, hidden=16)
    model = VAE(shape, functools.partial(MLP, hidden=[16]), functools.partial(MLP, hidden=[16]), latent_dim=3)
    model.encoder.load_state_dict(parts.encoder.state_dict())
    model.decoder.load_state_dict(parts.decoder.state_dict())
    x = torch.bernoulli(torch.full((5, *shape), 0.3), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    ours = parts.loss(x)
    torch.manual_seed(1)
    theirs = model.objective_terms(x, k=1)[0]["loss"]
    torch.testing.assert_close(ours, theirs)


def test_gan_baseline_losses_are_genlab_gan_losses() -> None:
    shape = (2,)
    parts = bench_loops.make_gan(shape, latent_dim=2, hidden=[8, 8], sigmoid_output=False)
    mlp = functools.partial(MLP, hidden=[8, 8])
    model = GAN(shape, mlp, functools.partial(MLP, hidden=[8, 8], activation="leaky_relu"), NonSaturating(),
                functools.partial(torch.optim.Adam), functools.partial(torch.optim.Adam), latent_dim=2)
    model.generator.load_state_dict(parts.generator.state_dict())
    model.discriminator.load_state_dict(parts.discriminator.state_dict())
    x = torch.randn(6, 2)
    torch.manual_seed(2)
    fake = parts.generate(6)
    ours = parts.loss.discriminator_loss(parts.discriminator(x), parts.discriminator(fake))
    torch.manual_seed(2)
    theirs = model.discriminator_objective(x, model.generate(model.noise(6)))["d_loss"]
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("loop", bench_loops.LOOPS)
def test_baseline_loops_step_through_every_batch(loop: str) -> None:
    x, y = torch.randn(10, 2), torch.zeros(10, dtype=torch.long)
    seen: list[Tensor] = []
    rate = bench_loops.run_loop(loop, seen.append, x, y, batch_size=4, steps=3, warmup=2)
    assert rate > 0 and [len(b) for b in seen] == [4, 4, 2, 4, 4]
    assert torch.equal(torch.cat(seen[:3]).sort(0).values, x.sort(0).values)  # one epoch: each row once


class _Logs(GenerativeModule):
    """Logs the batch's mean value per step and per epoch, like the models' training steps."""

    def __init__(self) -> None:
        super().__init__((1,), optimizer=functools.partial(torch.optim.SGD, lr=0.0))
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        self.optimize(self.optimizers(), (self.w * x).sum())
        self.log_stage("train", {"v": x.mean(), "n": torch.tensor(float(len(x)))}, batch_size=len(x),
                       on_step=True, on_epoch=True)

    def evaluate(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        return {"loss": x.mean()}


def test_deferred_training_logs_keep_exact_epoch_means_and_step_values(tmp_path: Path) -> None:
    x = torch.arange(23, dtype=torch.float32).reshape(-1, 1)  # batches of 4: six batches, the last of 3
    loader = DataLoader(TensorDataset(x, torch.zeros(23)), batch_size=4)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=4, logger=logger, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(_Logs(), train_dataloaders=loader)
    metrics = trainer.callback_metrics
    torch.testing.assert_close(metrics["train/v_epoch"], x.mean())  # every batch, weighted by its size
    torch.testing.assert_close(metrics["train/n_epoch"], torch.tensor((5 * 4 * 4 + 3 * 3) / 23))
    rows = [r for r in csv.DictReader((tmp_path / "metrics.csv").open()) if r.get("train/v_step")]
    batch_means = [b.mean().item() for b in x.split(4)]
    # the loggers write every 4th batch (0-based 3 and 7) and the last one: each with its own batch's value
    assert [(int(r["step"]), float(r["train/v_step"])) for r in rows] == [
        (3, batch_means[3]), (7, batch_means[1]), (11, batch_means[5]),
    ]


class _BatchEndCounter(L.Callback):
    def __init__(self) -> None:
        self.ends = 0

    def on_train_batch_end(self, *args: object) -> None:
        self.ends += 1


def test_inherited_batch_hooks_are_skipped_and_implemented_ones_still_run() -> None:
    from genlab.callbacks.batch_hooks import skip_inherited_batch_hooks

    counter = _BatchEndCounter()
    skip_inherited_batch_hooks([counter])
    assert counter.on_before_backward is None and counter.on_train_batch_start is None
    assert callable(counter.on_train_batch_end) and callable(counter.on_train_epoch_end)  # implemented; not per batch
    loader = DataLoader(TensorDataset(torch.ones(12, 1), torch.zeros(12)), batch_size=4)
    trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[counter], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(_Logs(), train_dataloaders=loader)
    assert counter.ends == 3


@pytest.mark.parametrize("n", [12, 300])  # fewer rows than dims (thin SVD), more (covariance eigh)
def test_both_pca_routes_match_sklearn(n: int) -> None:
    from sklearn.decomposition import PCA as SkPCA

    from genlab.models.pca import fit_pca

    x = torch.randn(n, 40, generator=torch.Generator().manual_seed(n)) * torch.linspace(0.1, 3.0, 40)
    mean, components, explained = fit_pca(x, 5)
    ref = SkPCA(5, svd_solver="full").fit(x.double().numpy())
    torch.testing.assert_close(explained, torch.from_numpy(ref.explained_variance_), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mean, torch.from_numpy(ref.mean_))
    cos = (components * torch.from_numpy(ref.components_)).sum(1).abs()
    torch.testing.assert_close(cos, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-8)
