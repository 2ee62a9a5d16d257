"""Where VaDE's mixture prior starts: (pi, mu_c, s_c^2) fitted to latent codes, by diagonal-GMM EM or by k-means."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

PRIOR_INIT = {"gmm": "GMM", "kmeans": "k-means"}  # model.prior_init: its name in messages
Mixture = tuple[np.ndarray, np.ndarray, np.ndarray]  # weights (K,), means (K, J), variances (K, J)


def kmeans_mixture(codes: np.ndarray, k: int, n_init: int, seed: int) -> Mixture:
    """Share, mean and per-dimension variance (+1e-6, GaussianMixture's reg_covar) of each cluster of the best of
    ``n_init`` k-means partitions by inertia: DEC's start, with no EM step that could merge two clusters."""
    labels = KMeans(k, n_init=n_init, random_state=seed).fit_predict(codes)
    members = [codes[labels == c] for c in range(k)]
    return (np.array([len(m) / len(codes) for m in members]), np.stack([m.mean(0) for m in members]),
            np.stack([m.var(0) + 1e-6 for m in members]))


def initial_mixture(
    codes: np.ndarray, k: int, method: str, n_init: int, seed: int
) -> tuple[Mixture, GaussianMixture | None]:
    """The start ``method`` fits to ``codes`` (N, J), and the GaussianMixture where it is EM's: "gmm", the best of
    ``n_init`` diagonal-GMM EM restarts by log-likelihood; "kmeans", :func:`kmeans_mixture`."""
    if method == "kmeans":
        return kmeans_mixture(codes, k, n_init, seed), None
    gmm = GaussianMixture(k, covariance_type="diag", n_init=n_init, random_state=seed).fit(codes)
    return (gmm.weights_, gmm.means_, gmm.covariances_), gmm
