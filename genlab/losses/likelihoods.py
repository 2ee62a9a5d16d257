"""Decoder likelihoods p(x|z) chosen by name: how many parameter sets the decoder outputs, log p(x|z), its mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.accelerator import autocast_off
from genlab.checks import ConfigError, one_of, positive
from genlab.losses.distributions import at_least_float32, floor_log_var, log_normal

# name -> number of parameter sets the decoder outputs per data dimension
LIKELIHOOD_PARAMS = {"bernoulli": 1, "gaussian": 2, "gaussian_fixed": 1}


@dataclass(frozen=True)
class DecoderLikelihood:
    """p(x|z) from flat decoder outputs ``params`` of shape (..., P*D) against flat data x of shape (..., D).

    - ``bernoulli``: params are logits; for binary data (or [0, 1] intensities, as in the VaDE paper).
    - ``gaussian``: params are (mean, raw log-variance); the log-variance is floored at ``min_log_var``.
    - ``gaussian_fixed``: params are the mean; the variance is ``fixed_variance`` everywhere.
    """

    kind: str = "bernoulli"
    min_log_var: float = -6.0
    fixed_variance: float = 1.0

    def __post_init__(self) -> None:
        one_of("likelihood", self.kind, LIKELIHOOD_PARAMS)
        positive("fixed_variance", self.fixed_variance)
        if not isinstance(self.min_log_var, (int, float)) or not math.isfinite(self.min_log_var):
            raise ConfigError(f"min_log_var={self.min_log_var!r} is not accepted: expected a finite number")

    @property
    def n_params(self) -> int:
        return LIKELIHOOD_PARAMS[self.kind]

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) = sum_d log p(x_d|z) in float32 (also under autocast), broadcasting x over the leading (sample)
        dims of params."""
        # A sum over 784 pixels of ~10^3 nats rounded to bfloat16 is off by up to 4 nats per image (its spacing
        # is 8 in [1024, 2048)): enough to reorder IWAE's importance weights. A no-op in float32 and float64.
        params = at_least_float32(params)
        if self.kind == "bernoulli":
            # sum_d x_d l_d as an einsum reads the big (k, B, D) logits once and never expands x; autocast would
            # run it as a 16-bit bmm, hence autocast off.
            with autocast_off(params.device):
                return torch.einsum("...d,...d->...", params, x.to(params.dtype)) - F.softplus(params).sum(-1)
        if self.kind == "gaussian":
            mean, raw = params.chunk(2, dim=-1)
            return log_normal(x, mean, floor_log_var(raw, self.min_log_var)).sum(-1)
        log_var = torch.full_like(params, math.log(self.fixed_variance))
        return log_normal(x, params, log_var).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        """E[x|z]: sigmoid(logits) for Bernoulli, the mean output for the Gaussians."""
        if self.kind == "bernoulli":
            return torch.sigmoid(params)
        return params.chunk(self.n_params, dim=-1)[0]
