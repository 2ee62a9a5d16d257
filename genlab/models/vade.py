"""VaDE (Jiang et al., 2017): a VAE whose prior is a learnable mixture of K Gaussians, so it clusters as it generates.

Schedule inside one run: ``pretrain_epochs`` epochs as a plain autoencoder on the encoder mean, then a
diagonal Gaussian mixture (scikit-learn) fitted to the training latent means initialises (pi, mu_c, s_c^2),
then the VaDE ELBO. The cluster of x is argmax_c gamma_c at the posterior mean.

Why the VaDE phase starts with a small q(z|x) variance and (optionally) a lower learning rate: pretraining
trains only the encoder mean, so the log-variance head still outputs ~0, i.e. q variance ~1, while the fitted
components have variances ~0.1 (digits). The first VaDE steps then sample z across every component; the
sum_j s~_j^2 / s_cj^2 term and the noisy gamma pull all means to one point, and the model stays there
(one cluster, NMI 0). ``posterior_var_init`` shifts the log-variance so q starts at that fraction of the
smallest component variance of each latent dimension; ``finetune_lr_factor`` scales the learning rate of
the VaDE phase (on 8x8 digits a 2.6M-parameter net at the pretraining rate merges clusters in one epoch).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from genlab.checks import ConfigError, fraction, one_of, positive, positive_int
from genlab.losses.distributions import floor_log_var
from genlab.losses.vade import gmm_log_density, gmm_log_responsibilities, gmm_responsibilities, vade_kl
from genlab.metrics.clustering import ClusteringScores
from genlab.models.lr_schedules import constant
from genlab.models.mixture_start import PRIOR_INIT, initial_mixture
from genlab.models.vade_pretrain import AutoencoderPretraining, log_rows, start_scores
from genlab.models.vae import VAE

# Where the clustering scores come from at test time: the test split (test/acc ...), or also every image of the
# train, val and test splits (test/all_acc ...: the VaDE paper's 94.46% is on all 70,000 MNIST images).
EVAL_ON = ("test", "all")


def distributed() -> bool:
    """Whether this process is one of several in an initialised torch.distributed group (a DDP run)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def after_pretraining(epoch: int, start: int, factor: float, schedule: Callable[[int], float]) -> float:
    """1 for epoch < start (autoencoder pretraining), then factor * schedule(epoch - start)."""
    return 1.0 if epoch < start else factor * schedule(epoch - start)


