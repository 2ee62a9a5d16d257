"""VaDE (Jiang et al., 2017): a VAE whose prior is a learnable mixture of K Gaussians, so it clusters as it generates.

Schedule inside one run: ``pretrain_epochs`` epochs as a plain autoencoder on the encoder mean, then a
diagonal Gaussian mixture (scikit-learn) fitted to the training latent means initialises (pi, mu_c, s_c^2),
then the VaDE ELBO. The cluster of x is argmax_c gamma_c at the posterior mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from genlab.checks import positive_int
from genlab.losses.vade import gmm_log_density, gmm_log_responsibilities, gmm_responsibilities, vade_kl
from genlab.metrics.clustering import ClusteringScores
from genlab.models.vae import VAE


class VaDE(VAE):
    """A :class:`VAE` with p(z, c) = pi_c N(z; mu_c, diag s_c^2); other keyword arguments are the VAE's."""

    def __init__(self, *args: Any, n_clusters: int = 10, pretrain_epochs: int = 10, gmm_n_init: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.n_clusters = positive_int("n_clusters", n_clusters)
        self.pretrain_epochs = positive_int("pretrain_epochs", pretrain_epochs, allow_zero=True)
        self.gmm_n_init = positive_int("gmm_n_init", gmm_n_init)
        self.mixture_logits = nn.Parameter(torch.zeros(n_clusters))
        self.cluster_means = nn.Parameter(torch.randn(n_clusters, self.latent_dim))
        self.cluster_log_vars = nn.Parameter(torch.zeros(n_clusters, self.latent_dim))
        # Saved in checkpoints, so a resumed run does not refit the mixture over a trained prior.
        self.register_buffer("prior_fitted", torch.tensor(False))
        self.val_clusters = ClusteringScores()
        self.test_clusters = ClusteringScores()

    # -- the mixture prior --------------------------------------------------------------------
    def prior_params(self) -> tuple[Tensor, Tensor, Tensor]:
        """(log pi (K,), mu (K, J), log s^2 (K, J))."""
        return torch.log_softmax(self.mixture_logits, -1), self.cluster_means, self.cluster_log_vars

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) = log sum_c pi_c N(z; mu_c, diag s_c^2)."""
        return gmm_log_density(z, *self.prior_params())

    def analytic_kl(self, z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
        """KL(q(z, c|x) || p(z, c)) with q(c|x) = gamma(z) at the sampled z, as in the paper: (k, B)."""
        log_gamma = gmm_log_responsibilities(z, *self.prior_params())
        return vade_kl(mean, log_var, log_gamma, *self.prior_params())

    def responsibilities(self, x: Tensor) -> Tensor:
        """gamma_c = p(c | z = E_q[z|x]), (B, K)."""
        return gmm_responsibilities(self.encode(x), *self.prior_params())

    def cluster(self, x: Tensor) -> Tensor:
        """The cluster of each example: argmax_c gamma_c, (B,)."""
        return self.responsibilities(x).argmax(-1)

    def fit_prior(self, latent_means: Tensor, seed: int) -> GaussianMixture:
        """Initialise (pi, mu_c, s_c^2) from a diagonal GaussianMixture fitted to latent means (N, J)."""
        gmm = GaussianMixture(self.n_clusters, covariance_type="diag", n_init=self.gmm_n_init, random_state=seed).fit(
            latent_means.detach().double().cpu().numpy()
        )
        with torch.no_grad():
            self.mixture_logits.copy_(torch.as_tensor(np.log(gmm.weights_)))
            self.cluster_means.copy_(torch.as_tensor(gmm.means_))
            self.cluster_log_vars.copy_(torch.as_tensor(np.log(gmm.covariances_)))
            self.prior_fitted.fill_(True)
        return gmm

    def training_latent_means(self, batch_size: int = 1024) -> Tensor:
        """E_q[z|x] over the training set: the datamodule's ``train_tensors()`` when it has them, else its loader."""
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "train_tensors"):
            batches = datamodule.train_tensors()[0].split(batch_size)
        else:
            batches = (x for x, _ in self.trainer.train_dataloader)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            means = torch.cat([self.encode(x.to(self.device)) for x in batches])
        self.train(was_training)
        return means

    # -- Lightning ----------------------------------------------------------------------------
    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.pretrain_epochs and not bool(self.prior_fitted)

    def on_train_epoch_start(self) -> None:
        if not self.pretraining and not bool(self.prior_fitted):
            seed = int(torch.randint(2**31 - 1, ()).item())
            self.fit_prior(self.training_latent_means(), seed)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        if not self.pretraining:
            super().train_step(batch)
            return
        x, _ = batch
        # autoencoder pretraining: reconstruct x from the encoder mean, no noise and no prior
        loss = -self.log_likelihood(x, self.encode(x)).mean()
        self.optimize(self.optimizers(), loss, "train/pretrain_loss")
        self.log_stage("train", {"pretrain_loss": loss}, batch_size=x.shape[0], on_step=True, on_epoch=True)

    def observe_latents(self, stage: str, mean: Tensor, y: Tensor) -> None:
        super().observe_latents(stage, mean, y)
        clusters = self.val_clusters if stage == "val" else self.test_clusters
        clusters.update(gmm_responsibilities(mean, *self.prior_params()).argmax(-1), y)

    def log_cluster_scores(self, stage: str) -> None:
        """Log ``<stage>/acc``, ``<stage>/nmi`` and ``<stage>/ari`` over the epoch, then reset."""
        clusters = self.val_clusters if stage == "val" else self.test_clusters
        if clusters.update_count:
            self.log_dict({f"{stage}/{k}": v for k, v in clusters.compute().items()}, prog_bar=stage == "val")
        clusters.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_cluster_scores("val")

    def on_test_epoch_end(self) -> None:
        self.log_cluster_scores("test")

    # -- generation ---------------------------------------------------------------------------
    def sample_prior(self, n: int) -> Tensor:
        """n codes from the mixture: c ~ Cat(pi), z ~ N(mu_c, diag s_c^2)."""
        c = torch.multinomial(torch.softmax(self.mixture_logits, -1), n, replacement=True)
        return self.sample_cluster_codes(c)

    def sample_cluster_codes(self, c: Tensor) -> Tensor:
        """One code z ~ N(mu_c, diag s_c^2) for each cluster id in ``c``, (len(c), J)."""
        std = torch.exp(0.5 * self.cluster_log_vars[c])
        return self.cluster_means[c] + std * torch.randn_like(std)

    def sample_cluster(self, cluster: int, n: int) -> Tensor:
        """n generated examples from cluster ``cluster``: E[x|z], z ~ N(mu_c, diag s_c^2)."""
        return self.decode(self.sample_cluster_codes(torch.full((n,), cluster, device=self.device)))
