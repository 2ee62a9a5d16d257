"""The VAE and its IWAE head: a Gaussian encoder q(z|x), a decoder likelihood p(x|z) chosen by config, p(z) = N(0, I).

``objective=elbo`` trains on the ELBO (averaged over ``k`` samples); ``objective=iwae`` trains on the
k-sample importance-weighted bound L_k. Every VAE-family model reports, on the test split, log p(x)
estimated with ``eval_k`` importance samples (as ``test/nll``, nats) and the active units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from genlab.checks import ConfigError, fraction, one_of, positive, positive_int
from genlab.losses.distributions import floor_log_var, log_normal, log_standard_normal, reparameterize
from genlab.losses.elbo import elbo, kl_standard_normal, kl_warmup_beta
from genlab.losses.iwae import iwae_bound, log_importance_weights
from genlab.losses.likelihoods import DecoderLikelihood
from genlab.metrics.active_units import ActiveUnits, count_active_units
from genlab.metrics.likelihood import (
    bernoulli_log_prob,
    checked_eval_precision,
    eval_matmuls,
    importance_weighted_log_likelihood,
)
from genlab.models.base import GenerativeModule, OptimizerFactory
from genlab.models.lr_schedules import LR_SCHEDULES, floored, step_decay

NetFactory = Callable[..., nn.Module]
OBJECTIVES = ("elbo", "iwae")
KL_ESTIMATORS = ("analytic", "sampled")
OUTPUT_BIAS_INITS = ("none", "data")
# Burda et al.'s get_train_bias: the per-pixel training mean is clipped to [1e-3, 1 - 1e-3] before the log-odds.
OUTPUT_BIAS_CLIP = 1e-3


def final_linear(net: nn.Module) -> nn.Linear | None:
    """The net's last module that holds parameters, when it is an nn.Linear (None otherwise)."""
    with_params = [m for m in net.modules() if any(True for _ in m.parameters(recurse=False))]
    return with_params[-1] if with_params and isinstance(with_params[-1], nn.Linear) else None


