"""The ELBO's pieces against closed forms, torch.distributions and Monte-Carlo, including the chapter's errata."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Normal, kl_divergence

from genlab.checks import ConfigError
from genlab.losses.distributions import floor_log_var, log_bernoulli, log_normal, log_standard_normal, reparameterize
from genlab.losses.elbo import elbo, kl_standard_normal, kl_warmup_beta, log_ratio_q_p
from genlab.losses.likelihoods import DecoderLikelihood

finite = st.floats(-5.0, 5.0, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(finite, st.floats(-6.0, 4.0)), min_size=1, max_size=6))
def test_closed_form_kl_matches_torch_distributions(pairs: list[tuple[float, float]]) -> None:
    mean = torch.tensor([m for m, _ in pairs], dtype=torch.float64)
    log_var = torch.tensor([lv for _, lv in pairs], dtype=torch.float64)
    expected = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum()
    assert torch.allclose(kl_standard_normal(mean, log_var), expected, atol=1e-9)
    assert kl_standard_normal(mean, log_var) >= -1e-12


def test_closed_form_kl_matches_monte_carlo_of_log_q_minus_log_p() -> None:
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    log_var = torch.tensor([[-1.0, 0.5, 0.0]], dtype=torch.float64)
    eps = torch.randn(200_000, 1, 3, generator=gen, dtype=torch.float64)
    z = reparameterize(mean, log_var, eps)
    estimate = log_ratio_q_p(z, mean, log_var).mean()
    exact = kl_standard_normal(mean, log_var)[0]
    standard_error = log_ratio_q_p(z, mean, log_var).std() / math.sqrt(z.shape[0])
    assert abs(estimate - exact) < 4 * standard_error


def test_errata_kl_keeps_the_minus_one_so_that_kl_of_p_to_itself_is_zero() -> None:
    # The chapter's formula without the -1 would give J/2 = 2 here.
    assert kl_standard_normal(torch.zeros(4), torch.zeros(4)).item() == 0.0
    # and per dimension it is 1/2 (mu^2 + s^2 - log s^2 - 1), checked on one hand-computed value
    assert kl_standard_normal(torch.tensor([1.0]), torch.tensor([math.log(2.0)])).item() == pytest.approx(
        0.5 * (1 + 2 - math.log(2.0) - 1)
    )


def test_errata_log_ratio_is_log_q_minus_log_p_not_a_ratio_of_logs() -> None:
    z = torch.tensor([[0.7, -0.2]])
    mean, log_var = torch.tensor([[0.1, 0.4]]), torch.tensor([[-0.3, 0.2]])
    log_q = Normal(mean, (0.5 * log_var).exp()).log_prob(z).sum()
    log_p = Normal(0.0, 1.0).log_prob(z).sum()
    assert torch.allclose(log_ratio_q_p(z, mean, log_var)[0], log_q - log_p)
    assert not torch.allclose(log_ratio_q_p(z, mean, log_var)[0], log_q / log_p)


def test_log_densities_match_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(1)
    x, mean, log_var = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    assert torch.allclose(log_normal(x, mean, log_var), Normal(mean, (0.5 * log_var).exp()).log_prob(x))
    assert torch.allclose(log_standard_normal(x), Normal(0.0, 1.0).log_prob(x))
    logits = 30 * torch.randn(50, generator=gen, dtype=torch.float64)  # far into saturation
    bits = (torch.rand(50, generator=gen) > 0.5).double()
    assert torch.allclose(log_bernoulli(bits, logits), Bernoulli(logits=logits).log_prob(bits))


def test_decoder_likelihoods_sum_over_data_and_broadcast_over_samples() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    out = torch.randn(3, 4, 12, generator=gen, dtype=torch.float64)  # (k, B, 2*D)
    gaussian = DecoderLikelihood("gaussian", min_log_var=-3.0)
    mean, raw = out.chunk(2, dim=-1)
    expected = Normal(mean, (0.5 * floor_log_var(raw, -3.0)).exp()).log_prob(x).sum(-1)
    assert torch.allclose(gaussian.log_prob(x, out), expected)
    fixed = DecoderLikelihood("gaussian_fixed", fixed_variance=0.25)
    assert torch.allclose(fixed.log_prob(x, mean), Normal(mean, 0.5).log_prob(x).sum(-1))
    bern = DecoderLikelihood("bernoulli")
    assert torch.allclose(bern.log_prob(x, mean), log_bernoulli(x, mean).sum(-1))
    assert torch.allclose(bern.mean(mean), mean.sigmoid())
    assert gaussian.n_params == 2 and torch.equal(gaussian.mean(out), mean)


def test_variance_floor_bounds_the_log_variance_and_keeps_a_gradient() -> None:
    raw = torch.tensor([-1e4, -10.0, 0.0, 5.0], requires_grad=True)
    floored = floor_log_var(raw, -4.0)
    assert (floored >= -4.0).all() and floored[-1].item() == pytest.approx(5.0, abs=1e-3)
    floored.sum().backward()
    assert (raw.grad[1:] > 0).all()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"kind": "poisson"}, "likelihood"),
        ({"kind": "gaussian_fixed", "fixed_variance": 0.0}, "fixed_variance"),
        ({"kind": "gaussian", "min_log_var": math.nan}, "min_log_var"),
    ],
)
def test_bad_likelihood_settings_raise_config_errors_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}="):
        DecoderLikelihood(**kwargs)


def test_elbo_and_kl_warmup() -> None:
    assert torch.equal(elbo(torch.tensor([-5.0]), torch.tensor([2.0]), beta=0.5), torch.tensor([-6.0]))
    assert kl_warmup_beta(0, 100) == 0.0
    assert kl_warmup_beta(50, 100, beta=2.0) == 1.0
    assert kl_warmup_beta(500, 100) == 1.0
    assert kl_warmup_beta(0, 0, beta=0.3) == 0.3