class VaDE(VAE):
    """A :class:`VAE` with p(z, c) = pi_c N(z; mu_c, diag s_c^2); other keyword arguments are the VAE's."""

    def __init__(
        self,
        *args: Any,
        n_clusters: int = 10,
        pretrain_epochs: int = 10,
        gmm_n_init: int = 1,
        prior_init: str = "gmm",
        posterior_var_init: float | None = 0.1,
        finetune_lr_factor: float = 1.0,
        eval_on: str = "test",
        pretrain: AutoencoderPretraining | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.n_clusters = positive_int("n_clusters", n_clusters)
        self.pretrain_epochs = positive_int("pretrain_epochs", pretrain_epochs, allow_zero=True)
        self.gmm_n_init = positive_int("gmm_n_init", gmm_n_init)
        self.prior_init = one_of("prior_init", prior_init, PRIOR_INIT)
        if posterior_var_init is not None:
            positive("posterior_var_init", posterior_var_init)
        self.posterior_var_init = posterior_var_init
        self.finetune_lr_factor = fraction("finetune_lr_factor", finetune_lr_factor, open_high=False)
        self.eval_on = one_of("eval_on", eval_on, EVAL_ON)
        # model/pretrain=...: a stage of its own before epoch 0 (genlab/models/vade_pretrain.py), instead of the
        # pretrain_epochs inside the loop at VaDE's optimizer
        if pretrain is not None and not isinstance(pretrain, AutoencoderPretraining):
            raise ConfigError(f"pretrain={pretrain!r} is not accepted: expected null or a pretraining stage "
                              "(model/pretrain=dec)")
        if pretrain is not None and self.pretrain_epochs:
            raise ConfigError(f"pretrain_epochs={pretrain_epochs!r} is not accepted with model.pretrain set: expected 0 "
                              "(the pretraining stage runs before the first epoch)")
        self.pretrain = pretrain
        self.start: dict[str, float] = {}  # the start's clustering scores (log_start), kept in checkpoints
        lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if self.lr_min is not None and self.lr_min > self.finetune_lr_factor * lr:
            # the floor would lift the whole VaDE phase above the rate finetune_lr_factor asks for
            raise ConfigError(
                f"lr_min={self.lr_min!r} is not accepted with finetune_lr_factor={finetune_lr_factor!r}: expected null "
                f"or a number in [0, finetune_lr_factor x optimizer.lr = {self.finetune_lr_factor * lr!r}]"
            )
        self.mixture_logits = nn.Parameter(torch.zeros(n_clusters))
        self.cluster_means = nn.Parameter(torch.randn(n_clusters, self.latent_dim))
        self.cluster_log_vars = nn.Parameter(torch.zeros(n_clusters, self.latent_dim))
        # Saved in checkpoints, so a resumed run does not refit the mixture over a trained prior.
        self.register_buffer("prior_fitted", torch.tensor(False))
        # Added to the encoder's raw log-variance (per latent dim); set with the mixture, kept in checkpoints.
        self.register_buffer("log_var_shift", torch.zeros(self.latent_dim))
        self.val_clusters = ClusteringScores()
        self.test_clusters = ClusteringScores()

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (floored) log-variance of q(z|x), the raw log-variance shifted by ``log_var_shift``."""
        mean, raw = self.encoder(x).chunk(2, dim=-1)
        return mean, floor_log_var(raw + self.log_var_shift, self.encoder_min_log_var)

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

    def fit_prior(self, latent_means: Tensor, seed: int, raw_log_vars: Tensor | None = None) -> GaussianMixture | None:
        """Initialise (pi, mu_c, s_c^2) from the mixture ``prior_init`` fits to latent means (N, J); return the
        GaussianMixture where that is EM's (``gmm``: the best of ``gmm_n_init`` EM restarts by log-likelihood;
        ``kmeans``: the moments of the best of ``gmm_n_init`` k-means partitions; genlab/models/mixture_start.py).
        With ``raw_log_vars`` (the encoder's unshifted log-variances on the same data) and ``posterior_var_init``
        set, ``log_var_shift`` makes the data-average log q-variance of dim j equal
        log(posterior_var_init * min_c s_cj^2).

        Under DDP rank zero alone fits and broadcasts the prior to the other ranks (which return None): DDP
        broadcasts parameters only when it wraps the model, so replicas fitted apart could start out of step.
        """
        gmm = None
        if not distributed() or torch.distributed.get_rank() == 0:
            (weights, means, variances), gmm = initial_mixture(latent_means.detach().double().cpu().numpy(),
                                                                self.n_clusters, self.prior_init, self.gmm_n_init, seed)
            with torch.no_grad():
                self.mixture_logits.copy_(torch.as_tensor(np.log(weights)))
                self.cluster_means.copy_(torch.as_tensor(means))
                self.cluster_log_vars.copy_(torch.as_tensor(np.log(variances)))
                if raw_log_vars is not None and self.posterior_var_init is not None:
                    target = math.log(self.posterior_var_init) + self.cluster_log_vars.min(0).values
                    self.log_var_shift.copy_(target - raw_log_vars.to(target).mean(0))
        if distributed():
            self.broadcast_prior()
        with torch.no_grad():
            self.prior_fitted.fill_(True)
        return gmm

    def broadcast_prior(self) -> None:
        """Copy rank zero's (pi, mu_c, s_c^2) and ``log_var_shift`` to every rank (a collective: all ranks call it)."""
        tensors = (self.mixture_logits, self.cluster_means, self.cluster_log_vars, self.log_var_shift)
        payload = [[t.detach().cpu() for t in tensors]]
        torch.distributed.broadcast_object_list(payload, src=0)
        with torch.no_grad():
            for tensor, value in zip(tensors, payload[0], strict=True):
                tensor.copy_(value)

    @property
    def ddp_unused_parameters(self) -> str | None:
        """Why plain DDP (``find_unused_parameters=False``) cannot train this model; None when it can."""
        if self.pretrain_epochs:
            return (f"the mixture prior's parameters get no gradient while pretraining (model.pretrain_epochs="
                    f"{self.pretrain_epochs})")
        return None

    def training_latent_means(self, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
        """E_q[z|x] and the encoder's raw (unshifted) log-variance over the training set, each (N, J).

        Read from the datamodule's ``train_tensors()`` when it has them, else from its loader.
        """
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "train_tensors"):
            batches = datamodule.train_tensors()[0].split(batch_size)
        else:
            batches = (x for x, _ in self.trainer.train_dataloader)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            outputs = torch.cat([self.encoder(x.to(self.device)) for x in batches])
        self.train(was_training)
        means, raw_log_vars = outputs.chunk(2, dim=-1)
        return means, raw_log_vars

    def schedule_lr_factor(self) -> Callable[[int], float] | None:
        """Pretraining at the optimizer's rate, then ``finetune_lr_factor`` x the schedule counted from the VaDE start.

        ``lr_min`` (the VAE's) floors the product: the paper's 2e-3 x 0.9^(epoch // 10), never under 2e-4.
        """
        schedule = super().schedule_lr_factor()
        if schedule is None and self.finetune_lr_factor == 1.0:
            return None
        return functools.partial(
            after_pretraining, start=self.pretrain_epochs, factor=self.finetune_lr_factor, schedule=schedule or constant
        )

    # -- Lightning ----------------------------------------------------------------------------
    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.pretrain_epochs and not bool(self.prior_fitted)

    def on_train_epoch_start(self) -> None:
        if not self.pretraining and not bool(self.prior_fitted):
            # a stage resumed mid-way keeps the seed it drew: the restored global RNG is already past that draw
            resumed = self.pretrain.resumed_seed if self.pretrain is not None else None
            seed = int(torch.randint(2**31 - 1, ()).item()) if resumed is None else resumed
            if self.pretrain is not None:
                means, raw_log_vars = self.pretrain.run(self, seed)
            else:
                means, raw_log_vars = self.training_latent_means()
            self.fit_prior(means, seed, raw_log_vars)
            self.log_start()

    def log_start(self) -> None:
        """Log ``init/acc|nmi|ari`` on all splits: the clustering VaDE starts from (autoencoder + GMM or k-means)."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "split_tensors"):
            return
        scores = self.start = start_scores(self)
        log_rows(self, {f"init/{k}": v for k, v in scores.items()}, step=self.global_step)
        if self.global_rank == 0:
            print(f"VaDE start (autoencoder + {PRIOR_INIT[self.prior_init]}) at epoch {self.current_epoch}: "
                  f"acc {scores['acc']:.4f} nmi {scores['nmi']:.4f} ari {scores['ari']:.4f}", flush=True)

    def pretrain_loss(self, x: Tensor, inputs: Tensor | None = None) -> Tensor:
        """The autoencoder pretraining loss: -log p(x | z = E_q[z | inputs]), batch mean (no noise, no prior).

        ``inputs`` (default ``x``) is what the encoder sees, e.g. a corrupted ``x`` for denoising pretraining.
        """
        return -self.log_likelihood(x, self.encode(x if inputs is None else inputs)).mean()

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        if not self.pretraining:
            super().train_step(batch)
            return
        x, _ = batch
        loss = self.pretrain_loss(x)
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["vade_start"] = dict(self.start)
        progress = self.pretrain.state_dict() if self.pretrain is not None else None
        if progress is not None:  # a checkpoint written during the stage
            checkpoint["vade_pretrain"] = progress

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.start = dict(checkpoint.get("vade_start") or {})
        if self.pretrain is not None:
            self.pretrain.load_state_dict(checkpoint.get("vade_pretrain"))

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log_cluster_scores("test")
        # the "autoencoder + GMM" row beside VaDE's: where this run started, on all splits
        self.log_dict({f"test/init_{k}": float(v) for k, v in self.start.items()})
        if self.eval_on == "all":
            self.log_dict({f"test/all_{k}": v for k, v in self.all_split_scores().items()})

    def all_split_scores(self, batch_size: int = 1024) -> dict[str, Tensor]:
        """``acc``/``nmi``/``ari`` of argmax_c gamma_c over every image of the train, val and test splits together.

        Under DDP rank r scores the images r, r + W, r + 2W, ... of the three splits in a row, and the metric
        gathers the ranks' (cluster, label) pairs: every image counts once, as in one process.
        """
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "split_tensors"):
            raise ConfigError(
                f"eval_on='all' needs a datamodule with split_tensors() (the array datamodules); got {datamodule!r}"
            )
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        scores = ClusteringScores().to(self.device)
        offset = 0  # the position of the split's first image in the three splits in a row
        with torch.no_grad():
            for split in ("train", "val", "test"):
                x, y = datamodule.split_tensors(split)
                start = (rank - offset) % world_size
                offset += len(x)
                x, y = x[start::world_size], y[start::world_size]
                for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
                    # labels on the model's device too: the metric's gather (NCCL on GPUs) moves no CPU tensors
                    scores.update(self.cluster(xb.to(self.device)), yb.to(self.device))
        return scores.compute()

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
