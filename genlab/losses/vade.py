"""VaDE (Jiang et al., 2017): a mixture-of-Gaussians prior p(z, c) = pi_c N(z; mu_c, diag s_c^2) and its ELBO."""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.losses.distributions import log_normal


def gmm_log_joint(z: Tensor, log_weights: Tensor, means: Tensor, log_vars: Tensor) -> Tensor:
    """log p(z, c) = log pi_c + sum_j log N(z_j; mu_cj, s_cj^2) for every component: (..., J) -> (..., K).

    ``log_weights`` (K,) are normalised log mixture weights, ``means`` and ``log_vars`` are (K, J).
    """
    return log_weights + log_normal(z.unsqueeze(-2), means, log_vars).sum(-1)


def gmm_log_density(z: Tensor, log_weights: Tensor, means: Tensor, log_vars: Tensor) -> Tensor:
    """log p(z) = log sum_c pi_c N(z; mu_c, diag s_c^2): (..., J) -> (...)."""
    return torch.logsumexp(gmm_log_joint(z, log_weights, means, log_vars), dim=-1)


def gmm_responsibilities(z: Tensor, log_weights: Tensor, means: Tensor, log_vars: Tensor) -> Tensor:
    """gamma_c = p(c|z) = pi_c N(z; mu_c, s_c^2) / sum_c' pi_c' N(z; mu_c', s_c'^2): (..., J) -> (..., K)."""
    return torch.softmax(gmm_log_joint(z, log_weights, means, log_vars), dim=-1)


def gmm_log_responsibilities(z: Tensor, log_weights: Tensor, means: Tensor, log_vars: Tensor) -> Tensor:
    """log gamma_c = log p(c|z), finite even where gamma_c underflows to 0: (..., J) -> (..., K)."""
    return torch.log_softmax(gmm_log_joint(z, log_weights, means, log_vars), dim=-1)


def vade_kl(
    mean: Tensor, log_var: Tensor, log_gamma: Tensor, log_weights: Tensor, means: Tensor, log_vars: Tensor
) -> Tensor:
    """KL(q(z, c|x) || p(z, c)) with q(z, c|x) = N(z; mean, diag exp(log_var)) gamma_c (VaDE eq. 13, the KL part).

    = 1/2 sum_c gamma_c sum_j (log s_cj^2 + s~_j^2 / s_cj^2 + (mean_j - mu_cj)^2 / s_cj^2)
      - sum_c gamma_c log(pi_c / gamma_c) - 1/2 sum_j (1 + log s~_j^2).
    ``mean``/``log_var`` are (..., J), ``log_gamma`` is (..., K); the log 2pi terms cancel. With K = 1,
    mu = 0 and s = 1 it is the closed-form KL to N(0, I).
    """
    gamma = log_gamma.exp()
    mean, log_var = mean.unsqueeze(-2), log_var.unsqueeze(-2)  # (..., 1, J) against (K, J)
    per_component = 0.5 * (log_vars + (log_var.exp() + (mean - means).pow(2)) * torch.exp(-log_vars)).sum(-1)
    cross_entropy_z = (gamma * per_component).sum(-1)
    # gamma log gamma from a finite log gamma: where gamma underflows the term and its gradient stay 0,
    # where xlogy(gamma, gamma) would backpropagate 0 * (-inf) = nan through the softmax.
    kl_c = (gamma * (log_gamma - log_weights)).sum(-1)
    entropy_z = 0.5 * (1.0 + log_var.squeeze(-2)).sum(-1)
    return cross_entropy_z + kl_c - entropy_z