class VAE(GenerativeModule):
    """Variational autoencoder (Kingma & Welling) with an optional importance-weighted objective (Burda et al.).

    Shapes: the encoder maps ``data_shape`` to ``(2 * latent_dim,)`` (mean, raw log-variance); the decoder
    maps ``(latent_dim,)`` to ``(P * C, *rest)`` where P is the likelihood's number of parameter sets.
    ``kl=analytic`` uses the closed-form KL, ``kl=sampled`` the one-sample log q(z|x) - log p(z); with
    ``kl=sampled`` and k=1 the ELBO objective is term for term the IWAE objective at k=1.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        encoder: NetFactory,
        decoder: NetFactory,
        optimizer: OptimizerFactory | None = None,
        latent_dim: int = 20,
        likelihood: str = "bernoulli",
        min_log_var: float = -6.0,
        fixed_variance: float = 1.0,
        encoder_min_log_var: float = -12.0,
        objective: str = "elbo",
        k: int = 1,
        kl: str = "analytic",
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        eval_k: int = 5000,
        eval_chunk: int = 500,
        eval_precision: str | int = "32",
        active_threshold: float = 0.01,
        active_units_train: int = 0,
        init_output_bias: str = "none",
        lr_schedule: str = "constant",
        lr_decay: float = 0.9,
        lr_decay_every: int = 10,
        lr_min: float | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        grad_clip_norm: float | None = None,
    ) -> None:
        super().__init__(data_shape, optimizer, monitor, monitor_mode, grad_clip_norm)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.likelihood = DecoderLikelihood(likelihood, min_log_var, fixed_variance)
        self.encoder_min_log_var = float(encoder_min_log_var)
        self.objective = one_of("objective", objective, OBJECTIVES)
        self.k = positive_int("k", k)
        self.kl = one_of("kl", kl, KL_ESTIMATORS)
        self.beta = positive("beta", beta, allow_zero=True)
        self.kl_warmup_steps = positive_int("kl_warmup_steps", kl_warmup_steps, allow_zero=True)
        if self.objective == "iwae" and (beta != 1.0 or kl_warmup_steps):
            raise ConfigError(
                f"beta={beta!r} with kl_warmup_steps={kl_warmup_steps!r} is not accepted with objective=iwae: "
                "the importance-weighted bound has no separate KL term to weight; expected beta=1.0 and "
                "kl_warmup_steps=0"
            )
        self.eval_k = positive_int("eval_k", eval_k)
        self.eval_chunk = positive_int("eval_chunk", eval_chunk)
        self.eval_precision = checked_eval_precision(eval_precision)
        self.lr_schedule = one_of("lr_schedule", lr_schedule, LR_SCHEDULES)
        self.lr_decay = fraction("lr_decay", lr_decay, open_high=False)
        self.lr_decay_every = positive_int("lr_decay_every", lr_decay_every)
        self.lr_min = self.checked_lr_min(lr_min)
        self.encoder = encoder(in_shape=self.data_shape, out_shape=(2 * latent_dim,))
        out_channels = self.likelihood.n_params * self.data_shape[0]
        self.decoder = decoder(in_shape=(latent_dim,), out_shape=(out_channels, *self.data_shape[1:]))
        self.val_active_units = ActiveUnits(active_threshold)
        self.test_active_units = ActiveUnits(active_threshold)
        self.active_threshold = active_threshold
        self.active_units_train = positive_int("active_units_train", active_units_train, allow_zero=True)
        self.init_output_bias = one_of("init_output_bias", init_output_bias, OUTPUT_BIAS_INITS)
        if self.init_output_bias == "data":
            layer = final_linear(self.decoder)
            if likelihood != "bernoulli" or layer is None or layer.bias is None or layer.out_features != self.data_dim:
                raise ConfigError(
                    f"init_output_bias='data' needs likelihood=bernoulli (got {likelihood!r}) and a decoder ending "
                    f"in a Linear layer with a bias of {self.data_dim} outputs (an MLP); use init_output_bias=none"
                )

    # -- the model's distributions ------------------------------------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (floored) log-variance of q(z|x), each (B, J)."""
        mean, raw = self.encoder(x).chunk(2, dim=-1)
        return mean, floor_log_var(raw, self.encoder_min_log_var)

    def decoder_params(self, z: Tensor) -> Tensor:
        """The decoder's output for codes z of shape (..., J), flattened to (..., P * D)."""
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, self.latent_dim)).reshape(*lead, -1)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) for x (B, *data_shape) and z (..., B, J): shape (..., B)."""
        return self.likelihood.log_prob(x.flatten(1), self.decoder_params(z))

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) = sum_j log N(z_j; 0, 1)."""
        return log_standard_normal(z).sum(-1)

    def analytic_kl(self, z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
        """The closed-form KL(q(z|x) || p(z)), (B,); ``z`` is unused here but is the VaDE prior's input."""
        return kl_standard_normal(mean, log_var)

    def sample_posterior(self, mean: Tensor, log_var: Tensor, k: int) -> Tensor:
        """k reparameterized draws z = mean + sigma * eps, shape (k, B, J)."""
        eps = torch.randn((k, *mean.shape), dtype=mean.dtype, device=mean.device)
        return reparameterize(mean, log_var, eps)

    # -- objectives ---------------------------------------------------------------------------
    def objective_terms(self, x: Tensor, k: int, beta: float = 1.0) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Batch means of ``loss`` (the negative training objective), ``elbo``, ``recon`` = E_q log p(x|z), ``kl``
        (and ``bound`` = L_k for the IWAE objective), with the posterior mean and log-variance."""
        mean, log_var = self.posterior(x)
        z = self.sample_posterior(mean, log_var, k)
        log_px_z = self.log_likelihood(x, z)
        log_pz = self.log_prior(z)
        log_qz = log_normal(z, mean, log_var).sum(-1)
        # errata: the sampled KL is log q - log p (the log of the ratio), not log q / log p
        kl = log_qz - log_pz if self.kl == "sampled" else self.analytic_kl(z, mean, log_var).expand_as(log_px_z)
        recon, kl = log_px_z.mean(0), kl.mean(0)
        terms = {"elbo": elbo(recon, kl).mean(), "recon": recon.mean(), "kl": kl.mean()}
        if self.objective == "iwae":
            bound = iwae_bound(log_importance_weights(log_px_z, log_pz, log_qz)).mean()
            terms |= {"bound": bound, "loss": -bound}
        else:
            terms["loss"] = -elbo(recon, kl, beta).mean()
        return terms, mean, log_var

    def log_weights(self, x: Tensor, mean: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x) at z = mean + sigma * eps, for eps (n, B, J): shape (n, B)."""
        z = reparameterize(mean, log_var, eps)
        log_qz = log_normal(z, mean, log_var).sum(-1)
        return log_importance_weights(self.eval_log_likelihood(x, z), self.log_prior(z), log_qz)

    def eval_log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) as :meth:`log_likelihood`, for the k-sample estimate: in float32 (the cast is a no-op
        unless called under an autocast), the Bernoulli sum in its fast form."""
        params = self.decoder_params(z).float()
        if self.likelihood.kind == "bernoulli":
            return bernoulli_log_prob(x.flatten(1), params)
        return self.likelihood.log_prob(x.flatten(1), params)

    def noise(self, n: int, mean: Tensor) -> Tensor:
        """The standard-normal draws of n latent samples for q(z|x) of mean ``mean`` (B, J): (n, B, J)."""
        return torch.randn((n, *mean.shape), dtype=mean.dtype, device=mean.device)

    def log_marginal_likelihood(
        self, x: Tensor, k: int | None = None, chunk: int | None = None, workers: int | None = None
    ) -> Tensor:
        """Importance-weighted estimate of log p(x) per example, (B,), with ``k`` (default ``eval_k``) samples.

        Each chunk decodes ``chunk`` samples for every image of ``x`` in one pass (chunk x B rows per decoder
        matmul); on CPU the chunks run on ``workers`` threads (default: torch's intra-op thread count), and the
        estimate does not depend on how many. The decoder's matmuls run at ``eval_precision`` whatever the
        trainer's precision (an outer autocast is switched off); the log-sum-exp is float32.
        """
        if workers is None:
            workers = torch.get_num_threads() if x.device.type == "cpu" else 1
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            mean, log_var = self.posterior(x)
            return importance_weighted_log_likelihood(
                lambda eps: self.log_weights(x, mean, log_var, eps),
                lambda n: self.noise(n, mean),
                k or self.eval_k, chunk or self.eval_chunk, workers,
                context=eval_matmuls(self.eval_precision, [self.decoder]),
            )

    def set_output_bias(self, x: Tensor) -> None:
        """Decoder output bias = logit(clip(mean_n x_n, 1e-3, 1 - 1e-3)) per pixel (Burda et al.'s initialisation)."""
        layer = final_linear(self.decoder)
        assert layer is not None and layer.bias is not None  # checked in __init__
        p = x.flatten(1).double().mean(0).clamp(OUTPUT_BIAS_CLIP, 1 - OUTPUT_BIAS_CLIP)
        with torch.no_grad():
            layer.bias.copy_(torch.logit(p).to(layer.bias))

    def train_active_units(self, x: Tensor) -> Tensor:
        """Active units over the images ``x`` (Burda et al.: 500 training images): Var_x E_q[z_u|x] > threshold."""
        with torch.no_grad():
            means = torch.cat([self.encode(xb.to(self.device)) for xb in x.split(500)])
        return count_active_units(means, self.active_threshold)

    # -- Lightning ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint (which then overwrites the bias): a resumed run stays exact.
        if stage == "fit" and self.init_output_bias == "data":
            self.set_output_bias(self.train_images("init_output_bias"))

    def train_images(self, key: str, n: int | None = None) -> Tensor:
        """The first ``n`` (all) images of the datamodule's training split; ``key`` names the option needing them."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train_tensors"):
            raise ConfigError(f"{key} needs a datamodule with train_tensors() (the array datamodules); got {datamodule!r}")
        return datamodule.train_tensors()[0][:n]

    def on_test_epoch_end(self) -> None:
        if self.active_units_train:
            x = self.train_images("active_units_train", self.active_units_train)
            self.log("test/active_units_train", self.train_active_units(x))

    def checked_lr_min(self, lr_min: float | None) -> float | None:
        """``lr_min`` if None or a number in [0, optimizer.lr], else a ConfigError naming ``lr_min``."""
        if lr_min is None:
            return None
        positive("lr_min", lr_min, allow_zero=True)
        lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if lr is None:
            raise ConfigError(f"lr_min={lr_min!r} needs an explicit optimizer.lr to compare with; set it or lr_min=null")
        if lr_min > lr:
            raise ConfigError(f"lr_min={lr_min!r} is not accepted: expected null or a number in [0, optimizer.lr={lr!r}]")
        return float(lr_min)

    def epoch_lr_factor(self) -> Callable[[int], float] | None:
        """The schedule's factor of each epoch (for LambdaLR), floored at lr_min / lr; None for a constant rate."""
        factor = self.schedule_lr_factor()
        if factor is None or not self.lr_min:
            return factor
        return functools.partial(floored, schedule=factor, floor=self.lr_min / self.optimizer_factory.keywords["lr"])

    def schedule_lr_factor(self) -> Callable[[int], float] | None:
        """The learning-rate factor of each epoch from ``lr_schedule`` alone, None for a constant rate."""
        if self.lr_schedule == "constant":
            return None
        factor = LR_SCHEDULES[self.lr_schedule]
        if factor is step_decay:
            factor = functools.partial(step_decay, decay=self.lr_decay, every=self.lr_decay_every)
        return factor

    def configure_optimizers(self) -> Any:
        optimizer = super().configure_optimizers()
        factor = self.epoch_lr_factor()
        if optimizer is None or factor is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": LambdaLR(optimizer, factor)}

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # manual optimization: Lightning does not step schedulers itself
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        x, _ = batch
        beta = kl_warmup_beta(self.global_step, self.kl_warmup_steps, self.beta)
        terms, _, _ = self.objective_terms(x, self.k, beta)
        self.optimize(self.optimizers(), terms["loss"])
        terms["beta"] = torch.tensor(beta)
        self.log_stage("train", terms, batch_size=x.shape[0], on_step=True, on_epoch=True)

    def evaluate(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        return self.objective_terms(x, self.k)[0]

    def observe_latents(self, stage: str, mean: Tensor, y: Tensor) -> None:
        """Feed the epoch-level latent metrics (active units here) with a batch of posterior means."""
        metric = self.val_active_units if stage == "val" else self.test_active_units
        metric.update(mean)
        self.log(f"{stage}/active_units", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        terms, mean, _ = self.objective_terms(x, self.k)
        self.log_stage("val", terms, batch_size=x.shape[0], prog_bar=True)
        self.observe_latents("val", mean, y)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        terms, mean, _ = self.objective_terms(x, self.k)
        terms["nll"] = -self.log_marginal_likelihood(x).mean()
        self.log_stage("test", terms, batch_size=x.shape[0])
        self.observe_latents("test", mean, y)

    # -- capabilities the picture callbacks use -----------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """E_q[z|x], (B, J)."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """E[x|z] for codes (N, J), shaped (N, *data_shape)."""
        return self.likelihood.mean(self.decoder_params(z)).reshape(z.shape[0], *self.data_shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def sample_prior(self, n: int) -> Tensor:
        """n codes z ~ p(z), (n, J)."""
        return torch.randn(n, self.latent_dim, device=self.device)

    def sample(self, n: int) -> Tensor:
        """E[x|z] for z ~ p(z): n generated examples (decoder means, the usual way to show VAE samples)."""
        return self.decode(self.sample_prior(n))
