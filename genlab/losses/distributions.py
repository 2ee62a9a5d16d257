"""Log-densities and the Gaussian helpers every VAE-family loss is built from; all elementwise, no reduction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def log_normal(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise log N(x; mean, exp(log_var)) = -1/2 (log 2pi + log_var + (x - mean)^2 / exp(log_var))."""
    return -0.5 * (LOG_2PI + log_var + (x - mean).pow(2) * torch.exp(-log_var))


def log_standard_normal(x: Tensor) -> Tensor:
    """Elementwise log N(x; 0, 1) = -1/2 (log 2pi + x^2)."""
    return -0.5 * (LOG_2PI + x.pow(2))


def log_bernoulli(x: Tensor, logits: Tensor) -> Tensor:
    """Elementwise x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)) = x l - softplus(l), stable for any l."""
    return x * logits - F.softplus(logits)


def floor_log_var(raw: Tensor, floor: float) -> Tensor:
    """A log-variance bounded below by ``floor``: floor + softplus(raw - floor), ~raw well above the floor.

    A smooth floor (unlike a clamp) keeps a gradient everywhere, and exp(-log_var) can never blow up.
    """
    return floor + F.softplus(raw - floor)


def reparameterize(mean: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """z = mean + sigma * eps with sigma = exp(log_var / 2): the sample is differentiable in (mean, log_var)."""
    return mean + torch.exp(0.5 * log_var) * eps
