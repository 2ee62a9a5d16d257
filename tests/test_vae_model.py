"""The VAE/IWAE LightningModule: IWAE at k=1 is the VAE, shapes per likelihood, config errors, a tiny fit and test."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch

from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.models.lr_schedules import iwae_passes, step_decay
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP

SHAPE = (1, 8, 8)


def tiny_vae(seed: int = 0, **kwargs) -> VAE:
    torch.manual_seed(seed)
    net = functools.partial(MLP, hidden=(16,), activation="tanh")
    kwargs.setdefault("optimizer", functools.partial(torch.optim.Adam, lr=3e-3))
    return VAE(SHAPE, encoder=net, decoder=net, latent_dim=3, **kwargs)


def quiet_trainer(tmp_path, **options) -> L.Trainer:
    """A CPU Trainer that writes nothing; ``options`` (epochs, batch limits) go to lightning.Trainer."""
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**quiet, enable_model_summary=False, default_root_dir=tmp_path, **options)


def batch(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def loss_and_grads(model: VAE, x: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(42)  # the same eps for both objectives
    loss = model.objective_terms(x, k)[0]["loss"]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_iwae_with_one_sample_has_the_vae_loss_and_gradients() -> None:
    x = batch()
    vae_loss, vae_grads = loss_and_grads(tiny_vae(kl="sampled"), x)
    iwae_loss, iwae_grads = loss_and_grads(tiny_vae(objective="iwae", k=1), x)
    assert torch.allclose(vae_loss, iwae_loss, rtol=1e-6)
    for g_vae, g_iwae in zip(vae_grads, iwae_grads, strict=True):
        assert torch.allclose(g_vae, g_iwae, rtol=1e-5, atol=1e-7)


def test_analytic_and_sampled_kl_give_the_same_elbo_in_expectation() -> None:
    x = batch(2)
    torch.manual_seed(0)
    analytic = tiny_vae(kl="analytic").objective_terms(x, 20_000)[0]
    sampled = tiny_vae(kl="sampled").objective_terms(x, 20_000)[0]
    assert sampled["kl"].item() == pytest.approx(analytic["kl"].item(), abs=0.03)
    assert sampled["elbo"].item() == pytest.approx(analytic["elbo"].item(), abs=0.3)


def test_log_marginal_likelihood_lies_above_the_elbo_and_grows_with_k() -> None:
    model, x = tiny_vae(), batch(32)
    torch.manual_seed(0)
    elbo = model.objective_terms(x, 2000)[0]["elbo"]
    l_5, l_500 = (model.log_marginal_likelihood(x, k, chunk=64).mean() for k in (5, 500))
    assert elbo < l_5 < l_500


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian_fixed"])
def test_every_likelihood_trains_one_step_and_produces_data_shaped_outputs(likelihood: str) -> None:
    model, x = tiny_vae(likelihood=likelihood, min_log_var=-4.0, fixed_variance=0.1), batch()
    terms, mean, log_var = model.objective_terms(x, 3)
    assert set(terms) == {"loss", "elbo", "recon", "kl"} and mean.shape == log_var.shape == (6, 3)
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.reconstruct(x).shape == x.shape and model.sample(5).shape == (5, *SHAPE)
    assert model.log_marginal_likelihood(x, 10, 4).shape == (6,)


def test_warmup_scales_the_kl_in_the_training_loss_only() -> None:
    model, x = tiny_vae(beta=0.5), batch()
    torch.manual_seed(3)
    terms = model.objective_terms(x, 1, beta=0.5)[0]
    assert terms["loss"].item() == pytest.approx(-(terms["recon"] - 0.5 * terms["kl"]).item(), rel=1e-6)
    assert terms["elbo"].item() == pytest.approx((terms["recon"] - terms["kl"]).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"objective": "iwae", "k": 5, "beta": 0.5}, "beta"),
        ({"objective": "mcmc"}, "objective"),
        ({"kl": "exact"}, "kl"),
        ({"k": 0}, "k"),
        ({"eval_k": -1}, "eval_k"),
        ({"likelihood": "laplace"}, "likelihood"),
        ({"lr_schedule": "cosine"}, "lr_schedule"),
        ({"lr_decay": 1.5}, "lr_decay"),
    ],
)
def test_bad_settings_fail_in_the_constructor_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        tiny_vae(**kwargs)


def test_fit_and_test_log_the_vae_metrics(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=64, binarize="dynamic")
    model = tiny_vae(objective="iwae", k=3, eval_k=40, eval_chunk=16)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=6, limit_val_batches=2, limit_test_batches=2)
    trainer.fit(model, datamodule=dm)
    val = trainer.callback_metrics
    assert {"val/elbo", "val/loss", "val/recon", "val/kl", "val/bound", "val/active_units"} <= set(val)
    (test,) = trainer.test(model, datamodule=dm, verbose=False)
    for key in ("test/nll", "test/elbo", "test/kl", "test/recon", "test/active_units"):
        assert math.isfinite(test[key]), key
    # the k=40 importance-weighted estimate bounds log p(x) more tightly than the ELBO
    assert test["test/nll"] < -test["test/elbo"]
    assert 0 <= test["test/active_units"] <= 3


def test_lr_schedules_follow_the_papers() -> None:
    # IWAE: pass i has 3^i epochs: epoch 0 | 1-3 | 4-12 | 13-39 ...
    factors = [iwae_passes(e) for e in (0, 1, 3, 4, 12, 13, 39, 40)]
    expected = [10 ** (-i / 7) for i in (0, 1, 1, 2, 2, 3, 3, 4)]
    assert factors == pytest.approx(expected)
    assert [step_decay(e, 0.9, 10) for e in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.9, 0.81])


def test_step_schedule_is_stepped_once_per_epoch_under_manual_optimization(tmp_path) -> None:
    model = tiny_vae(lr_schedule="step", lr_decay=0.5, lr_decay_every=1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(3e-3 * 0.25)
