"""The base LightningModule every trained genlab model builds on: manual optimization, guarded steps, logging."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or Inf; the message names the quantity and the global step."""


class GenerativeModule(L.LightningModule):
    """Manual-optimization base: subclasses write ``training_step`` with :meth:`optimize` and ``evaluate``.

    Contract for subclasses:
    - ``evaluate(x, y) -> dict[str, Tensor]`` of batch-mean metrics; the base logs them as
      ``val/<name>`` and ``test/<name>`` (``loss`` among them).
    - optional capabilities the picture callbacks look for: ``encode(x)``, ``reconstruct(x)``,
      ``sample(n)``.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        optimizer: OptimizerFactory | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        grad_clip_norm: float | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.data_shape = tuple(int(s) for s in data_shape)
        self.optimizer_factory = optimizer
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.grad_clip_norm = grad_clip_norm
        # Filled by genlab.train with the resolved run config; stored in checkpoints as plain data.
        self.run_config: dict[str, Any] | None = None
        # Training metrics summed between the batches that hand them to Lightning (see log_stage).
        self._pending_train_metrics: dict[tuple[Any, ...], tuple[Tensor, int]] = {}

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    # -- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            return None
        return self.optimizer_factory(self.parameters())

    def ensure_finite(self, value: Tensor, what: str) -> None:
        """Raise :class:`NonFiniteError` naming ``what`` and the step if ``value`` holds NaN or Inf."""
        # A scalar (the usual loss or norm) is read once with item(): one op rather than isfinite, all and bool.
        finite = math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())
        if not finite:
            raise NonFiniteError(
                f"{what} is not finite ({value.detach().float().flatten()[:4].tolist()}) at global step "
                f"{self.global_step}, epoch {self.current_epoch}. Lower the learning rate, add "
                f"gradient clipping (model.grad_clip_norm) or check the data; the last good "
                f"checkpoint and the logs are kept."
            )

    def optimize(self, optimizer: torch.optim.Optimizer, loss: Tensor, what: str = "train/loss") -> None:
        """One guarded step: check the loss, zero grads, backward, check and clip grads, step."""
        self.ensure_finite(loss, what)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # Under 16-mixed the gradients here are still multiplied by the GradScaler's scale (it unscales inside
        # optimizer.step), so clip at scale * max_norm; and an overflowing step is expected now and then: the
        # scaler skips it and lowers the scale, so a non-finite norm is only an error without a scaler.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        if self.grad_clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm * scale)
        else:
            # The same norm of the per-tensor norms, computed by fused foreach kernels rather than a Python loop.
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if scaler is None:
            self.ensure_finite(norm, f"gradient norm of {what}")
        optimizer.step()

    # -- evaluation ---------------------------------------------------------------------------
    def log_stage(self, stage: str, metrics: dict[str, Tensor], batch_size: int, **kwargs: Any) -> None:
        """Log ``metrics`` as ``<stage>/<name>``, averaged over the epoch and synced across processes.

        Training metrics logged both per step and per epoch reach Lightning only on the batches whose step values
        the loggers write (every ``trainer.log_every_n_steps``-th, or when training stops) and on the epoch's first
        and last batches. In between they are summed here, one tensor op a batch, because each ``self.log`` call costs about
        as much as a small model's whole step on CPU. On a logged batch the skipped batches go to Lightning first
        as their batch-size-weighted mean with their total batch size, then the batch's own values: the epoch
        means still average every batch, and each logged step value is that batch's own.
        """
        logged = {f"{stage}/{k}": v for k, v in metrics.items()}
        if stage == "train" and kwargs.get("on_step") and kwargs.get("on_epoch") and "reduce_fx" not in kwargs:
            skipped = self._defer_train_metrics(logged, batch_size, kwargs)
            if skipped is None:
                return
            means, total = skipped
            if total:
                self.log_dict(means, batch_size=total, sync_dist=False, **kwargs)
        self.log_dict(logged, batch_size=batch_size, sync_dist=stage != "train", **kwargs)

    def _defer_train_metrics(
        self, logged: dict[str, Any], batch_size: int, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Tensor], int] | None:
        """Add a batch to the running sums; None while deferring, else the skipped batches' means and total size."""
        key = (tuple(logged), tuple(sorted(kwargs.items())))
        pending = self._pending_train_metrics
        if self._train_metrics_due():
            sums, total = pending.pop(key, (None, 0))
            return ({} if sums is None else dict(zip(logged, sums / total))), total
        values = torch.stack(
            [torch.as_tensor(v).detach().to(self.device, torch.get_default_dtype()).reshape(()) for v in logged.values()]
        )
        sums, total = pending.get(key, (torch.zeros_like(values), 0))
        pending[key] = (sums + values * batch_size, total + batch_size)
        return None

    def _train_metrics_due(self) -> bool:
        """Whether this training batch hands its metrics to Lightning: a logging step, a stop, an epoch's first or last.

        The first batch is never held back, so a model that logs only on some batches (its first and the logging
        steps, like the GAN) loses nothing at the epoch's end.
        """
        trainer = self._trainer
        if trainer is None:
            return True
        try:
            loop = trainer.fit_loop.epoch_loop
            return bool(trainer._logger_connector.should_update_logs or loop._is_training_done or loop.batch_idx == 0)
        except AttributeError:  # another Lightning's internals: hand every batch over, as self.log does
            return True

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log_stage("val", self.evaluate(x, y), batch_size=x.shape[0], prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log_stage("test", self.evaluate(x, y), batch_size=x.shape[0])

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genlab"] = {
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.run_config,
        }
