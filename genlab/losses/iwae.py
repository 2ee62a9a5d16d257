"""The importance-weighted bound L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)] (Burda et al., 2016)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_mean_exp(a: Tensor, dim: int = 0) -> Tensor:
    """log (1/n) sum_i exp(a_i) along ``dim``, stable for any magnitudes (max-shifted log-sum-exp)."""
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


def log_importance_weights(log_px_z: Tensor, log_pz: Tensor, log_qz_x: Tensor) -> Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x): the log of the ratio p(x, z) / q(z|x)."""
    return log_px_z + log_pz - log_qz_x


def iwae_bound(log_w: Tensor, dim: int = 0) -> Tensor:
    """L_k per example from the k log-weights along ``dim``: log-mean-exp; L_1 is the one-sample ELBO."""
    return log_mean_exp(log_w, dim=dim)
