"""``on_stage_epoch_end``: the hook of an epoch of a stage that runs inside one of Lightning's hooks.

VaDE's pretraining stage (genlab/models/vade_pretrain.py) trains for many minutes inside ``on_train_epoch_start``,
where no batch hook fires: without this hook a SIGTERM waits for the whole stage, and a run killed half-way loses
all of it. At the end of each of the stage's epochs the module is in a state a checkpoint can resume (its progress
goes into the checkpoint through the module's ``on_save_checkpoint``), so the stage calls :func:`stage_epoch_end`,
and the callbacks that save (``LastCheckpoint``) or stop on a signal (``InterruptCheckpoint``) act there as they do
at a batch end. Every rank must call it at the same epochs: those callbacks save and agree collectively.
"""

from __future__ import annotations

import lightning as L


def stage_epoch_end(trainer: L.Trainer, pl_module: L.LightningModule, stage: str, epoch: int) -> None:
    """Call ``callback.on_stage_epoch_end(trainer, pl_module, stage, epoch)`` of every callback that defines it,
    in the trainer's order (Lightning puts checkpoint callbacks last)."""
    for callback in trainer.callbacks:
        hook = getattr(callback, "on_stage_epoch_end", None)
        if callable(hook):
            hook(trainer, pl_module, stage, epoch)
