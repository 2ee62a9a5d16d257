"""VaDE on 8x8 digits must not put every point into one cluster (the default run did: acc 0.13, NMI 0).

The cause was the start of the VaDE phase: pretraining trains only the encoder mean, so the log-variance head
still gave q variance ~1 while the fitted components had variances ~0.1; the first VaDE steps sampled z across
all components and dragged every mean to one point. The negative control keeps that start
(``posterior_var_init=None`` at the pretraining learning rate) from the same pretrained weights and collapses.
Where a collapse stops is chaotic, so each start runs from 3 seeds and the majority decides.
"""

from __future__ import annotations

import copy
import functools

import lightning as L
import numpy as np
import pytest
import torch
from test_vae_model import quiet_trainer

from genlab.data.digits import DigitsDataModule
from genlab.metrics.clustering import clustering_scores
from genlab.models.vade import VaDE
from genlab.nets.mlp import MLP


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[VaDE, DigitsDataModule]:
    """The default VaDE network (500-500-2000, J=10) after 3 autoencoder epochs on digits, prior not yet fitted."""
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=64, seed=0)
    enc = functools.partial(MLP, hidden=(500, 500, 2000), activation="relu")
    dec = functools.partial(MLP, hidden=(2000, 500, 500), activation="relu")
    model = VaDE(
        (1, 8, 8),
        encoder=enc,
        decoder=dec,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        latent_dim=10,
        n_clusters=10,
        pretrain_epochs=3,
        gmm_n_init=3,
        eval_k=4,
        eval_chunk=4,
    )
    quiet_trainer(tmp_path_factory.mktemp("pre"), max_epochs=3, limit_val_batches=0).fit(model, datamodule=dm)
    assert not bool(model.prior_fitted)
    return model, dm


def vade_phase(pretrained, tmp_path, posterior_var_init: float | None, lr_factor: float, seed: int) -> dict[str, float]:
    """One VaDE epoch from the pretrained weights; the test split's scores and the number of clusters used."""
    model, dm = copy.deepcopy(pretrained[0]), pretrained[1]
    model.pretrain_epochs, model.posterior_var_init, model.finetune_lr_factor = 0, posterior_var_init, lr_factor
    L.seed_everything(seed)
    quiet_trainer(tmp_path / str(seed), max_epochs=1, limit_val_batches=0).fit(model, datamodule=dm)
    assert bool(model.prior_fitted)
    x, y = dm.split_tensors("test")
    model.eval()
    with torch.no_grad():
        pred = model.cluster(x).numpy()
    return clustering_scores(pred, y.numpy()) | {"clusters": len(np.unique(pred))}


def keeps_clusters(scores: dict[str, float]) -> bool:
    """At least 8 of the 10 clusters used and NMI >= 0.25 (a one-cluster collapse has NMI 0)."""
    return scores["clusters"] >= 8 and scores["nmi"] >= 0.25


def test_the_vade_start_keeps_the_clusters_and_the_old_start_collapses(pretrained, tmp_path) -> None:
    seeds = (1, 2, 3)
    fixed = [vade_phase(pretrained, tmp_path / "fixed", posterior_var_init=0.1, lr_factor=0.2, seed=s) for s in seeds]
    old = [vade_phase(pretrained, tmp_path / "old", posterior_var_init=None, lr_factor=1.0, seed=s) for s in seeds]
    # measured on an AMD EPYC, seeds 1-5: the fixed start keeps 9-10 clusters at NMI 0.36-0.42; the old one merges
    # them to 1-4 at NMI 0-0.14 within the epoch
    assert sum(map(keeps_clusters, fixed)) >= 2, fixed
    assert sum(map(keeps_clusters, old)) <= 1, old
    median = {name: sorted(r["nmi"] for r in runs)[1] for name, runs in (("fixed", fixed), ("old", old))}
    assert median["old"] < median["fixed"] - 0.1, (old, fixed)


def test_the_shift_sets_the_mean_q_variance_to_a_fraction_of_the_smallest_component_variance(pretrained) -> None:
    model, dm = copy.deepcopy(pretrained[0]), pretrained[1]
    model.posterior_var_init = 0.05
    # the soft floor of q's log-variance (-12) far away: after 3 pretraining epochs some targets are near -11, where
    # the floor would lift them by 0.4; the shift alone is what is measured here
    model.encoder_min_log_var = -40.0
    x = dm.train_tensors()[0]
    with torch.no_grad():
        means, raw = model.encoder(x).chunk(2, dim=-1)
    model.fit_prior(means, seed=0, raw_log_vars=raw)
    with torch.no_grad():
        log_var = model.posterior(x)[1]
    target = np.log(0.05) + model.cluster_log_vars.detach().min(0).values.numpy()
    np.testing.assert_allclose(log_var.mean(0).numpy(), target, atol=0.05)
