"""A VAE with two stochastic layers (Burda et al., 2016, the "2 layers" rows of Table 1), ELBO- or IWAE-trained.

Generative model: p(z2) = N(0, I), p(z1|z2) = N(mu(z2), diag s^2(z2)), p(x|z1) = the decoder likelihood.
Inference model:  q(z1|x) = N(m1(x), diag v1(x)),  q(z2|z1) = N(m2(z1), diag v2(z1)).
Each importance sample draws z1 ~ q(z1|x), then z2 ~ q(z2|z1), and weighs it by

    log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)

(the authors' ``IWAE.log_weightsIq_samples``). Everything else, the bounds, the k-sample test NLL, the learning
curve, the output-bias initialisation, the schedules, is the one-layer :class:`~genlab.models.vae.VAE`'s;
``encode``/``decode`` work on z1, and the active units are counted per layer (``*/active_units`` for z1,
``*/active_units_z2`` for z2; the paper's "16+5" is z1+z2).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from genlab.checks import positive_int
from genlab.losses.distributions import LOG_2PI, floor_log_var, log_normal, reparameterize
from genlab.losses.elbo import elbo, kl_standard_normal
from genlab.losses.iwae import iwae_bound, log_importance_weights
from genlab.metrics.active_units import ActiveUnits, count_active_units
from genlab.models.base import OptimizerFactory  # noqa: F401 (resolves the merged constructor's type hints)
from genlab.models.vae import VAE, NetFactory


@dataclass
class LogWeightTerms:
    """The per-sample log-densities of one batch of importance samples, each (n, B), and what they were taken at."""

    log_px_z1: Tensor
    log_pz1_z2: Tensor
    log_pz2: Tensor
    log_qz1: Tensor
    log_qz2: Tensor
    mean2: Tensor  # q(z2|z1)'s mean and log-variance at the sampled z1, (n, B, J2)
    log_var2: Tensor

    @property
    def log_w(self) -> Tensor:
        """log w = log p(x|z1) + [log p(z1|z2) + log p(z2)] - [log q(z1|x) + log q(z2|z1)], (n, B)."""
        return log_importance_weights(self.log_px_z1, self.log_pz1_z2 + self.log_pz2, self.log_qz1 + self.log_qz2)


def _with_vae_keywords(cls: type[VAE]) -> type[VAE]:
    """Give ``cls.__init__`` the VAE's keyword arguments in its visible signature and type hints.

    The config checks (genlab.config.check_node) read a model's constructor signature to name unknown or
    mistyped keys; a bare ``**kwargs`` would hide the VAE's keys from them.
    """
    init = cls.__init__  # type: ignore[misc]
    own = inspect.signature(init)
    fixed = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    inherited = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, p in inspect.signature(VAE.__init__).parameters.items()
        if name not in own.parameters
    ]
    init.__signature__ = own.replace(parameters=fixed + inherited)
    init.__annotations__ = {**VAE.__init__.__annotations__, **init.__annotations__}
    return cls


@_with_vae_keywords
class HierarchicalVAE(VAE):
    """Two-stochastic-layer VAE: x -> z1 (``latent_dim``) -> z2 (``latent_dim2``), mirrored generative nets.

    Nets (each built with the shape contract ``Net(in_shape, out_shape)``): ``encoder`` x -> (2 J1,) for
    q(z1|x); ``encoder2`` (J1,) -> (2 J2,) for q(z2|z1); ``decoder2`` (J2,) -> (2 J1,) for p(z1|z2);
    ``decoder`` (J1,) -> the likelihood's parameters of x. Every learned Gaussian log-variance has the soft
    floor ``encoder_min_log_var``. ``kl=sampled``: KL term = log q(z1, z2|x) - log p(z1, z2) at the samples
    (so L_1 = ELBO term for term, the paper's VAE objective); ``kl=analytic``: its closed-form parts are
    integrated, -H[q(z1|x)] - log p(z1|z2) + KL(q(z2|z1) || N(0, I)), same expectation, less variance.
    Other keyword arguments are the :class:`VAE`'s.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        encoder: NetFactory,
        decoder: NetFactory,
        encoder2: NetFactory,
        decoder2: NetFactory,
        *,
        latent_dim2: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape, encoder, decoder, **kwargs)
        self.latent_dim2 = positive_int("latent_dim2", latent_dim2)
        self.encoder2 = encoder2(in_shape=(self.latent_dim,), out_shape=(2 * self.latent_dim2,))
        self.decoder2 = decoder2(in_shape=(self.latent_dim2,), out_shape=(2 * self.latent_dim,))
        self.val_active_units_z2 = ActiveUnits(self.active_threshold)
        self.test_active_units_z2 = ActiveUnits(self.active_threshold)

    # -- the model's distributions ------------------------------------------------------------
    def gaussian(self, net: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and floored log-variance of a Gaussian layer ``net`` at ``inputs`` (..., J_in): each (..., J_out)."""
        lead = inputs.shape[:-1]
        mean, raw = net(inputs.reshape(-1, inputs.shape[-1])).reshape(*lead, -1).chunk(2, dim=-1)
        return mean, floor_log_var(raw, self.encoder_min_log_var)

    def posterior2(self, z1: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z2|z1), each (..., J2)."""
        return self.gaussian(self.encoder2, z1)

    def prior1(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of p(z1|z2), each (..., J1)."""
        return self.gaussian(self.decoder2, z2)

    def noise(self, n: int, mean: Tensor) -> Tensor:
        """The standard-normal draws of n samples of (z1, z2) for q(z1|x) of mean ``mean`` (B, J1): (n, B, J1 + J2)."""
        return torch.randn((n, mean.shape[0], self.latent_dim + self.latent_dim2), dtype=mean.dtype, device=mean.device)

    def log_weight_terms(
        self, x: Tensor, mean: Tensor, log_var: Tensor, eps: Tensor, for_estimate: bool = False
    ) -> LogWeightTerms:
        """The log-densities of the samples z1 = m1 + s1 eps[..., :J1], z2 = m2(z1) + s2(z1) eps[..., J1:];
        ``for_estimate``: log p(x|z1) by the VAE's evaluation form (float32, fast Bernoulli sum)."""
        eps1, eps2 = eps.split((self.latent_dim, self.latent_dim2), dim=-1)
        z1 = reparameterize(mean, log_var, eps1)
        mean2, log_var2 = self.posterior2(z1)
        z2 = reparameterize(mean2, log_var2, eps2)
        prior_mean, prior_log_var = self.prior1(z2)
        return LogWeightTerms(
            log_px_z1=self.eval_log_likelihood(x, z1) if for_estimate else self.log_likelihood(x, z1),
            log_pz1_z2=log_normal(z1, prior_mean, prior_log_var).sum(-1),
            log_pz2=self.log_prior(z2),
            log_qz1=log_normal(z1, mean, log_var).sum(-1),
            log_qz2=log_normal(z2, mean2, log_var2).sum(-1),
            mean2=mean2,
            log_var2=log_var2,
        )

    # -- objectives ---------------------------------------------------------------------------
    def objective_terms(self, x: Tensor, k: int, beta: float = 1.0) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The VAE's terms (``loss``, ``elbo``, ``recon`` = E_q log p(x|z1), ``kl``, and ``bound`` = L_k for
        objective=iwae), with the posterior means and log-variances of (z1, z2) concatenated, (B, J1 + J2):
        z2's at the first sample of z1, as the authors' active-unit count takes them."""
        mean, log_var = self.posterior(x)
        t = self.log_weight_terms(x, mean, log_var, self.noise(k, mean))
        if self.kl == "sampled":
            kl = t.log_qz1 + t.log_qz2 - t.log_pz1_z2 - t.log_pz2
        else:
            neg_entropy_z1 = -0.5 * (LOG_2PI + 1.0 + log_var).sum(-1)  # E_q(z1|x) log q(z1|x), closed form
            kl = neg_entropy_z1 - t.log_pz1_z2 + kl_standard_normal(t.mean2, t.log_var2)
        recon, kl = t.log_px_z1.mean(0), kl.mean(0)
        terms = {"elbo": elbo(recon, kl).mean(), "recon": recon.mean(), "kl": kl.mean()}
        if self.objective == "iwae":
            bound = iwae_bound(t.log_w).mean()
            terms |= {"bound": bound, "loss": -bound}
        else:
            terms["loss"] = -elbo(recon, kl, beta).mean()
        return terms, torch.cat([mean, t.mean2[0]], -1), torch.cat([log_var, t.log_var2[0]], -1)

    def log_weights(self, x: Tensor, mean: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
        """log w of the samples drawn from eps (n, B, J1 + J2) through q(z1|x) of (mean, log_var): shape (n, B)."""
        return self.log_weight_terms(x, mean, log_var, eps, for_estimate=True).log_w

    # -- active units per layer ---------------------------------------------------------------
    def observe_latents(self, stage: str, mean: Tensor, y: Tensor) -> None:
        """``<stage>/active_units`` over E_q[z1|x], ``<stage>/active_units_z2`` over E_q[z2|z1] (columns J1 on)."""
        super().observe_latents(stage, mean[:, : self.latent_dim], y)
        metric = self.val_active_units_z2 if stage == "val" else self.test_active_units_z2
        metric.update(mean[:, self.latent_dim :])
        self.log(f"{stage}/active_units_z2", metric, on_step=False, on_epoch=True)

    def train_active_units_z2(self, x: Tensor) -> Tensor:
        """Active z2 units over the images ``x``: Var_x of q(z2|z1)'s mean at one draw z1 ~ q(z1|x) (the authors'
        ``get_units_variances``)."""
        with torch.no_grad():
            means = []
            for xb in x.split(500):
                mean, log_var = self.posterior(xb.to(self.device))
                means.append(self.posterior2(reparameterize(mean, log_var, torch.randn_like(mean)))[0])
        return count_active_units(torch.cat(means), self.active_threshold)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # test/active_units_train: z1
        if self.active_units_train:
            x = self.train_images("active_units_train", self.active_units_train)
            self.log("test/active_units_train_z2", self.train_active_units_z2(x))

    # -- capabilities the picture callbacks use -----------------------------------------------
    def sample_prior(self, n: int) -> Tensor:
        """n codes z1 ~ p(z1) = E_{z2 ~ N(0, I)} p(z1|z2), (n, J1): what ``decode`` and ``sample`` take."""
        z2 = torch.randn(n, self.latent_dim2, device=self.device)
        mean, log_var = self.prior1(z2)
        return reparameterize(mean, log_var, torch.randn_like(mean))
