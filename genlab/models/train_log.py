"""Training metrics of a GenerativeModule: rows every N minibatches to the loggers, exact epoch sums, the step count.

Lightning counts loader items, and writes its training rows on the items its ``log_every_n_steps`` picks. With
blocks of several minibatches per item (``data.steps_per_block``) both would count blocks, so the module keeps the
count itself, in minibatches, and writes the rows of the minibatches that are due to the loggers through their
public ``log_metrics``. Its epoch sums reach Lightning once per epoch, so a block costs one tensor op per
minibatch for its metrics and no ``self.log`` call (each costs about as much as a small model's step on CPU).
The last row's values stay readable (:attr:`TrainLog.last_row`) for the progress bar and callbacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from lightning.pytorch.loggers import Logger
from torch import Tensor

GroupKey = tuple[tuple[str, ...], bool, bool]  # metric names, prog_bar, on_step


class AxisValue(torchmetrics.Metric):
    """The latest int given to ``update``: a row's "step" or "epoch", logged through Lightning as an int.

    Lightning turns a logged tensor into a float; a metric's computed value passes as it is, so the CSV keeps
    ``epoch`` an integer as in Lightning's own rows. The state is not saved in checkpoints.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("value", torch.tensor(0), dist_reduce_fx="max")

    def update(self, value: int) -> None:
        # A new tensor, not fill_: the state may have been reset inside an evaluation's inference mode.
        self.value = torch.tensor(value, device=self.value.device)

    def compute(self) -> Tensor:
        return self.value


class TrainLog:
    """Counts trained minibatches and keeps the training metrics between the points Lightning or the loggers see them.

    ``batches_done`` (the loggers' x axis) counts minibatches over the run; a minibatch whose 1-based count is a
    multiple of ``every`` writes a row ``{name_step: value, "epoch": e}`` at x = its 0-based count, which is where
    Lightning writes it with one batch per item. Epoch sums are batch-size weighted, so their means are those of
    every minibatch recorded. The whole state goes into checkpoints, so a resumed run logs what an uninterrupted
    one logs.
    """

    def __init__(self) -> None:
        self.batches_done = 0
        self.epoch = -1  # the epoch that epoch_batches counts in
        self.epoch_batches = 0
        self.row_due = False
        self.last_row_step: int | None = None
        self.last_row: dict[str, float] = {}  # the values of the last row written
        self.last_row_bar: dict[str, float] = {}  # those of them logged with prog_bar
        self._sums: dict[GroupKey, tuple[Tensor, int]] = {}
        self._row: dict[str, tuple[Tensor, bool]] = {}

    def start_item(self, epoch: int) -> None:
        """A loader item of ``epoch`` begins: the per-epoch count restarts when the epoch changed."""
        if epoch != self.epoch:
            self.epoch, self.epoch_batches = epoch, 0

    def start_batch(self, every: int) -> None:
        """A minibatch begins; its row is due when ``every`` > 0 divides its 1-based count."""
        self.row_due = every > 0 and (self.batches_done + 1) % every == 0

    def record(self, logged: dict[str, Any], batch_size: int, on_step: bool = False, on_epoch: bool = False,
               prog_bar: bool = False) -> None:
        """Add the minibatch's values to the epoch sums (``on_epoch``) and, on a due row, to the row (``on_step``)."""
        if on_epoch:
            first = next(iter(logged.values()))
            device = first.device if isinstance(first, Tensor) else None
            values = torch.stack([torch.as_tensor(v, device=device).detach().reshape(()).to(torch.get_default_dtype())
                                  for v in logged.values()])
            key = (tuple(logged), prog_bar, on_step)
            sums, total = self._sums.get(key, (None, 0))
            weighted = values * batch_size
            if sums is not None:
                # Sums restored from a checkpoint come back on the CPU (Lightning loads to the CPU), the values
                # of a resumed GPU run are on the GPU; .to is a no-op when they agree.
                weighted = sums.to(weighted.device) + weighted
            self._sums[key] = (weighted, total + batch_size)
        if on_step and self.row_due:
            suffix = "_step" if on_epoch else ""  # Lightning's names for values logged both per step and per epoch
            for name, value in logged.items():
                self._row[name + suffix] = (torch.as_tensor(value).detach(), prog_bar)

    def end_batch(self, loggers: Sequence[Logger], epoch: int) -> None:
        """Write the minibatch's row, if due, to every logger at x = its count; count the minibatch."""
        if self._row:
            self.last_row = {name: float(value) for name, (value, _) in self._row.items()}
            self.last_row_bar = {name: self.last_row[name] for name, (_, prog_bar) in self._row.items() if prog_bar}
            self.last_row_step = self.batches_done
            for logger in loggers:
                logger.log_metrics({**self.last_row, "epoch": epoch}, step=self.batches_done)
                logger.save()
            self._row = {}
        self.batches_done += 1
        self.epoch_batches += 1
        self.row_due = False

    def take_epoch_means(self) -> list[tuple[dict[str, Tensor], int, bool]]:
        """``(means, total batch size, prog_bar)`` per group of metrics recorded together; then start a new epoch."""
        out = []
        for (names, prog_bar, on_step), (sums, total) in self._sums.items():
            suffix = "_epoch" if on_step else ""
            out.append(({name + suffix: value for name, value in zip(names, sums / total)}, total, prog_bar))
        self._sums = {}
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain data and tensors (``weights_only``-safe)."""
        return {
            "batches_done": self.batches_done, "epoch": self.epoch, "epoch_batches": self.epoch_batches,
            "last_row_step": self.last_row_step, "last_row": self.last_row, "last_row_bar": self.last_row_bar,
            "sums": [[list(names), prog_bar, on_step, sums, total]
                     for (names, prog_bar, on_step), (sums, total) in self._sums.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_done, self.epoch = int(state["batches_done"]), int(state["epoch"])
        self.epoch_batches, self.last_row_step = int(state["epoch_batches"]), state.get("last_row_step")
        self.last_row, self.last_row_bar = dict(state.get("last_row", {})), dict(state.get("last_row_bar", {}))
        self._sums = {(tuple(names), bool(prog_bar), bool(on_step)): (sums, int(total))
                      for names, prog_bar, on_step, sums, total in state["sums"]}
