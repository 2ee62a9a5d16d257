"""SIGINT / SIGTERM during training: finish the batch, save ``checkpoints/last.ckpt``, stop with a resume hint.

Lightning alone turns Ctrl+C into a KeyboardInterrupt (exit 1, nothing saved unless a callback saves on
exception) and SIGTERM into a stop at the next batch end (exit 0, nothing saved). With this callback both
signals stop at the next batch end (or at the end of the validation epoch they arrive in, or of the epoch of a
stage inside a hook such as VaDE's pretraining: genlab/callbacks/stage_epoch.py), write the same
``last.ckpt`` that ``ckpt_path=last`` resumes from, and end the run with :class:`Interrupted`, which
``python -m genlab`` reports in one line with exit code 128 + the signal number (130 for SIGINT, 143 for
SIGTERM). A second Ctrl+C while the batch finishes aborts at once, as Python does by default.

Under DDP the ranks agree before they stop: at each of those points every rank all-reduces the signal it has seen
(the largest signal number, 0 for none), so all ranks stop at the same batch end and save the one checkpoint
together, whichever rank (or node) the signal reached first. A rank that stopped alone would wait in the
checkpoint's barrier while the others wait in the next batch's gradient all-reduce (a hang, or mismatched
collectives). The handlers replace Lightning's SIGTERM notifier, which does this for SIGTERM from rank 0 alone.
"""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig

from genlab.checkpoints import LastCheckpoint
from genlab.checks import one_of

SIGNALS = ("SIGINT", "SIGTERM")


class Interrupted(Exception):
    """The run was stopped by a signal after its checkpoint was saved; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        # A joblib/submitit job returns its exception pickled: keep exit_code (the default drops it and fails).
        return (type(self), (str(self), self.exit_code))


def resume_command(run_dir: Path) -> str:
    """The command that resumes this Hydra run: its own overrides plus ``ckpt_path=last`` and its run folder.

    ``run_dir`` is used outside Hydra; under Hydra the run's output folder is.
    """
    overrides: list[str] = []
    if HydraConfig.initialized():
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        overrides = [
            o for o in HydraConfig.get().overrides.task
            if not o.startswith(("ckpt_path=", "hydra.run.dir=", "+ckpt_path="))
        ]
    words = ["python", "-m", "genlab", *overrides, "ckpt_path=last", f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(w) for w in words)


class InterruptCheckpoint(L.Callback):
    """Turns SIGINT/SIGTERM into: save ``<dirpath>/<filename>.ckpt`` at the next batch end, raise :class:`Interrupted`."""

    def __init__(self, dirpath: str, filename: str = "last", signals: list[str] | tuple[str, ...] = SIGNALS) -> None:
        super().__init__()
        for name in signals:
            one_of("signals", name, SIGNALS)
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    # -- signal handlers ------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only record it: saving here could interrupt an optimizer step or a checkpoint write half-way.
        self.received = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C aborts at once

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python allows signal handlers only in the main thread
        for name in self.signals:
            signum = getattr(signal, name)
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # -- Lightning hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its own SIGTERM notifier (Trainer._run), so these handlers replace it.
        self.received = None
        self._install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # After the epoch's last item the stop waits for the validation end: Lightning resumes a checkpoint written
        # here by skipping that validation (with blocks of batches, every epoch of one item ends so).
        if not trainer.is_last_batch:
            self._stop_if_signalled(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._stop_if_signalled(trainer)

    def on_stage_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, epoch: int) -> None:
        # A stage inside a hook (VaDE's pretraining) has no batch hooks: its epoch ends are the stop points.
        self._stop_if_signalled(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        self._stop_if_signalled(trainer)  # a signal after the last batch's check: stop before the test stage

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def agreed_signal(self, trainer: L.Trainer) -> int | None:
        """The signal to stop for: this process's, or under DDP the largest any rank received (all ranks call this)."""
        if trainer.world_size == 1:
            return self.received
        seen = torch.tensor(self.received or 0, device=trainer.strategy.root_device)
        agreed = int(trainer.strategy.reduce(seen, reduce_op="max"))
        return agreed or None

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        signum = self.agreed_signal(trainer)
        if signum is None:
            return
        self.received = signum
        name = signal.Signals(self.received).name
        # Atomically, like every last.ckpt: a second signal (or a kill) while writing keeps the previous one.
        LastCheckpoint(self.dirpath, filename=self.filename).save(trainer)
        trainer.strategy.barrier("interrupt")  # rank zero has renamed the file into place before any rank reports it
        self._restore()
        run_dir = self.dirpath.parent
        raise Interrupted(
            f"stopped by {name} at global step {trainer.global_step} (epoch {trainer.current_epoch}); saved "
            f"{self.ckpt_path}. Resume with: {resume_command(run_dir)}",
            exit_code=128 + self.received,
        )
