"""The importance-weighted bound: stable log-mean-exp, exact marginal likelihood on a linear-Gaussian model, monotone in k."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import MultivariateNormal

from genlab.losses.distributions import log_normal, log_standard_normal, reparameterize
from genlab.losses.iwae import iwae_bound, log_importance_weights, log_mean_exp
from genlab.losses.likelihoods import DecoderLikelihood
from genlab.metrics.likelihood import importance_weighted_log_likelihood

J, D, SIGMA2 = 2, 5, 0.3


def linear_gaussian(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W (D, J) with orthogonal columns, so the exact posterior is diagonal, and the bias b (D,)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, J, generator=gen, dtype=torch.float64))
    return q * torch.tensor([1.5, 0.7], dtype=torch.float64), torch.randn(D, generator=gen, dtype=torch.float64)


def exact_log_px(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """p(x) = N(b, W W^T + sigma^2 I)."""
    return MultivariateNormal(b, w @ w.T + SIGMA2 * torch.eye(D, dtype=torch.float64)).log_prob(x)


def exact_posterior(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of p(z|x): Sigma = (I + W^T W / s^2)^-1 (diagonal here), mu = Sigma W^T (x - b) / s^2."""
    precision = 1.0 + (w * w).sum(0) / SIGMA2
    return ((x - b) @ w / SIGMA2) / precision, (-precision.log()).expand(x.shape[0], J)


def log_weights_fn(x, w, b, mean, log_var, gen):
    """``(log_weights(eps), noise(n))`` for the linear-Gaussian model, built only from genlab's loss functions."""
    likelihood = DecoderLikelihood("gaussian_fixed", fixed_variance=SIGMA2)

    def noise(n: int) -> torch.Tensor:
        return torch.randn(n, *mean.shape, generator=gen, dtype=torch.float64)

    def log_weights(eps: torch.Tensor) -> torch.Tensor:
        z = reparameterize(mean, log_var, eps)
        log_px_z = likelihood.log_prob(x, z @ w.T + b)
        return log_importance_weights(log_px_z, log_standard_normal(z).sum(-1), log_normal(z, mean, log_var).sum(-1))

    return log_weights, noise


def data(w, b, n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, J, generator=gen, dtype=torch.float64)
    return z @ w.T + b + math.sqrt(SIGMA2) * torch.randn(n, D, generator=gen, dtype=torch.float64)


def test_exact_posterior_as_proposal_gives_the_exact_marginal_likelihood_for_any_k() -> None:
    w, b = linear_gaussian()
    x = data(w, b, 16)
    mean, log_var = exact_posterior(x, w, b)
    gen = torch.Generator().manual_seed(2)
    for k, chunk in [(1, 1), (7, 3), (100, 64)]:
        estimate = importance_weighted_log_likelihood(*log_weights_fn(x, w, b, mean, log_var, gen), k, chunk)
        # the estimator sums chunks in float32 (genlab.metrics.likelihood casts), so float32 rounding, not 1e-9
        assert torch.allclose(estimate.double(), exact_log_px(x, w, b), rtol=0, atol=1e-5)


def test_perturbed_proposal_converges_to_the_marginal_likelihood_at_large_k() -> None:
    w, b = linear_gaussian()
    x = data(w, b, 16)
    mean, log_var = exact_posterior(x, w, b)
    mean, log_var = mean + 0.4, log_var + 0.6  # a wider, shifted q: finite weight variance, a clear gap at k=1
    gen = torch.Generator().manual_seed(3)
    exact = exact_log_px(x, w, b)
    gap_1 = exact - importance_weighted_log_likelihood(*log_weights_fn(x, w, b, mean, log_var, gen), 1, 1)
    gap_k = exact - importance_weighted_log_likelihood(*log_weights_fn(x, w, b, mean, log_var, gen), 20_000, 5_000)
    assert gap_1.mean() > 0.1
    assert gap_k.abs().max() < 0.02


def test_bound_grows_with_k_averaged_over_data() -> None:
    w, b = linear_gaussian()
    x = data(w, b, 64).repeat(50, 1)  # 50 independent replicas of every point tame the Monte-Carlo noise
    mean, log_var = exact_posterior(x, w, b)
    log_weights, noise = log_weights_fn(x, w, b, mean + 0.5, log_var + 0.8, torch.Generator().manual_seed(4))
    bounds = [iwae_bound(log_weights(noise(k))).mean().item() for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2] < exact_log_px(x, w, b).mean().item()


def test_chunked_estimate_equals_the_one_shot_log_mean_exp() -> None:
    table = torch.randn(10, 3, dtype=torch.float64) * 50
    cursor = iter(range(10))

    def rows(n: int) -> torch.Tensor:
        return torch.tensor([next(cursor) for _ in range(n)])

    estimate = importance_weighted_log_likelihood(lambda idx: table[idx], rows, 10, 4)
    assert torch.allclose(estimate.double(), log_mean_exp(table, 0))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=20),
    st.floats(-1e4, 1e4, allow_nan=False),
)
def test_log_mean_exp_is_stable_and_shift_equivariant(values: list[float], shift: float) -> None:
    a = torch.tensor(values, dtype=torch.float64)
    result = log_mean_exp(a)
    assert torch.isfinite(result)
    assert a.max() - math.log(len(values)) - 1e-9 <= result <= a.max() + 1e-9
    assert torch.allclose(log_mean_exp(a + shift), result + shift, atol=1e-6)


def test_log_mean_exp_with_extreme_values() -> None:
    a = torch.tensor([[1e4, -1e4], [1e4, -1e4]])
    assert torch.allclose(log_mean_exp(a, dim=0), torch.tensor([1e4, -1e4]))
    assert torch.allclose(log_mean_exp(torch.tensor([1e4, -1e4])), torch.tensor(1e4 - math.log(2.0)))
    assert torch.allclose(log_mean_exp(torch.tensor([0.0, 0.0, 0.0])), torch.tensor(0.0))
