"""The speed benchmark's baselines compute genlab's maths (training logs: tests/test_fast_path.py)."""

from __future__ import annotations

import functools
import sys

import pytest
import torch
from conftest import REPO
from torch import Tensor

from genlab.losses.gan_losses import NonSaturating
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
