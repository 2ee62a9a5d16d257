"""The GAN of §7.2: a generator G(z) and a discriminator D(x) trained alternately with two optimizers.

Per training batch of m real samples (Lightning manual optimization, so mixed precision and DDP work):
``n_critic`` discriminator steps, each on the same real batch against m fresh generated samples (so an epoch
is one pass of generator steps over the data), then one generator step on m fresh samples. Only that net's
parameters get gradients (D's steps draw G's samples under no_grad; G's step toggles its optimizer, freezing
D), and each step goes through the base's guarded ``optimize``.
The objective comes from the ``loss`` config group (:mod:`genlab.losses.gan_losses`).

``updates: simultaneous`` (needs ``n_critic=1``) takes both steps from the same point instead: one generated
batch, D's gradient and G's gradient both at the parameters before either step, then both steps, as the PacGAN
reference trains (Blocks' ``GradientDescent`` on both losses through ``ali_algorithm``).

Packing (PacGAN, Lin et al. 2018): with ``pack=m`` the discriminator judges m samples at once. Every call goes
through :meth:`GAN.discriminate`, which concatenates each run of m consecutive samples of a batch into one
input of shape (m * d0, d1, ...) (real with real, fake with fake), so a batch of B samples gives B / m judgements;
the loss, WGAN-GP's interpolates and the metrics are unchanged otherwise. ``pack=1`` is the plain GAN.

Evaluation: samples from fixed noise (``eval_samples``, 2,500 as in the VEEGAN/PacGAN protocol) are scored
at every validation and test epoch: ``modes``/``hq``/``mode_kl`` on Gaussian-mixture toys (data modules with
``centers``), ``fd``/``precision``/``recall``/``classes``/``class_entropy`` on labelled images, in the features
of a classifier trained on the run's training data (:mod:`genlab.metrics.classifier`). ``<stage>/loss`` is the
headline sample metric, lower is better: ``mode_kl`` on mixtures, ``fd`` on images; on other data (moons,
swiss roll, or with ``sample_metrics: false``) it is the held-out discriminator loss.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genlab.checks import ConfigError, fraction, one_of, positive, positive_int
from genlab.losses.gan_losses import GANLoss
from genlab.metrics.classifier import FeatureClassifier, load_classifier, save_classifier, train_classifier
from genlab.metrics.features import ClassifierSampleMetrics
from genlab.metrics.modes import ModeCoverage
from genlab.models.base import GenerativeModule, OptimizerFactory
from genlab.nets.conv import as_image_shape

log = logging.getLogger("genlab")

NetFactory = Callable[..., nn.Module]
GENERATOR_OUTPUTS = ("identity", "sigmoid")
UPDATES = ("alternating", "simultaneous")
# Noise for evaluation samples comes from its own seeded streams: every validation epoch is scored on the same
# z, the test on other z (so a checkpoint chosen on val is scored on fresh samples), and scoring never moves
# the training RNG.
EVAL_NOISE_SEED = 2500
TEST_NOISE_SEED = 2501


def packed_shape(data_shape: Sequence[int], pack: int) -> tuple[int, ...]:
    """The discriminator's input shape under packing: (pack * d0, d1, ...) for samples of shape (d0, d1, ...)."""
    shape = tuple(int(d) for d in data_shape)
    return (pack * shape[0], *shape[1:])


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """(B, d0, d1, ...) -> (B // pack, pack * d0, d1, ...): row i concatenates samples i*pack .. i*pack + pack - 1.

    The concatenation is along the first sample axis: feature vectors side by side, images stacked as channels
    (as PacGAN packs images). A batch whose size is not a multiple of ``pack`` (a loader's last, partial batch)
    loses its last B mod pack samples; a batch of fewer than ``pack`` samples fills its one pack by repeating
    itself, so that no epoch stops on a short last batch.
    """
    if pack == 1:
        return x
    if x.shape[0] < pack:
        x = x.repeat(math.ceil(pack / x.shape[0]), *([1] * (x.dim() - 1)))
    rows = x.shape[0] // pack
    return x[: rows * pack].reshape(rows, pack * x.shape[1], *x.shape[2:])


def check_pack_batch(pack: int, batch_size: int | None) -> None:
    """A ConfigError unless the data's batch size is a multiple of ``pack`` (so every full batch packs exactly)."""
    if batch_size is not None and batch_size % pack != 0:
        raise ConfigError(
            f"data.batch_size={batch_size} is not accepted with model.pack={pack}: expected a multiple of "
            f"{pack} (the discriminator judges batch_size / pack packs of {pack} samples)"
        )


