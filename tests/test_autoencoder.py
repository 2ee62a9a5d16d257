"""The chapter's claim (7.1.2): a linear autoencoder learns the PCA subspace, without an orthonormal basis."""

from __future__ import annotations

import functools

import pytest
import torch

from genlab.checks import ConfigError
from genlab.data.digits import DigitsDataModule
from genlab.models.autoencoder import Autoencoder
from genlab.models.pca import PCA
from genlab.nets.mlp import MLP

LINEAR = functools.partial(MLP, hidden=[], activation="linear")


def principal_angles_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles between the column spans of a (D, m) and b (D, m), in degrees."""
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    return torch.rad2deg(torch.arccos(torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)))


def test_linear_autoencoder_spans_the_pca_subspace():
    torch.manual_seed(0)
    dm = DigitsDataModule(seed=0)
    dm.setup("fit")
    x, _ = dm.train_tensors()
    m = 4  # the 4th and 5th eigenvalues of digits are well separated (0.40 vs 0.27)
    pca = PCA((1, 8, 8), latent_dim=m).fit(x)
    pca_error = (pca.reconstruct(x) - x).pow(2).flatten(1).sum(1).mean().item()

    ae = Autoencoder((1, 8, 8), LINEAR, LINEAR, functools.partial(torch.optim.Adam, lr=1e-2), latent_dim=m)
    optimizer = ae.configure_optimizers()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3000)
    for _ in range(3000):  # full-batch steps on the model's own loss
        loss = ae.reconstruction_error(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        ae_error = ae.reconstruction_error(x).mean().item()

    assert ae_error <= 1.02 * pca_error
    decoder_basis = ae.decoder.layers[0].weight.detach()  # (64, m): the columns span the decoded subspace
    assert principal_angles_deg(decoder_basis, pca.components.T).max() < 5.0
    # Nothing forces orthonormality: the learned basis is measurably not orthonormal.
    gram = decoder_basis.T @ decoder_basis
    assert (gram - torch.eye(m)).abs().max() > 0.05


def test_rejects_impossible_values():
    with pytest.raises(ConfigError, match=r"latent_dim=0 is not accepted"):
        Autoencoder((1, 8, 8), LINEAR, LINEAR, functools.partial(torch.optim.Adam, lr=1e-3), latent_dim=0)
    with pytest.raises(ConfigError, match=r"reconstruction='l1' .*\['mse', 'bce'\]"):
        Autoencoder((1, 8, 8), LINEAR, LINEAR, functools.partial(torch.optim.Adam, lr=1e-3), reconstruction="l1")
