"""VaDE's autoencoder pretraining as a stage of its own: optimizer, batch size, epochs, loss and data from config.

``model/pretrain=dec`` (conf/model/pretrain/dec.yaml) is DEC's own recipe (Xie et al., 2016, as run in
XifengGuo/DEC-keras: autoencoder + k-means 87.93 % on all of MNIST): SGD lr 1.0 momentum 0.9, batch 256, squared
error on pixels in [0, 1], all 70,000 images. The stage runs once, before VaDE's first epoch, on the model's own
encoder mean and decoder; the mixture prior is then fitted to the codes of the same images (``VaDE.fit_prior``).

Why the loss is taken on the decoder's mean under VaDE's likelihood (``E[x|z]``, not a head of its own): the
decoder pretraining trains must be the decoder VaDE's ELBO reads. An autoencoder with a linear output trained on
squared error and then read through a Bernoulli decoder's sigmoid (or the reverse) starts VaDE from a decoder
that no longer reconstructs, and VaDE's first epochs drag the codes away from the clusters of the start (an
autoencoder scoring ~86 % with k-means fell to ~57 % inside VaDE in slim1017/VaDE issue #5). Here ``loss: mse``
with ``likelihood: gaussian_fixed`` is DEC's linear output and squared error exactly; with ``likelihood:
bernoulli`` it is squared error on the sigmoid; ``loss: nll`` is the likelihood's own -log p(x|z) per pixel.

Labels only score the start (``pretrain/acc`` every ``eval_every`` epochs: a GMM fitted like the initialisation,
Hungarian-matched accuracy on every image of the train, val and test splits); nothing trained or chosen reads them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from genlab.callbacks.stage_epoch import stage_epoch_end
from genlab.checks import ConfigError, one_of, positive_int
from genlab.losses.vade import gmm_responsibilities
from genlab.metrics.clustering import clustering_scores
from genlab.models.base import OptimizerFactory
from genlab.models.mixture_start import initial_mixture

if TYPE_CHECKING:
    from genlab.models.vade import VaDE

PRETRAIN_LOSSES = ("mse", "nll")
# train: the datamodule's training split | all: train + val + test (DEC and VaDE fit all 70,000 MNIST images)
PRETRAIN_DATA = ("train", "all")
SPLITS = ("train", "val", "test")
ENCODE_BATCH = 1024


def split_images(model: VaDE, splits: tuple[str, ...], key: str) -> tuple[Tensor, Tensor]:
    """The images and labels of ``splits`` of the model's datamodule, concatenated (CPU tensors)."""
    datamodule = model.trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "split_tensors"):
        raise ConfigError(f"{key} needs a datamodule with split_tensors() (the array datamodules); got {datamodule!r}")
    parts = [datamodule.split_tensors(s) for s in splits]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def encoder_outputs(model: VaDE, x: Tensor) -> tuple[Tensor, Tensor]:
    """E_q[z|x] and the encoder's raw (unshifted) log-variance for images x, each (N, J), in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model.encoder(xb.to(model.device)) for xb in x.split(ENCODE_BATCH)])
    model.train(was_training)
    means, raw_log_vars = out.chunk(2, dim=-1)
    return means, raw_log_vars


def gmm_start_scores(model: VaDE, codes: Tensor, all_codes: Tensor, labels: Tensor, seed: int) -> dict[str, float]:
    """acc/nmi/ari of the mixture the initialisation would fit on ``codes`` (same method, restarts and seed), on
    ``all_codes``: argmax_c of its responsibilities."""
    (weights, means, variances), _ = initial_mixture(codes.double().cpu().numpy(), model.n_clusters, model.prior_init,
                                                     model.gmm_n_init, seed)
    params = [torch.as_tensor(a) for a in (np.log(weights), means, np.log(variances))]
    clusters = gmm_responsibilities(all_codes.double().cpu(), *params).argmax(-1)
    return clustering_scores(clusters.numpy(), labels.cpu().numpy())


def log_rows(model: VaDE, metrics: dict[str, float], step: int) -> None:
    """Write ``metrics`` to every logger of the run at ``step`` (outside Lightning's loop: no self.log here)."""
    for logger in model.loggers:
        logger.log_metrics(metrics, step=step)


class AutoencoderPretraining:
    """Trains a VaDE's encoder mean and decoder as an autoencoder for ``epochs`` before the GMM initialisation.

    ``optimizer`` is a partial optimizer (its own, not VaDE's); ``loss`` is ``mse``: mean over pixels and batch of
    (E[x|z = E_q[z|x]] - x)^2, or ``nll``: -log p(x|z = E_q[z|x]) / D, batch mean; ``data`` picks the images;
    ``eval_every`` > 0 scores the start every that many epochs and at the last (0: only the start VaDE gets).
    """

    def __init__(
        self,
        optimizer: OptimizerFactory,
        epochs: int = 50,
        batch_size: int = 256,
        loss: str = "mse",
        data: str = "all",
        eval_every: int = 5,
    ) -> None:
        if not callable(optimizer):
            raise ConfigError(f"pretrain.optimizer={optimizer!r} is not accepted: expected a partial optimizer "
                              "(_target_: torch.optim.SGD, _partial_: true)")
        self.optimizer_factory = optimizer
        self.epochs = positive_int("pretrain.epochs", epochs)
        self.batch_size = positive_int("pretrain.batch_size", batch_size)
        self.loss = one_of("pretrain.loss", loss, PRETRAIN_LOSSES)
        self.data = one_of("pretrain.data", data, PRETRAIN_DATA)
        self.eval_every = positive_int("pretrain.eval_every", eval_every, allow_zero=True)
        # While the stage runs (and in the checkpoints written then): the seed it drew, the epochs done, the
        # optimizer's and the shuffle's states and the seconds spent; None before it starts and once it is done.
        self.progress: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (f"AutoencoderPretraining(epochs={self.epochs}, batch_size={self.batch_size}, loss={self.loss!r}, "
                f"data={self.data!r}, eval_every={self.eval_every})")

    def reconstruction_loss(self, model: VaDE, x: Tensor) -> Tensor:
        """The stage's loss on a batch x: squared error of the decoder mean (``mse``) or -log p(x|z) / D (``nll``)."""
        params = model.decoder_params(model.encode(x))
        flat = x.flatten(1)
        if self.loss == "mse":
            return (model.likelihood.mean(params) - flat).pow(2).mean()
        return -model.likelihood.log_prob(flat, params).mean() / flat.shape[1]

    def scored(self, epoch: int) -> bool:
        return epoch == self.epochs or (self.eval_every > 0 and epoch % self.eval_every == 0)

    def state_dict(self) -> dict[str, Any] | None:
        """The stage's progress for a checkpoint (None when it is not running)."""
        return self.progress

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Progress from a checkpoint written during the stage: :meth:`run` goes on after its last epoch."""
        self.progress = state

    @property
    def resumed_seed(self) -> int | None:
        """The seed of a stage restored mid-way (the restored global RNG is already past its draw), else None."""
        return None if self.progress is None else int(self.progress["seed"])

    def run(self, model: VaDE, seed: int) -> tuple[Tensor, Tensor]:
        """Pretrain ``model`` in place; return the codes (E_q[z|x], raw log-variances) of the stage's images.

        Every scored epoch logs ``pretrain/epoch``, ``pretrain/loss``, ``pretrain/acc|nmi|ari`` and
        ``pretrain/minutes`` (step = the pretraining epoch) and prints one line. Every epoch ends in
        ``on_stage_epoch_end`` of the trainer's callbacks (last.ckpt saved, a signal obeyed); a stage restored from
        such a checkpoint (:meth:`load_state_dict`) goes on from there to the weights of one never stopped.
        """
        x, _ = split_images(model, SPLITS if self.data == "all" else ("train",), "model.pretrain")
        x_all, y_all = split_images(model, SPLITS, "model.pretrain")
        params = [*model.encoder.parameters(), *model.decoder.parameters()]
        optimizer = self.optimizer_factory(params)
        shuffle = torch.Generator().manual_seed(seed)
        first, spent = 1, 0.0
        if self.progress is not None:
            optimizer.load_state_dict(self.progress["optimizer"])
            shuffle.set_state(self.progress["shuffle"])
            first, spent = int(self.progress["epochs_done"]) + 1, float(self.progress["seconds"])
        start = time.perf_counter() - spent
        was_training = model.training
        model.train()
        for epoch in range(first, self.epochs + 1):
            total = torch.zeros((), dtype=torch.float64)
            for idx in torch.randperm(len(x), generator=shuffle).split(self.batch_size):
                xb = x[idx].to(model.device)
                loss = self.reconstruction_loss(model, xb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                model.ensure_finite(loss, "pretrain/loss")
                optimizer.step()
                total += loss.detach().double().cpu() * len(idx)
            if self.scored(epoch):
                self.log_epoch(model, epoch, float(total) / len(x), (x, x_all, y_all), seed, start)
            self.progress = {"seed": seed, "epochs_done": epoch, "optimizer": optimizer.state_dict(),
                             "shuffle": shuffle.get_state(), "seconds": time.perf_counter() - start}
            if epoch < self.epochs:  # after the last, the prior is fitted first: the next checkpoint has it
                stage_epoch_end(model.trainer, model, "pretrain", epoch)
        self.progress = None
        model.train(was_training)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank ran the same stage from the same seed; rank zero's weights make the replicas equal for sure
            for tensor in params:
                torch.distributed.broadcast(tensor.data, src=0)
        return encoder_outputs(model, x)

    def log_epoch(self, model: VaDE, epoch: int, loss: float, data: tuple[Tensor, Tensor, Tensor], seed: int,
                  start: float) -> None:
        """Log and print the scored epoch's loss and the start a GMM fitted now would give (``data``: the stage's
        images, every image, every label)."""
        x, x_all, y_all = data
        row: dict[str, Any] = {"pretrain/epoch": epoch, "pretrain/loss": loss}
        codes, _ = encoder_outputs(model, x)
        all_codes, _ = encoder_outputs(model, x_all)
        scores = gmm_start_scores(model, codes, all_codes, y_all, seed)
        row |= {f"pretrain/{k}": v for k, v in scores.items()}
        row["pretrain/minutes"] = (time.perf_counter() - start) / 60
        log_rows(model, row, step=epoch)
        if model.global_rank == 0:
            print(f"pretrain epoch {epoch}/{self.epochs}: loss {loss:.5f}, start acc {scores['acc']:.4f} nmi "
                  f"{scores['nmi']:.4f} ({row['pretrain/minutes']:.1f} min)", flush=True)


def start_scores(model: VaDE) -> dict[str, float]:
    """acc/nmi/ari of argmax_c gamma_c under the just-fitted prior on every image of the train, val and test splits."""
    x, y = split_images(model, SPLITS, "the start's scores")
    means, _ = encoder_outputs(model, x)
    with torch.no_grad():
        clusters = gmm_responsibilities(means, *model.prior_params()).argmax(-1)
    return clustering_scores(np.asarray(clusters.cpu()), y.cpu().numpy())
