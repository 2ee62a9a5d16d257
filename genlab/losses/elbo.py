"""The ELBO and its KL terms: ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), with p(z) = N(0, I)."""

from __future__ import annotations

from torch import Tensor

from genlab.losses.distributions import at_least_float32, log_normal, log_standard_normal


def kl_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    """Closed form KL(N(mean, diag exp(log_var)) || N(0, I)) = 1/2 sum_j (mean_j^2 + s_j^2 - log s_j^2 - 1).

    The chapter drops the -1; without it the KL of q = p would be J/2 instead of 0 (see the errata).
    Sums over the last (latent) dimension.
    """
    mean, log_var = at_least_float32(mean), at_least_float32(log_var)  # a float32 sum under autocast too
    return 0.5 * (mean.pow(2) + log_var.exp() - log_var - 1.0).sum(-1)


def log_ratio_q_p(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log q(z|x) - log p(z) at a sample z (the log of the ratio q/p, not a ratio of logs): a one-sample KL estimate."""
    return (log_normal(z, mean, log_var) - log_standard_normal(z)).sum(-1)


def elbo(log_px_z: Tensor, kl: Tensor, beta: float | Tensor = 1.0) -> Tensor:
    """The (beta-weighted) ELBO per example: log p(x|z) - beta * KL; beta = 1 is the bound on log p(x)."""
    return log_px_z - beta * kl


def kl_warmup_beta(step: int, warmup_steps: int, beta: float = 1.0) -> float:
    """The KL weight at optimizer step ``step``: beta * min(1, step / warmup_steps), linear from 0 (no warm-up if 0)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
