"""Property tests of the maths (hypothesis) that the per-module tests do not already cover.

Already elsewhere: closed-form KL vs torch.distributions (test_elbo), log-mean-exp shift equivariance on float64
(test_iwae), GMM responsibilities sum to one (test_vade), clustering scores invariant to relabelling (test_vade).
"""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genlab.losses.distributions import reparameterize
from genlab.losses.elbo import kl_standard_normal, log_ratio_q_p
from genlab.losses.iwae import iwae_bound, log_mean_exp

gaussians = st.lists(st.tuples(st.floats(-3.0, 3.0), st.floats(-3.0, 2.0)), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None)
@given(gaussians, st.integers(0, 2**31 - 1))
def test_closed_form_kl_matches_monte_carlo_for_any_diagonal_gaussian(pairs, seed):
    mean = torch.tensor([[m for m, _ in pairs]], dtype=torch.float64)
    log_var = torch.tensor([[lv for _, lv in pairs]], dtype=torch.float64)
    eps = torch.randn(40_000, *mean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    samples = log_ratio_q_p(reparameterize(mean, log_var, eps), mean, log_var)
    exact = kl_standard_normal(mean, log_var)
    standard_error = samples.std() / math.sqrt(samples.shape[0])
    # 5 standard errors: a false alarm in well under one of 10^5 examples.
    assert abs(samples.mean() - exact.item()) <= 5 * standard_error + 1e-9


def reference_log_mean_exp(values: list[float]) -> float:
    """log mean exp in exact-as-possible float64 arithmetic: max-shifted, compensated sum."""
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(math.fsum(math.exp(v - top) for v in finite)) - math.log(len(values))


extreme = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # anywhere in float32's range
    st.just(-math.inf),  # a weight that underflowed to exactly zero
    st.floats(-100.0, 100.0, width=32),  # where the weights are comparable
)


@settings(max_examples=60, deadline=None)
@given(st.lists(extreme, min_size=1, max_size=12))
def test_log_mean_exp_in_float32_with_extreme_values_and_zero_weights(values):
    result = log_mean_exp(torch.tensor(values, dtype=torch.float32)).item()
    expected = reference_log_mean_exp(values)
    if expected == -math.inf:
        assert result == -math.inf  # all weights zero: log 0, not NaN
        return
    assert math.isfinite(result)
    # float32 resolves ~6e-8 relative; the log n and log-sum terms add a few ulps.
    assert abs(result - expected) <= 1e-6 * max(1.0, abs(expected)) + 1e-5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50.0, 50.0), min_size=2, max_size=7))
def test_iwae_bound_averaged_over_subsets_grows_with_k(log_weights):
    """Burda et al.'s argument, exactly: for any n log-weights, the mean of L_k over all k-subsets is
    non-decreasing in k, and at k = n it is the bound on all of them (so L_1's mean, the ELBO, is the lowest)."""
    w = torch.tensor(log_weights, dtype=torch.float64)
    n = len(log_weights)
    means = []
    for k in range(1, n + 1):
        subsets = torch.tensor(list(itertools.combinations(range(n), k)))
        means.append(iwae_bound(w[subsets], dim=1).mean().item())
    for smaller, larger in itertools.pairwise(means):
        assert larger >= smaller - 1e-9
    assert math.isclose(means[0], w.mean().item(), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(means[-1], log_mean_exp(w).item(), rel_tol=1e-12, abs_tol=1e-12)
