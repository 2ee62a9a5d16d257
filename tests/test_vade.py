"""VaDE's mixture prior and ELBO against scikit-learn, Monte-Carlo and the VAE it must reduce to; clustering scores."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.mixture import GaussianMixture

from genlab.losses.distributions import log_normal, reparameterize
from genlab.losses.elbo import kl_standard_normal
from genlab.losses.vade import (
    gmm_log_density,
    gmm_log_joint,
    gmm_log_responsibilities,
    gmm_responsibilities,
    vade_kl,
)
from genlab.metrics.clustering import ClusteringScores, cluster_accuracy, clustering_scores


def fitted_gmm(seed: int = 0) -> tuple[GaussianMixture, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(c, s, size=(100, 3)) for c, s in [(-3, 0.5), (0, 1.0), (4, 0.3)]])
    return GaussianMixture(3, covariance_type="diag", random_state=seed).fit(z), z


def gmm_tensors(gmm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(np.log(gmm.weights_)),
        torch.tensor(gmm.means_),
        torch.tensor(np.log(gmm.covariances_)),
    )


def test_responsibilities_sum_to_one_and_match_sklearn_predict_proba() -> None:
    gmm, z = fitted_gmm()
    gamma = gmm_responsibilities(torch.tensor(z), *gmm_tensors(gmm))
    assert torch.allclose(gamma.sum(-1), torch.ones(len(z), dtype=torch.float64))
    np.testing.assert_allclose(gamma.numpy(), gmm.predict_proba(z), atol=1e-8)
    np.testing.assert_allclose(gmm_log_density(torch.tensor(z), *gmm_tensors(gmm)).numpy(), gmm.score_samples(z))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(-50.0, 50.0))
def test_responsibilities_are_a_distribution_even_far_from_every_component(seed: int, offset: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(8, 4, generator=gen) * 30 + offset
    log_w = torch.log_softmax(torch.randn(5, generator=gen), -1)
    gamma = gmm_responsibilities(z, log_w, torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen) - 2)
    assert torch.isfinite(gamma).all() and torch.allclose(gamma.sum(-1), torch.ones(8), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_vade_kl_with_one_standard_component_is_the_vae_kl(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    mean, log_var = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    kl = vade_kl(
        mean,
        log_var,
        torch.zeros(6, 1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
        torch.zeros(1, 3, dtype=torch.float64),
        torch.zeros(1, 3, dtype=torch.float64),
    )
    assert torch.allclose(kl, kl_standard_normal(mean, log_var))


def test_vade_kl_matches_monte_carlo_of_the_joint_log_ratio() -> None:
    """KL(q(z,c|x) || p(z,c)) = E_{z~q} [log q(z|x) + sum_c gamma_c (log gamma_c - log p(z, c))]."""
    gen = torch.Generator().manual_seed(5)
    mean, log_var = torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.tensor([[-0.5, 0.3]], dtype=torch.float64)
    log_w = torch.log_softmax(torch.randn(4, generator=gen, dtype=torch.float64), -1)
    means, log_vars = torch.randn(2, 4, 2, generator=gen, dtype=torch.float64)
    gamma = torch.softmax(torch.randn(1, 4, generator=gen, dtype=torch.float64), -1)
    z = reparameterize(mean, log_var, torch.randn(200_000, 1, 2, generator=gen, dtype=torch.float64))
    per_sample = log_normal(z, mean, log_var).sum(-1) + (
        gamma * (gamma.log() - gmm_log_joint(z, log_w, means, log_vars))
    ).sum(-1)
    exact = vade_kl(mean, log_var, gamma.log(), log_w, means, log_vars)[0]
    assert abs(per_sample.mean() - exact) < 4 * per_sample.std() / math.sqrt(z.shape[0])


def test_vade_kl_and_its_gradient_are_finite_when_a_responsibility_underflows_to_zero() -> None:
    z = torch.tensor([[0.0, 0.0]], requires_grad=True)
    means = torch.tensor([[0.0, 0.0], [300.0, 300.0]], requires_grad=True)  # gamma_2 = exp(-9e4) = 0 in float32
    log_w, log_vars = torch.log(torch.tensor([0.5, 0.5])), torch.zeros(2, 2)
    log_gamma = gmm_log_responsibilities(z, log_w, means, log_vars)
    assert log_gamma.exp()[0, 1].item() == 0.0 and torch.isfinite(log_gamma).all()
    kl = vade_kl(torch.zeros(1, 2), torch.zeros(1, 2), log_gamma, log_w, means, log_vars)
    assert torch.allclose(kl, torch.tensor([math.log(2.0)]))
    kl.sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(means.grad).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.permutations(range(5)))
def test_cluster_accuracy_is_one_for_a_permuted_perfect_clustering(labels: list[int], perm: list[int]) -> None:
    true = np.array(labels)
    assert cluster_accuracy(np.array(perm)[true], true) == 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60), st.permutations(range(4)))
def test_cluster_scores_are_invariant_to_relabelling_the_clusters(pairs, perm) -> None:
    pred, true = np.array([p for p, _ in pairs]), np.array([t for _, t in pairs])
    permuted, original = clustering_scores(np.array(perm)[pred], true), clustering_scores(pred, true)
    assert permuted["acc"] == original["acc"]
    assert abs(permuted["nmi"] - original["nmi"]) < 1e-12 and abs(permuted["ari"] - original["ari"]) < 1e-12


def test_cluster_accuracy_against_a_hand_count() -> None:
    # clusters {0: labels 1,1,2}, {1: labels 0,0}, {2: label 2}: the best map 0->1, 1->0, 2->2 gets 5 of 6
    pred, true = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 1, 2, 0, 0, 2])
    assert cluster_accuracy(pred, true) == 5 / 6
    # more clusters than classes: the extra cluster cannot be matched and counts as wrong
    assert cluster_accuracy(np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])) == 0.5


def test_clustering_metric_accumulates_batches() -> None:
    metric = ClusteringScores()
    metric.update(torch.tensor([2, 2, 0]), torch.tensor([0, 0, 1]))
    metric.update(torch.tensor([0, 1]), torch.tensor([1, 2]))
    scores = metric.compute()
    assert scores["acc"].item() == 1.0 and scores["nmi"].item() == 1.0 and scores["ari"].item() == 1.0
