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
        if not torch.isfinite(value).all():
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
        if self.grad_clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.ensure_finite(norm, f"gradient norm of {what}")
        optimizer.step()

    # -- evaluation ---------------------------------------------------------------------------
    def log_stage(self, stage: str, metrics: dict[str, Tensor], batch_size: int, **kwargs: Any) -> None:
        """Log ``metrics`` as ``<stage>/<name>``, averaged over the epoch and synced across processes."""
        self.log_dict(
            {f"{stage}/{k}": v for k, v in metrics.items()},
            batch_size=batch_size,
            sync_dist=stage != "train",
            **kwargs,
        )

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
