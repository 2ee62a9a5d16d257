"""Log-densities and the Gaussian helpers every VAE-family loss is built from; all elementwise, no reduction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 if it is a 16-bit float (autocast's output), else unchanged (float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def log_normal(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise log N(x; mean, exp(log_var)) = -1/2 (log 2pi + log_var + (x - mean)^2 / exp(log_var)), in at
    least float32 (the sums over latent dims of 16-bit values would round log q and log p, hence IWAE's weights)."""
    x, mean, log_var = at_least_float32(x), at_least_float32(mean), at_least_float32(log_var)
    return -0.5 * (LOG_2PI + log_var + (x - mean).pow(2) * torch.exp(-log_var))


def log_standard_normal(x: Tensor) -> Tensor:
    """Elementwise log N(x; 0, 1) = -1/2 (log 2pi + x^2), in at least float32."""
    return -0.5 * (LOG_2PI + at_least_float32(x).pow(2))


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