class GAN(GenerativeModule):
    """Generator and discriminator nets from config, a GAN loss object, two optimizers, optional generator EMA."""

    def __init__(
        self,
        data_shape: Sequence[int],
        generator: NetFactory,
        discriminator: NetFactory,
        loss: GANLoss,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        latent_dim: int = 64,
        n_critic: int = 1,
        pack: int = 1,
        updates: str = "alternating",
        generator_output: str = "identity",
        ema_decay: float | None = None,
        sample_metrics: bool = True,
        eval_samples: int = 2500,
        mode_n_std: float = 3.0,
        mode_min_count: int = 1,
        feature_classifier_path: str | None = None,
        feature_classifier_steps: int = 600,
        feature_classifier_max_samples: int | None = 20000,
        pr_k: int = 3,
        min_class_share: float | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        grad_clip_norm: float | None = None,
    ) -> None:
        super().__init__(data_shape, None, monitor, monitor_mode, grad_clip_norm)
        if not isinstance(loss, GANLoss):
            raise ConfigError(
                f"loss={loss!r} is not accepted: expected a genlab.losses.gan_losses.GANLoss "
                f"(choose one with loss=minimax|nonsaturating|wgan_gp|hinge|lsgan)"
            )
        self.loss = loss
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.n_critic = positive_int("n_critic", n_critic)
        self.pack = positive_int("pack", pack)
        self.updates = one_of("updates", updates, UPDATES)
        if self.updates == "simultaneous" and self.n_critic != 1:
            raise ConfigError(
                f"n_critic={n_critic} is not accepted with updates='simultaneous': expected 1 (each net takes one "
                "step from the same point)"
            )
        self.generator_output = one_of("generator_output", generator_output, GENERATOR_OUTPUTS)
        self.ema_decay = None if ema_decay is None else fraction("ema_decay", ema_decay)
        self.sample_metrics = bool(sample_metrics)
        self.eval_samples = positive_int("eval_samples", eval_samples)
        self.mode_n_std = float(positive("mode_n_std", mode_n_std))
        self.mode_min_count = positive_int("mode_min_count", mode_min_count)
        self.feature_classifier_path = feature_classifier_path
        self.feature_classifier_steps = positive_int("feature_classifier_steps", feature_classifier_steps)
        if feature_classifier_max_samples is not None:
            positive_int("feature_classifier_max_samples", feature_classifier_max_samples)
        self.feature_classifier_max_samples = feature_classifier_max_samples
        self.pr_k = positive_int("pr_k", pr_k)
        if min_class_share is not None:
            fraction("min_class_share", min_class_share, open_high=False)
        self.min_class_share = min_class_share
        self.optimizer_g_factory = optimizer_g
        self.optimizer_d_factory = optimizer_d

        self.generator = generator(in_shape=(self.latent_dim,), out_shape=self.data_shape)
        self.discriminator = discriminator(in_shape=packed_shape(self.data_shape, self.pack), out_shape=(1,))
        self.generator_ema: AveragedModel | None = None
        if self.ema_decay is not None:
            self.generator_ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True
            )
            self.generator_ema.requires_grad_(False)
        # Per-stage metric objects live outside the module tree: they hold a frozen classifier that must not
        # enter the checkpoint, the parameter list or the optimizers.
        self._metrics: dict[str, ModeCoverage | ClassifierSampleMetrics] = {}
        self.headline: str | None = None
        self.classifier_accuracy: float | None = None

    @property
    def ddp_unused_parameters(self) -> str | None:
        """Why plain DDP (``find_unused_parameters=False``) cannot train this model; None when it can."""
        return "the generator's steps leave the discriminator's parameters without gradients, and the other way round"

    # -- generation ---------------------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I) of shape (n, latent_dim) on the module's device."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z.to(self.device)

    def _squash(self, out: Tensor) -> Tensor:
        return out.sigmoid() if self.generator_output == "sigmoid" else out

    def generate(self, z: Tensor) -> Tensor:
        """G(z) from the net used for samples: the EMA generator when ``ema_decay`` is set, else the trained one."""
        net = self.generator_ema.module if self.generator_ema is not None else self.generator
        return self._squash(net(z))

    def sample(self, n: int) -> Tensor:
        """``n`` generated samples of shape (n, *data_shape)."""
        return self.generate(self.noise(n))

    # -- optimization -------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[discriminator optimizer, generator optimizer], each with its own lr and betas from config."""
        return [
            self.optimizer_d_factory(self.discriminator.parameters()),
            self.optimizer_g_factory(self.generator.parameters()),
        ]

    def discriminate(self, x: Tensor) -> Tensor:
        """D's outputs (B // pack, 1) on a batch of samples (B, *data_shape), packed ``pack`` at a time."""
        return self.discriminator(pack_samples(x, self.pack))

    def discriminator_objective(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """The loss's discriminator terms on a real and a (detached) generated batch; ``d_loss`` is minimised.

        The penalty (WGAN-GP) sees packed inputs: it interpolates between packed real and packed fake rows and
        constrains D's gradient with respect to the whole packed input.
        """
        real, fake = pack_samples(real, self.pack), pack_samples(fake, self.pack)
        real_out, fake_out = self.discriminator(real), self.discriminator(fake)
        d_loss = self.loss.discriminator_loss(real_out, fake_out)
        terms = {"d_real": real_out.detach().mean(), "d_fake": fake_out.detach().mean()}
        penalty = self.loss.penalty(self.discriminator, real, fake) if torch.is_grad_enabled() else None
        if penalty is not None:
            terms["penalty"] = penalty.detach()
            d_loss = d_loss + penalty
        terms["d_loss"] = d_loss
        return terms

    def train_step(self, batch: tuple[Tensor, Tensor]) -> None:
        x, _ = batch
        m = x.shape[0]
        opt_d, opt_g = self.optimizers()
        if self.updates == "simultaneous":
            d_terms, g_loss = self._simultaneous_steps(x, opt_d, opt_g)
        else:
            d_terms, g_loss = self._alternating_steps(x, opt_d, opt_g)
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        # Recorded only on the minibatches the loggers write and each epoch's first (so every epoch has a value):
        # the ``*_epoch`` values average those minibatches.
        if self.train_metrics_due():
            logged = {k: v.detach() for k, v in d_terms.items()} | {"g_loss": g_loss.detach()}
            self.log_stage("train", logged, batch_size=m, on_step=True, on_epoch=True, prog_bar=True)

    def _alternating_steps(self, x: Tensor, opt_d: Any, opt_g: Any) -> tuple[dict[str, Tensor], Tensor]:
        """``n_critic`` D steps on fresh fakes, then one G step on fresh noise against the updated D."""
        m = x.shape[0]
        for _ in range(self.n_critic):
            # No toggling for D's step: G runs under no_grad, so its parameters get no gradient either way.
            with torch.no_grad():
                fake = self._squash(self.generator(self.noise(m)))
            d_terms = self.discriminator_objective(x, fake)
            self.optimize(opt_d, d_terms["d_loss"], "train/d_loss")
        # G's step freezes D (Lightning's toggle), so its backward skips D's weight gradients.
        with self.toggled_optimizer(opt_g):
            g_loss = self.loss.generator_loss(self.discriminate(self._squash(self.generator(self.noise(m)))))
            self.optimize(opt_g, g_loss, "train/g_loss")
        return d_terms, g_loss

    def _simultaneous_steps(self, x: Tensor, opt_d: Any, opt_g: Any) -> tuple[dict[str, Tensor], Tensor]:
        """grad_G L_G(G, D) and grad_D L_D(G, D) at the same (G, D) and the same fakes G(z), then both steps.

        G steps first: its backward runs through D's weights before D's step changes them in place; D's loss then
        judges the very same fakes, detached, with those unchanged weights.
        """
        fake = self._squash(self.generator(self.noise(x.shape[0])))
        with self.toggled_optimizer(opt_g):
            g_loss = self.loss.generator_loss(self.discriminate(fake))
            self.optimize(opt_g, g_loss, "train/g_loss")
        d_terms = self.discriminator_objective(x, fake.detach())
        self.optimize(opt_d, d_terms["d_loss"], "train/d_loss")
        return d_terms, g_loss

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        """Held-out discriminator and generator losses (no penalty), and ``loss`` when no sample metric applies."""
        fake = self.sample(x.shape[0])
        terms = self.discriminator_objective(x, fake)
        out = {
            "d_loss": terms["d_loss"],
            "g_loss": self.loss.generator_loss(self.discriminate(fake)),
            "d_real": terms["d_real"],
            "d_fake": terms["d_fake"],
        }
        if self.headline is None:
            out["loss"] = terms["d_loss"]
        return out

    def setup(self, stage: str) -> None:
        """Build the sample metrics the data allows: mode coverage for mixtures, classifier metrics for images.

        Every process scores the same samples (same weights, same evaluation noise), so the metrics are not
        synchronised across processes: each rank holds the whole evaluation and logs the same values.
        """
        if self._trainer is None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        check_pack_batch(self.pack, getattr(dm, "batch_size", None))
        if not self.sample_metrics or self._metrics or dm is None:
            return
        centers = getattr(dm, "centers", None)
        if centers is not None:
            for s in ("val", "test"):
                self._metrics[s] = ModeCoverage(
                    centers, dm.std, self.mode_n_std, self.mode_min_count, sync_on_compute=False
                )
            self.headline = "mode_kl"
        elif self._is_image_data(dm):
            classifier = self._feature_classifier(dm)
            for s in ("val", "test"):
                self._metrics[s] = ClassifierSampleMetrics(
                    classifier, k=self.pr_k, min_class_share=self.min_class_share, sync_on_compute=False
                )
            self.headline = "fd"

    def _is_image_data(self, dm: Any) -> bool:
        try:
            _, h, w = as_image_shape("data_shape", self.data_shape)
        except ConfigError:
            return False
        return min(h, w) >= 4 and int(getattr(dm, "num_classes", 0) or 0) > 1

    def _feature_classifier(self, dm: Any) -> FeatureClassifier:
        """Load ``feature_classifier_path`` if it exists, else train on the training split and save it there.

        Under DDP rank zero decides whether the file exists, and alone trains and saves it; the other ranks wait for
        the file and load it, so that every rank scores with the very same classifier (GPU kernels need not train
        bit-identical nets on every rank) and none reads a file half written.
        """
        default = Path(self.trainer.default_root_dir) / "feature_classifier.pt"
        path = Path(self.feature_classifier_path) if self.feature_classifier_path else default
        strategy, distributed = self.trainer.strategy, self.trainer.world_size > 1
        exists = strategy.broadcast(path.is_file()) if distributed else path.is_file()
        if not exists:
            classifier, acc = None, 0.0
            if self.trainer.is_global_zero:
                classifier, acc = self._train_feature_classifier(dm, path)
            if distributed:
                strategy.barrier("feature classifier")
            if classifier is not None and not distributed:
                self.classifier_accuracy = acc
                return classifier
        classifier, acc = load_classifier(path)
        if classifier.in_shape != self.data_shape or classifier.num_classes != dm.num_classes:
            raise ConfigError(
                f"feature_classifier_path={str(path)!r} holds a classifier for shape {classifier.in_shape} "
                f"with {classifier.num_classes} classes; this data is {self.data_shape} with {dm.num_classes}"
            )
        log.info("feature classifier: loaded %s (held-out accuracy %.4f)", path, acc)
        self.classifier_accuracy = acc
        return classifier

    def _train_feature_classifier(self, dm: Any, path: Path) -> tuple[FeatureClassifier, float]:
        """Train the classifier on the training split (seed 0) and save it to ``path`` through a renamed temporary."""
        x, y = dm.train_tensors()
        device = self.trainer.strategy.root_device
        classifier, acc = train_classifier(
            x.to(device),
            y.to(device),
            dm.num_classes,
            steps=self.feature_classifier_steps,
            max_samples=self.feature_classifier_max_samples,
            seed=0,
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_classifier(classifier, tmp, acc)
        os.replace(tmp, path)  # whole or absent: another process (or a resumed run) never loads a partial file
        log.info("feature classifier: trained, held-out accuracy %.4f, saved to %s", acc, path)
        return classifier, acc

    def _real_images(self, stage: str) -> Tensor:
        dm = self.trainer.datamodule
        split = "test" if stage == "test" else "val"
        x = dm.split_tensors(split)[0] if hasattr(dm, "split_tensors") else dm.train_tensors()[0]
        return x[: self.eval_samples]

    @torch.no_grad()
    def score_samples(self, stage: str) -> dict[str, Tensor]:
        """The sample metrics of ``eval_samples`` generated from the fixed evaluation noise."""
        metric = self._metrics[stage].to(self.device)
        g = torch.Generator().manual_seed(TEST_NOISE_SEED if stage == "test" else EVAL_NOISE_SEED)
        if isinstance(metric, ClassifierSampleMetrics):
            if not metric.has_real:
                for chunk in self._real_images(stage).split(500):
                    metric.update_real(chunk.to(self.device))
        for start in range(0, self.eval_samples, 500):
            n = min(500, self.eval_samples - start)
            samples = self.generate(self.noise(n, generator=g)).float()
            if isinstance(metric, ClassifierSampleMetrics):
                metric.update_fake(samples)
            else:
                metric.update(samples)
        values = dict(metric.compute())
        metric.reset()
        return values

    def _log_sample_metrics(self, stage: str) -> None:
        if stage not in self._metrics:
            return
        values = self.score_samples(stage)
        values["loss"] = values[self.headline]
        self.log_stage(stage, values, batch_size=self.eval_samples)

    def on_validation_epoch_end(self) -> None:
        self._log_sample_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_sample_metrics("test")
