"""The VaDE LightningModule: reduces to the VAE with one standard component, pretrain -> GMM init -> VaDE, cluster metrics."""

from __future__ import annotations

import functools
import math

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from test_vae_model import quiet_trainer

from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.metrics.clustering import clustering_scores
from genlab.models.vade import VaDE
from genlab.models.vae import VAE
from genlab.nets.mlp import MLP
from genlab.train import CONF_DIR

SHAPE = (1, 8, 8)


def build(cls, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    net = functools.partial(MLP, hidden=(32,), activation="relu")
    optimizer = functools.partial(torch.optim.Adam, lr=3e-3)
    return cls(SHAPE, encoder=net, decoder=net, optimizer=optimizer, latent_dim=2, **kwargs)


def trainer(tmp_path, epochs: int) -> L.Trainer:
    return quiet_trainer(tmp_path, max_epochs=epochs, limit_train_batches=5, limit_val_batches=2, limit_test_batches=2)


def test_one_standard_component_gives_the_vae_objective_and_likelihood() -> None:
    vade = build(VaDE, n_clusters=1)
    with torch.no_grad():
        vade.cluster_means.zero_()
    vae = build(VAE)
    vae.load_state_dict({k: v for k, v in vade.state_dict().items() if k.startswith(("encoder", "decoder"))})
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1))
    for kl in ("analytic", "sampled"):
        vade.kl = vae.kl = kl
        torch.manual_seed(7)
        vade_terms = vade.objective_terms(x, 4)[0]
        torch.manual_seed(7)
        vae_terms = vae.objective_terms(x, 4)[0]
        for key in ("loss", "elbo", "recon", "kl"):
            assert torch.allclose(vade_terms[key], vae_terms[key], atol=1e-5), (kl, key)
    torch.manual_seed(8)
    vade_nll = vade.log_marginal_likelihood(x, 30, 7)
    torch.manual_seed(8)
    assert torch.allclose(vade_nll, vae.log_marginal_likelihood(x, 30, 7), atol=1e-5)


def test_pretrain_loss_is_the_bernoulli_reconstruction_of_the_clean_image_from_what_the_encoder_sees() -> None:
    model = build(VaDE, n_clusters=3)
    x = (torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    noisy = x * (torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) > 0.3)

    def bce(inputs: torch.Tensor) -> torch.Tensor:
        logits = model.decoder(model.posterior(inputs)[0]).reshape(6, -1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1).mean()

    with torch.no_grad():
        assert torch.allclose(model.pretrain_loss(x), bce(x), atol=1e-5)
        # denoising: the target stays the clean x while the encoder sees the corrupted one
        assert torch.allclose(model.pretrain_loss(x, noisy), bce(noisy), atol=1e-5)
        assert not torch.allclose(model.pretrain_loss(x, noisy), model.pretrain_loss(x), atol=1e-3)


def test_fit_prior_copies_the_sklearn_mixture() -> None:
    model = build(VaDE, n_clusters=3)
    rng = np.random.default_rng(0)
    means = torch.tensor(np.concatenate([rng.normal(c, 0.3, (50, 2)) for c in (-2, 0, 3)]), dtype=torch.float32)
    gmm = model.fit_prior(means, seed=0)
    log_pi, mu, log_var = model.prior_params()
    np.testing.assert_allclose(log_pi.exp().detach().numpy(), gmm.weights_, rtol=1e-5)
    np.testing.assert_allclose(mu.detach().numpy(), gmm.means_, rtol=1e-5)
    np.testing.assert_allclose(log_var.exp().detach().numpy(), gmm.covariances_, rtol=1e-4)
    reference = GaussianMixture(3, covariance_type="diag", random_state=0).fit(means.double().numpy())
    np.testing.assert_allclose(np.sort(gmm.means_[:, 0]), np.sort(reference.means_[:, 0]), rtol=1e-6)
    assert bool(model.prior_fitted)


def test_kmeans_start_is_the_share_mean_and_variance_of_each_sklearn_kmeans_cluster() -> None:
    model = build(VaDE, n_clusters=3, prior_init="kmeans", gmm_n_init=4)
    rng = np.random.default_rng(0)
    codes = torch.tensor(np.concatenate([rng.normal(c, s, (n, 2)) for c, s, n in ((-2, 0.3, 60), (0, 0.1, 30),
                                                                                   (3, 0.6, 90))]), dtype=torch.float32)
    assert model.fit_prior(codes, seed=0) is None  # no EM step
    x = codes.double().numpy()
    labels = KMeans(3, n_init=4, random_state=0).fit_predict(x)
    log_pi, mu, log_var = (p.detach().numpy() for p in model.prior_params())
    for c in range(3):
        np.testing.assert_allclose(np.exp(log_pi[c]), np.mean(labels == c), rtol=1e-6)
        np.testing.assert_allclose(mu[c], x[labels == c].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.exp(log_var[c]), x[labels == c].var(0) + 1e-6, rtol=1e-4)
    # per cluster, not pooled: the three spreads 0.3, 0.1 and 0.6 come back (shares 1/3, 1/6, 1/2)
    order = np.argsort(mu[:, 0])
    np.testing.assert_allclose(np.exp(log_pi[order]), [1 / 3, 1 / 6, 1 / 2], atol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.exp(log_var[order]).mean(1)), [0.3, 0.1, 0.6], rtol=0.25)
    with pytest.raises(ConfigError, match="prior_init"):
        build(VaDE, prior_init="em")


