"""Checkpoints that resume exactly and load safely: global RNG states in the checkpoint, ``weights_only`` loading.

What a Lightning 2.6 checkpoint of a genlab run already holds: the model ``state_dict``, every optimizer's state
(both GAN optimizers), the schedulers, the loop progress (epoch, global step, batches done in the epoch), the
stateful train loader's position (``InMemoryLoader.state_dict``: epoch and batches served, so the data order
continues) and the callbacks' states. What it does not hold are the global torch / NumPy / Python RNG states,
which VAE reparametrisation and GAN noise draw from: :class:`ResumableRNG` adds them. And Lightning gives the
loader its saved position back only when it resumes inside an epoch: from a checkpoint written at an epoch end
(the ``last.ckpt`` of a finished run) the rebuilt loader would start over at epoch 0, and under
``limit_train_batches`` < 1 the saved position is inside an epoch Lightning has finished. :class:`LoaderEpoch`
tells the loader the trainer's epoch at every epoch start, which is right in both cases. :class:`RunClock` adds the
seconds the run has spent so far, so that a resumed run's cost (``provenance.earlier``) is all of it.

Several processes (DDP): Lightning seeds every rank alike, so :class:`ResumableRNG` moves each rank r > 0 to
streams of its own (:func:`seed_rank_streams`), and its checkpoints hold every rank's states, each restored on its
own rank.
"""

from __future__ import annotations

import os
import pickle
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from genlab.checks import ConfigError, positive_int
from genlab.data.seeding import Stream, derive_seed


class CheckpointError(ConfigError):
    """A checkpoint file is missing, unreadable, or not a genlab checkpoint; the message says which and why."""


