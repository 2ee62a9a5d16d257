"""The base LightningModule every trained genlab model builds on: manual optimization, guarded steps, logging."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor

from genlab.data.tensor_loader import Block
from genlab.models.train_log import AxisValue, TrainLog

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
TRAIN_LOG_ARGS = {"on_step", "on_epoch", "prog_bar"}  # training logs the base's TrainLog takes; others go to self.log
# The hooks Lightning's manual_backward calls around loss.backward(), on every callback and on the module.
BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def overrides_hook(obj: object, base: type, name: str) -> bool:
    """Whether ``obj``'s class defines hook ``name`` other than ``base``'s no-op (a listener for that hook)."""
    return getattr(type(obj), name, None) is not getattr(base, name)


def plain_backward_applies(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether ``manual_backward(loss)`` would do no more than ``module.backward(loss)`` plus hooks nobody implements.

    True for full precision (Lightning's plain ``Precision``) on one device (``SingleDeviceStrategy``), without a
    profiler, when no callback and not the module define ``on_before_backward``/``on_after_backward``. Mixed
    precision (loss scaling), DDP (gradient sync set-up) and profiled runs keep Lightning's path.
    """
    return (
        type(trainer.precision_plugin) is Precision
        and type(trainer.strategy) is SingleDeviceStrategy
        and isinstance(trainer.profiler, PassThroughProfiler)
        and not any(overrides_hook(module, L.LightningModule, h) for h in BACKWARD_HOOKS)
        and not any(overrides_hook(cb, L.Callback, h) for cb in trainer.callbacks for h in BACKWARD_HOOKS)
    )


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or Inf; the message names the quantity and the global step."""


class GenerativeModule(L.LightningModule):
    """Manual-optimization base: subclasses write ``train_step`` (one minibatch) with :meth:`optimize` and ``evaluate``.

    Contract for subclasses:
    - ``train_step(batch)``: the optimizer steps of one minibatch ``(x, y)``, each through :meth:`optimize`, and its
      training metrics through ``log_stage("train", ..., on_step=True, on_epoch=True)``. :meth:`training_step` runs
      it on every minibatch of a loader item: a :class:`~genlab.data.tensor_loader.Block` of several
      (``data.steps_per_block``), so that Lightning's per-item cost is paid once per block, or one plain batch.
    - ``evaluate(x, y) -> dict[str, Tensor]`` of batch-mean metrics; the base logs them as
      ``val/<name>`` and ``test/<name>`` (``loss`` among them).
    - an override of ``on_train_epoch_end`` calls ``super().on_train_epoch_end()`` (the epoch's training means
      reach Lightning there).
    - optional capabilities the picture callbacks look for: ``encode(x)``, ``reconstruct(x)``,
      ``sample(n)``.

    Training metrics: the loggers' x axis ("step") counts minibatches, as Lightning counts batches with one
    batch per loader item, whatever the grouping into blocks. Every ``trainer.log_every_n_steps``-th minibatch
    the base writes that minibatch's values (``train/<name>_step``) to the loggers itself; every minibatch is
    summed, one tensor op, into the epoch means (``train/<name>_epoch``), handed to Lightning once at the epoch's
    end. Validation, test and epoch rows carry the same minibatch count as their "step".
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
        # Minibatches between training rows: genlab.train sets it to trainer.log_every_n_steps and gives Lightning,
        # which counts loader items (blocks), the interval in items; None: the trainer's value, as a plain Trainer.
        self.log_every_n_minibatches: int | None = None
        self._train_log = TrainLog()
        self._plain_backward = False  # decided per fit in on_fit_start (plain_backward_applies)
        # (what, step, epoch, loss, gradient norm or None) of the optimizer steps not yet checked (optimize)
        self._unchecked_steps: list[tuple[str, int, int, Tensor, Tensor | None]] = []
        # The "step" and "epoch" of each stage's rows, as metrics (Lightning needs them as submodules).
        self.x_axis = torch.nn.ModuleDict(
            {f"{stage}_{key}": AxisValue() for stage in ("train", "val", "test") for key in ("step", "epoch")}
        )

    @property
    def batches_trained(self) -> int:
        """Minibatches trained so far in the run (the loggers' x axis), over all loader items and resumes."""
        return self._train_log.batches_done

    @property
    def train_log_step(self) -> int | None:
        """The minibatch count ("step") of the last training row written (None before the first)."""
        return self._train_log.last_row_step

    @property
    def train_log_row(self) -> dict[str, float]:
        """The values of the last training row written, e.g. ``{"train/loss_step": 0.41}``."""
        return self._train_log.last_row

    @property
    def progress_bar_values(self) -> dict[str, float]:
        """Those of :attr:`train_log_row` logged with ``prog_bar=True`` (shown by the progress bar)."""
        return self._train_log.last_row_bar

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    # -- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            return None
        return self.optimizer_factory(self.parameters())

    def ensure_finite(self, value: Tensor, what: str, step: int | None = None, epoch: int | None = None) -> None:
        """Raise :class:`NonFiniteError` naming ``what`` and the step (default: the current one) if ``value`` holds
        NaN or Inf."""
        # A scalar (the usual loss or norm) is read once with item(): one op rather than isfinite, all and bool.
        finite = math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())
        if not finite:
            raise NonFiniteError(
                f"{what} is not finite ({value.detach().float().flatten()[:4].tolist()}) at global step "
                f"{self.global_step if step is None else step}, epoch {self.current_epoch if epoch is None else epoch}. "
                f"Lower the learning rate, add gradient clipping (model.grad_clip_norm) or check the data; the last "
                f"good checkpoint and the logs are kept."
            )

    def defers_finite_checks(self) -> bool:
        """Whether :meth:`optimize` defers its finiteness check to :meth:`check_deferred_steps`: on an accelerator,
        where reading a value on the host waits for the device and so stops the host from queuing steps ahead."""
        return self.device.type != "cpu"

    def optimize(self, optimizer: torch.optim.Optimizer, loss: Tensor, what: str = "train/loss") -> None:
        """One guarded step: zero grads, backward, check the loss and the gradient norm, clip grads, step.

        On the CPU a non-finite loss or gradient norm raises :class:`NonFiniteError` before the optimizer steps,
        so the weights and the optimizer state stay those of the last good step. On an accelerator the values are
        kept on the device and checked together, with one host sync, at the end of the loader item (a block of
        minibatches), at the epoch's end and before a checkpoint is written: the run stops with the same error
        naming the first bad step, and no checkpoint holds a step at or after it.
        """
        optimizer.zero_grad(set_to_none=True)
        if self._plain_backward:
            self.backward(loss)  # what manual_backward reaches here, without two rounds of no-op hook dispatch
        else:
            self.manual_backward(loss)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # Under 16-mixed the gradients here are still multiplied by the GradScaler's scale (it unscales inside
        # optimizer.step), so clip at scale * max_norm; and an overflowing step is expected now and then: the
        # scaler skips it and lowers the scale, so a non-finite norm is only an error without a scaler.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if self.grad_clip_norm is not None:
            scale = float(scaler.get_scale()) if scaler is not None else 1.0  # a host read: only when clipping
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm * scale)
        else:
            # The same norm of the per-tensor norms, computed by fused foreach kernels rather than a Python loop.
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        norm = None if scaler is not None else norm
        if self.defers_finite_checks():
            self._unchecked_steps.append((what, self.global_step, self.current_epoch, loss.detach(), norm))
        else:
            # One read for both checks: a non-finite loss or norm makes their sum non-finite; the rare finite
            # sum that overflows is told apart by the checks themselves.
            check = loss.detach() if norm is None else loss.detach() + norm
            if not math.isfinite(check.item()):
                self.ensure_finite(loss, what)
                if norm is not None:
                    self.ensure_finite(norm, f"gradient norm of {what}")
        optimizer.step()

    def check_deferred_steps(self) -> None:
        """Check the losses and gradient norms that :meth:`optimize` deferred, with one host sync; raise
        :class:`NonFiniteError` naming the first non-finite one and its step."""
        steps, self._unchecked_steps = self._unchecked_steps, []
        if not steps:
            return
        values = torch.stack([v.float().reshape(()) for _, _, _, loss, norm in steps
                              for v in ((loss,) if norm is None else (loss, norm))])
        if bool(torch.isfinite(values).all()):
            return
        for what, step, epoch, loss, norm in steps:
            self.ensure_finite(loss, what, step, epoch)
            if norm is not None:
                self.ensure_finite(norm, f"gradient norm of {what}", step, epoch)

    def on_fit_start(self) -> None:
        # Lightning dispatches on_before_backward/on_after_backward to every callback and the module at every
        # optimizer step, each call with its bookkeeping; skipped when the dispatch would reach no implementation.
        self._plain_backward = plain_backward_applies(self.trainer, self)

    # -- training: blocks of minibatches ---------------------------------------------------------
    def train_step(self, batch: tuple[Tensor, ...]) -> None:
        """The optimizer steps and training metrics of one minibatch; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} implements no train_step")

    def training_step(self, batch: Block | tuple[Tensor, ...], batch_idx: int) -> None:
        """Run :meth:`train_step` on each minibatch of ``batch``, stopping exactly when ``trainer.max_steps`` is met."""
        log = self._train_log
        log.start_item(self.current_epoch)
        max_steps = self.trainer.max_steps
        for minibatch in batch.minibatches() if isinstance(batch, Block) else (batch,):
            if 0 <= max_steps <= self.global_step:  # Lightning checks only between items
                break
            every = self.log_every_n_minibatches
            log.start_batch(self.trainer.log_every_n_steps if every is None else every)
            self.train_step(minibatch)
            log.end_batch(self.loggers, self.current_epoch)
        self.check_deferred_steps()  # before the item's end, where checkpoints are written

    def train_metrics_due(self) -> bool:
        """Whether the current minibatch's training values are used: a logging step, or the epoch's first.

        A model whose metrics cost to compute may log only then (the GAN does); its epoch means then average those
        minibatches. Others log every minibatch.
        """
        return self._train_log.row_due or self._train_log.epoch_batches == 0

    def on_train_epoch_end(self) -> None:
        self.check_deferred_steps()
        for means, total, prog_bar in self._train_log.take_epoch_means():
            # Synced: under DDP the epoch means are over every rank's minibatches, as in one process.
            self.log_dict(means, on_step=False, on_epoch=True, prog_bar=prog_bar, sync_dist=True, batch_size=total)
            # As for a metric Lightning logs per step and per epoch, callback_metrics (and metrics.json) also hold
            # the epoch value under the plain name, and the last step value; the loggers have those already.
            plain = {k.removesuffix("_epoch"): v for k, v in means.items() if k.endswith("_epoch")}
            self.log_dict(plain, on_step=False, on_epoch=True, logger=False, sync_dist=True, batch_size=total)
        last = {k: v for k, v in self._train_log.last_row.items() if k.endswith("_step")}
        if last:
            self.log_dict(last, on_step=False, on_epoch=True, logger=False, sync_dist=False, batch_size=1)
        self._log_x_axis("train", self._train_log.batches_done)

    def _log_x_axis(self, stage: str, step: int) -> None:
        # A logged "step" is the x value Lightning gives the loggers for the row (its own count is of loader
        # items, i.e. of blocks); with it, Lightning adds no "epoch", so that is logged too.
        for key, value in (("step", max(step, 0)), ("epoch", self.current_epoch)):
            metric = self.x_axis[f"{stage}_{key}"]
            metric.update(value)
            self.log(key, metric, on_step=False, on_epoch=True)

    # -- evaluation ---------------------------------------------------------------------------
    def log_stage(self, stage: str, metrics: dict[str, Tensor], batch_size: int, **kwargs: Any) -> None:
        """Log ``metrics`` as ``<stage>/<name>``: training values through the base's log (see the class), others
        averaged over the epoch by Lightning and synced across processes."""
        logged = {f"{stage}/{k}": v for k, v in metrics.items()}
        if stage == "train" and kwargs.get("on_step") and kwargs.get("on_epoch") and set(kwargs) <= TRAIN_LOG_ARGS:
            self._train_log.record(logged, batch_size, **kwargs)
            return
        # A float count: Lightning averages the ranks' summed batch sizes in the tensor's own dtype, so an integer
        # count truncates (143 images on 2 ranks: 71, not 71.5) and biases the mean of uneven DDP shards.
        self.log_dict(logged, batch_size=float(batch_size), sync_dist=stage != "train", **kwargs)
        if stage in ("val", "test"):
            # Lightning writes validation rows before counting the item just trained, and test rows after.
            self._log_x_axis(stage, self._train_log.batches_done - (stage == "val"))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log_stage("val", self.evaluate(x, y), batch_size=x.shape[0], prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log_stage("test", self.evaluate(x, y), batch_size=x.shape[0])

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_deferred_steps()  # raising here keeps the file unwritten
        checkpoint["genlab"] = {
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.run_config,
            "train_log": self._train_log.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming a fit continues the step count and the epoch sums; testing a checkpoint keeps this run's count.
        state = (checkpoint.get("genlab") or {}).get("train_log")
        if state is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            self._train_log.load_state_dict(state)