def test_pretraining_leaves_the_prior_alone_then_the_mixture_is_fitted_and_clusters_are_scored(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=64)
    model = build(VaDE, n_clusters=4, pretrain_epochs=1, eval_k=20, eval_chunk=8)
    prior_before = [p.detach().clone() for p in model.prior_params()]
    trainer(tmp_path, 1).fit(model, datamodule=dm)
    assert not bool(model.prior_fitted)
    for before, after in zip(prior_before, model.prior_params(), strict=True):
        assert torch.equal(before, after)
    assert "train/pretrain_loss" in trainer_metrics(model)

    fit = trainer(tmp_path, 2)
    fit.fit(model, datamodule=dm)
    assert bool(model.prior_fitted)
    assert {"val/acc", "val/nmi", "val/ari", "val/elbo", "val/active_units"} <= set(fit.callback_metrics)
    (test,) = fit.test(model, datamodule=dm, verbose=False)
    for key in ("test/acc", "test/nmi", "test/ari", "test/nll", "test/elbo", "test/kl", "test/recon"):
        assert math.isfinite(test[key]), key
    # the logged scores are those of model.cluster on the test batches seen (2 batches of 64)
    x, y = (t[:128] for t in dm.split_tensors("test"))
    with torch.no_grad():
        expected = clustering_scores(model.cluster(x).numpy(), y.numpy())
    for key in ("acc", "nmi", "ari"):
        assert test[f"test/{key}"] == pytest.approx(expected[key], abs=1e-6), key
    assert model.cluster(torch.rand(3, *SHAPE)).shape == (3,)
    assert model.sample_cluster(2, 5).shape == (5, *SHAPE) and model.sample(6).shape == (6, *SHAPE)


def trainer_metrics(model: VaDE) -> set[str]:
    return set(model.trainer.callback_metrics)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"pretrain_epochs": -1}, "pretrain_epochs"),
        ({"posterior_var_init": 0.0}, "posterior_var_init"),
        ({"finetune_lr_factor": 1.5}, "finetune_lr_factor"),
    ],
)
def test_bad_settings_fail_in_the_constructor(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build(VaDE, **kwargs)


def test_more_gmm_restarts_never_give_a_worse_log_likelihood() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 2, (6, 2))
    means = torch.tensor(np.concatenate([rng.normal(c, 0.6, (40, 2)) for c in centres]), dtype=torch.float32)
    bounds = []
    for n_init in (1, 2, 5, 10):
        model = build(VaDE, n_clusters=6, gmm_n_init=n_init)
        bounds.append(model.fit_prior(means, seed=11).lower_bound_)
    assert all(later >= earlier - 1e-9 for earlier, later in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] > bounds[0] + 1e-3, bounds  # on this seed one EM start is a worse local optimum


def test_vade_phase_learning_rate_starts_after_pretraining_with_the_factor_and_the_schedule_restarts() -> None:
    model = build(VaDE, pretrain_epochs=3, finetune_lr_factor=0.5, lr_schedule="step", lr_decay=0.9, lr_decay_every=2)
    factor = model.epoch_lr_factor()
    assert [factor(e) for e in range(8)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.45, 0.45, 0.405])
    assert build(VaDE).epoch_lr_factor() is None  # the class default keeps the optimizer's rate: no scheduler


def test_eval_on_all_scores_every_image_of_the_three_splits(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=64)
    model = build(VaDE, n_clusters=4, pretrain_epochs=0, eval_k=2, eval_chunk=2, eval_on="all")
    fit = trainer(tmp_path, 1)
    fit.fit(model, datamodule=dm)
    (test,) = fit.test(model, datamodule=dm, verbose=False)
    x = torch.cat([dm.split_tensors(s)[0] for s in ("train", "val", "test")])
    y = torch.cat([dm.split_tensors(s)[1] for s in ("train", "val", "test")])
    assert len(y) == 1797
    with torch.no_grad():
        expected = clustering_scores(model.cluster(x).numpy(), y.numpy())
    for key in ("acc", "nmi", "ari"):
        assert test[f"test/all_{key}"] == pytest.approx(expected[key], abs=1e-6), key
    with pytest.raises(ConfigError, match="eval_on"):
        build(VaDE, eval_on="train")


def test_the_digits_preset_pretrains_longer_for_vade_only() -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        tuned = compose(config_name="config", overrides=["model=vade", "data=digits"])
        mnist = compose(config_name="config", overrides=["model=vade", "data=mnist"])
        vae = compose(config_name="config", overrides=["model=vae", "data=digits"])
    # 600 autoencoder steps at batch 128 (15 epochs, 150 steps: GMM-init accuracy 0.62-0.63, test acc < 0.70)
    assert (tuned.model.pretrain_epochs, tuned.trainer.max_epochs, tuned.data.batch_size) == (60, 70, 128)
    assert mnist.model.pretrain_epochs == 15 < mnist.trainer.max_epochs == 20  # the preset stays with digits
    assert vae.trainer.max_epochs == 20 and "pretrain_epochs" not in vae.model