def rng_states() -> dict[str, Any]:
    """The global torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain data (``weights_only``-safe)."""
    _, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # NumPy's MT19937 state: the 624 key words travel as an int64 tensor (ndarrays need weights_only=False).
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gauss)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states :func:`rng_states` returned; CUDA states only when the device count matches."""
    torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npy = states["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def seed_rank_streams(rank: int, step: int = 0) -> None:
    """Re-seed the global torch (CPU and every CUDA device), NumPy and Python RNGs from (run seed, ``rank``, ``step``).

    The run seed is ``torch.initial_seed()``, which Lightning set alike on every rank. Rank r > 0 thus draws its own
    reparameterization noise, GAN latents and DataLoader binarization bits instead of rank 0's (which would make
    the ranks' noise identical, and the effective batch of a GAN's generator that of one rank). Rank 0 is not
    called, so a one-process run keeps its streams; evaluation and picture noise come from their own seeded
    generators and stay the same on every rank.
    """
    seed = derive_seed(Stream.RANK, torch.initial_seed(), rank, step)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def gather_rng_states(trainer: L.Trainer) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_states`, in rank order (a collective: all ranks call it); this rank's alone outside DDP."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        ranks: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(ranks, rng_states())
        return ranks
    return [rng_states()]


class ResumableRNG(L.Callback):
    """Per-rank RNG streams under DDP, and the global RNG states in every checkpoint, restored when training resumes.

    At setup (after Lightning seeded every rank alike) rank r > 0 moves to streams of its own
    (:func:`seed_rank_streams`). The states are captured when a checkpoint is written (after the optimizer step of
    its batch), every rank's under DDP, and put back in ``on_train_start``: after Lightning has restored the model,
    optimizers, loops and loader position, and after anything that runs between the restore and the first
    training batch, so the resumed run draws the same numbers for the next batch as the uninterrupted run did, on
    every rank. A checkpoint of another process count gives each rank rank 0's states, moved to the rank's own
    streams again (the run continues, but not exactly as it would have).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank > 0:
            seed_rank_streams(trainer.global_rank)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # After state_dict(), within the same save: every rank's states ("rng" stays rank 0's, as before).
        if trainer.world_size > 1:
            checkpoint["callbacks"][self.state_key]["ranks"] = gather_rng_states(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None or self._pending.get("rng") is None:
            return
        ranks, rank = self._pending.get("ranks"), trainer.global_rank
        if ranks is not None and len(ranks) == trainer.world_size:
            set_rng_states(ranks[rank])
        else:
            set_rng_states(self._pending["rng"])
            if rank > 0:
                seed_rank_streams(rank, trainer.global_step)
        self._pending = None


class LoaderEpoch(L.Callback):
    """At every training epoch start, ``trainer.train_dataloader.set_epoch(trainer.current_epoch)`` when it has one.

    Lightning does not call this hook when it resumes inside an epoch, so a loaded mid-epoch position stays.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_epoch = getattr(trainer.train_dataloader, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(trainer.current_epoch)


class RunClock(L.Callback):
    """The wall and CPU seconds of a run's processes up to each of its checkpoints, kept in the checkpoint.

    ``state_dict`` (written into every checkpoint) is the time of the earlier processes, restored from the checkpoint
    this process resumed from (``earlier``), plus this process's since :func:`genlab.provenance.start`. Time a process
    spent after its last checkpoint is lost with it: its work is done again, and counted then.
    """

    def __init__(self, started: dict[str, Any]) -> None:
        self.started = started
        self.earlier = {"wall_s": 0.0, "cpu_s": 0.0, "processes": 0}

    def state_dict(self) -> dict[str, Any]:
        return {"wall_s": self.earlier["wall_s"] + time.perf_counter() - self.started["wall"],
                "cpu_s": self.earlier["cpu_s"] + time.process_time() - self.started["cpu"],
                "processes": self.earlier["processes"] + 1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier = {k: state_dict[k] for k in ("wall_s", "cpu_s", "processes")}


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` the latest state: at every training epoch end and every N optimizer steps.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` refreshes last.ckpt only in the steps where it also saves
    a top-k checkpoint, so after an epoch that did not improve, last.ckpt lags behind. This one always writes,
    and atomically (a temporary file renamed over the old one), so a run killed while saving keeps its previous
    last.ckpt intact. As a ``Checkpoint`` it runs after the module's ``on_train_epoch_end`` (schedulers stepped).
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0, filename: str = "last") -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = positive_int("every_n_train_steps", every_n_train_steps, allow_zero=True)
        self.filename = filename
        self._saved_at: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    def save(self, trainer: L.Trainer) -> None:
        """Write the trainer's full state to :attr:`path` through a temporary file (all ranks must call this)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; collective: rank zero writes, all wait
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
            for logger in trainer.loggers:
                logger.save()  # the rows logged up to this state reach disk too, so a killed run keeps them
        self._saved_at = trainer.global_step

    def _active(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and not trainer.fast_dev_run

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Steps since the last save, not global_step % N: a GAN batch advances global_step by 2, a block of
        # data.steps_per_block batches by several; the save lands at the end of the loader item (a resume point).
        # Not after the epoch's last item: Lightning resumes a checkpoint written there by skipping the rest of the
        # epoch (its validation, whose draws the global RNG then misses); the epoch-end save follows anyway.
        since = trainer.global_step - (self._saved_at or 0)
        if (self.every_n_train_steps and self._active(trainer) and since >= self.every_n_train_steps
                and not trainer.is_last_batch):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer):
            self.save(trainer)

    def on_stage_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, epoch: int) -> None:
        """After each epoch of a stage inside a hook (genlab/callbacks/stage_epoch.py): a run killed in a
        pretraining of many minutes resumes from its last epoch."""
        if self._active(trainer):
            self.save(trainer)


def load_genlab_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a genlab checkpoint on the CPU with ``weights_only=True``; a CheckpointError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt={str(path)!r}: no such file. Pass a .ckpt from a run's checkpoints/ folder.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"ckpt={str(path)!r} cannot be read as a PyTorch checkpoint ({first}). The file may be truncated "
            f"(a run killed while writing it) or not a checkpoint at all."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"ckpt={str(path)!r} is not a Lightning checkpoint: it has no 'state_dict'.")
    meta = checkpoint.get("genlab")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"ckpt={str(path)!r} is not a genlab checkpoint: it has no 'genlab' entry with the run config "
            f"(checkpoints written by `python -m genlab` have one)."
        )
    return checkpoint
