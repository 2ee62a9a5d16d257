"""Mixed precision where 16 bits are not enough, under CPU autocast (the same autocast rules as on a GPU):

- log p(x|z) summed over 784 MNIST pixels, and IWAE's log-weights, stay float32 under bfloat16 autocast;
- WGAN-GP's gradient penalty under float16 autocast (16-mixed) trains the critic as in float32.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from genlab.losses.distributions import log_normal
from genlab.losses.gan_losses import gradient_penalty
from genlab.losses.iwae import iwae_bound, log_importance_weights
from genlab.losses.likelihoods import DecoderLikelihood
from genlab.models.vae import VAE, final_linear
from genlab.nets.mlp import MLP

BF16 = functools.partial(torch.autocast, "cpu", torch.bfloat16)


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 784, generator=gen) < 0.3).float()


def test_bernoulli_log_likelihood_of_784_pixels_is_summed_in_float32_under_bf16_autocast():
    x = binary_images(64)
    gen = torch.Generator().manual_seed(1)
    # logits of magnitude ~10, as a trained decoder's on MNIST, already in bfloat16 as a decoder's Linear gives them
    # under autocast; the reference sums the same logits in float64
    logits = (10 * torch.randn(5, 64, 784, generator=gen)).to(torch.bfloat16)
    l64 = logits.double()
    exact = (l64 * x.double()).sum(-1) - F.softplus(l64).sum(-1)
    assert exact.abs().min() > 1024  # the premise: sums where bfloat16's spacing is 8 nats or more
    with BF16():
        got = DecoderLikelihood("bernoulli").log_prob(x, logits)
    # A bfloat16 sum is off by up to 4 nats per image here (0.33 nats measured on a trained MNIST decoder).
    assert got.dtype == torch.float32
    assert (got.double() - exact).abs().max() < 1e-2


@pytest.mark.parametrize("kind", ["gaussian", "gaussian_fixed"])
def test_gaussian_log_likelihoods_are_float32_under_bf16_autocast(kind):
    x = torch.rand(16, 784)
    params = torch.randn(16, 784 * DecoderLikelihood(kind).n_params).to(torch.bfloat16)
    likelihood = DecoderLikelihood(kind)
    with BF16():
        got = likelihood.log_prob(x, params)
    assert got.dtype == torch.float32
    assert torch.allclose(got, likelihood.log_prob(x, params.float()), rtol=1e-6, atol=1e-3)


def test_iwae_log_weights_under_bf16_autocast_match_float64_at_the_same_samples():
    torch.manual_seed(0)
    model = VAE((1, 28, 28), functools.partial(MLP, hidden=[200]), functools.partial(MLP, hidden=[200]),
                latent_dim=50, objective="iwae", k=50)
    with torch.no_grad():
        final_linear(model.decoder).weight.mul_(8)  # logits of magnitude ~10
    x = binary_images(32, seed=2).reshape(32, 1, 28, 28)
    with torch.no_grad(), BF16():
        # the steps of VAE.objective_terms for objective=iwae, with the network outputs kept for the reference
        mean, log_var = model.posterior(x)
        z = model.sample_posterior(mean, log_var, 50)
        params = model.decoder_params(z)
        log_w = log_importance_weights(model.log_likelihood(x, z), model.log_prior(z),
                                       log_normal(z, mean, log_var).sum(-1))
        bound = iwae_bound(log_w)
    assert params.dtype == z.dtype == torch.bfloat16  # the premise: autocast did compute in bfloat16
    p64, x64, z64, m64, lv64 = params.double(), x.flatten(1).double(), z.double(), mean.double(), log_var.double()
    log_px_z = (p64 * x64).sum(-1) - F.softplus(p64).sum(-1)
    log_pz = log_normal(z64, torch.zeros_like(z64), torch.zeros_like(z64)).sum(-1)
    exact = log_px_z + log_pz - log_normal(z64, m64, lv64).sum(-1)
    assert log_w.dtype == torch.float32
    assert (log_w.double() - exact).abs().max() < 1e-2
    # the self-normalised importance weights: total variation against the float64 ones, per image
    tv = 0.5 * (torch.softmax(log_w.double(), 0) - torch.softmax(exact, 0)).abs().sum(0)
    assert tv.max() < 1e-2
    assert (bound.double() - torch.logsumexp(exact, 0) + torch.log(torch.tensor(50.0))).abs().max() < 1e-2


def penalty_and_critic_gradient(critic: torch.nn.Module, dtype: torch.dtype | None) -> tuple[float, torch.Tensor]:
    """The gradient penalty of ``critic`` on fixed points and its gradient w.r.t. the critic's parameters, under
    ``dtype`` autocast (None: float32)."""
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(256, 2, generator=gen), torch.randn(256, 2, generator=gen)
    critic.zero_grad()
    with torch.autocast("cpu", dtype or torch.bfloat16, enabled=dtype is not None):
        gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    gp.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in critic.parameters()]
    return gp.item(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_wgan_gp_penalty_under_mixed_precision_trains_the_critic_as_in_float32(dtype):
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(3e-4)  # a critic with tiny gradients: float16 products underflow (67% off before the fix)
    gp32, grad32 = penalty_and_critic_gradient(critic, None)
    gp16, grad16 = penalty_and_critic_gradient(critic, dtype)
    assert gp16 == pytest.approx(gp32, rel=1e-6)
    assert ((grad16 - grad32).norm() / grad32.norm()).item() < 1e-5
