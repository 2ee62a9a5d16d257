"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with ckpt_path=last ends where an uninterrupted
run ends (weights, both GAN optimizers, metrics), and genlab checkpoints load with ``weights_only=True``."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from batch_recorder import BatchRecorder
from conftest import read_metrics
from handshake import children, handshake_overrides, release, start_cli, wait_until_ready
from resume_checks import assert_same_run, csv_rows, final_state

from genlab.checkpoints import (
    CheckpointError,
    LastCheckpoint,
    LoaderEpoch,
    load_genlab_checkpoint,
    rng_states,
    set_rng_states,
)
from genlab.data.tensor_loader import InMemoryLoader
from genlab.loggers.csv_history import merge_rows, row_key

STEPS_PER_BATCH = {"ae": 1, "gan": 2, "vae": 1, "iwae": 1}  # global_step counts optimizer steps: a GAN batch has 2
MIN_BATCHES_PER_EPOCH = 8  # ring8: 2048 / 256 = 8; digits: ceil(1294 / 128) = 11
COMMON = ["trainer.deterministic=true", "trainer.enable_progress_bar=false", "logger=csv",
          "callbacks.last_checkpoint.every_n_train_steps=3"]
# Models that share a data set, and the overrides of all their runs (killed, finished, resumed, uninterrupted).
GROUPS = {
    # The AE (no randomness in training) and the GAN (noise from the global RNG, two optimizers).
    "ring8": (["ae", "gan"], ["data=ring8", "data.n_train=2048", "data.n_val=256", "data.n_test=256",
                              "data.batch_size=256"]),
    # The VAE and the IWAE (reparameterisation noise) with a learning rate halved every epoch by a scheduler.
    # ++: a sweep's first composition has the default model, which lacks these keys.
    "digits": (["vae", "iwae"], ["data=digits", "++model.lr_schedule=step", "++model.lr_decay=0.5",
                                 "++model.lr_decay_every=1", "++model.eval_k=10"]),
}
GROUP_OF = {model: group for group, (models, _) in GROUPS.items() for model in models}


def test_killed_and_finished_runs_resume_to_the_uninterrupted_result(tmp_path):
    """A run SIGKILLed mid-epoch, and a finished 1-epoch run, both resumed with ckpt_path=last to 2 epochs, end
    where a 2-epoch run ends; the continued run's metrics.csv keeps the first epoch's rows.

    (Before LoaderEpoch, the continued loader served epoch 0's order again: the VAE's val/loss 29.28732 instead
    of 29.30327; every model here then failed the weight comparison.)
    """
    # One sweep per model runs, in sweep/<model>/<job>: a 1-epoch run (job 0), the uninterrupted 2-epoch
    # reference (1) and the run to kill (2). Every job has a handshake at the first batch after the first step
    # checkpoint (every 3 steps, inside epoch 0); jobs 0 and 1 find their go file and run through, job 2 waits
    # there and the sweep is SIGKILLed: no cleanup runs.
    sweep, hold = tmp_path / "sweep", tmp_path / "hold"
    finished, reference, killed = ({m: sweep / m / job for m in GROUP_OF} for job in ("0", "1", "2"))
    with children() as procs:
        for m in GROUP_OF:
            for job in ("0", "1"):
                (hold / m / job).mkdir(parents=True)
                release(hold / m / job)
            procs[m] = start_cli("-m", f"model={m}", *GROUPS[GROUP_OF[m]][1], *COMMON, "trainer.max_epochs=1,2,2",
                                 *handshake_overrides(hold / m / "${hydra:job.num}", at_step=3),
                                 f"hydra.sweep.dir={sweep / m}", log=tmp_path / f"{m}.log")
        held_at = wait_until_ready({m: hold / m / "2" for m in GROUP_OF}, procs.values())
        for child in procs.values():
            child.proc.send_signal(signal.SIGKILL)
        for m, child in procs.items():
            output = child.finish()
            assert child.proc.returncode == -signal.SIGKILL, (m, output[-3000:])
    for m in GROUP_OF:
        state = load_genlab_checkpoint(killed[m] / "checkpoints" / "last.ckpt")
        loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
        # The premise: the run died mid-way through its first epoch, at the state of its step checkpoint.
        batches = state["global_step"] // STEPS_PER_BATCH[m]
        assert state["global_step"] == held_at[m] and state["epoch"] == 0 and 0 < batches < MIN_BATCHES_PER_EPOCH
        assert (loader["epoch"], loader["batches_served"]) == (0, batches)
        assert not (killed[m] / "metrics.json").exists()
        assert read_metrics(finished[m])["model"] == read_metrics(reference[m])["model"] == m  # the others ended

    # The same overrides + ckpt_path=last, one sweep per data set, continue the 1-epoch runs and resume the killed
    # runs in their folders (tags name the job folder).
    with children() as procs:
        for group, (models, overrides) in GROUPS.items():
            procs[group] = start_cli("-m", f"model={','.join(models)}", *overrides, *COMMON, "trainer.max_epochs=2",
                                     "ckpt_path=last", "tags=[0],[2]", f"hydra.sweep.dir={sweep}",
                                     "hydra.sweep.subdir=${hydra:runtime.choices.model}/${tags.0}",
                                     log=tmp_path / f"{group}_resume.log")
        for group, child in procs.items():
            output = child.finish()
            assert child.proc.returncode == 0, (group, output[-3000:])
    for m in GROUP_OF:
        assert_same_run(killed[m], reference[m], m, 2 * MIN_BATCHES_PER_EPOCH, epoch=1, stopped_in=(0,))
        assert_same_run(finished[m], reference[m], m, 2 * MIN_BATCHES_PER_EPOCH, epoch=1)
        # The cost of a resumed run counts its first process up to the checkpoint it resumed from.
        prov = [json.loads((run / "metrics.json").read_text())["provenance"] for run in (killed[m], finished[m])]
        assert [p["earlier"]["processes"] for p in prov] == [1, 1], m
        assert all(p["earlier"]["wall_s"] > 0 and p["earlier"]["cpu_s"] > 0 for p in prov), m
        assert "earlier" not in json.loads((reference[m] / "metrics.json").read_text())["provenance"]
    # The scheduler ran through the resume: two epochs of halving.
    vae = final_state(killed["vae"])
    assert vae["lr_schedulers"] and vae["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 4)
    rows = csv_rows(finished["vae"])
    assert {float(row["epoch"]) for row in rows if row["val/loss"]} == {0.0, 1.0}  # the premise: both epochs' rows


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    torch.save({"rng": rng_states()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"not a checkpoint", ["cannot be read", "truncated"]), (None, ["not a genlab checkpoint"])],
    ids=["garbage", "plain-lightning"],
)
def test_bad_checkpoints_fail_with_a_clear_message(tmp_path, content, words):
    path = tmp_path / "x.ckpt"
    if content is None:
        torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 0}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_genlab_checkpoint(path)
    for word in words:
        assert word in str(err.value)
    with pytest.raises(CheckpointError, match="no such file"):
        load_genlab_checkpoint(tmp_path / "missing.ckpt")


# -- the loader's epoch across a resume (in process, Lightning only) ------------------------------------------


class _Recorder(BatchRecorder):
    """A batch recorder with a validation step, as every genlab run has."""

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        pass


def _fit_recording(ckpt_dir: Path, loader_epoch: bool, ckpt_path: Path | None = None, **limits: float) -> list:
    """The batches one fit serves: 23 samples in batches of 5 (5 a full epoch), last.ckpt at every epoch end.

    With a validation loader, as every genlab run has (without one, Lightning 2.6 resuming a max_steps run at an
    epoch end trains one batch too many before it moves to the next epoch).
    """
    model = _Recorder()
    callbacks = [LastCheckpoint(ckpt_dir), *([LoaderEpoch()] if loader_epoch else [])]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, **limits)
    loader = InMemoryLoader((torch.arange(23),), batch_size=5, shuffle=True, seed=3)
    val = InMemoryLoader((torch.arange(4),), batch_size=4, shuffle=False, seed=3)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=val, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize("loader_epoch", [True, False], ids=["fix", "negative-control"])
@pytest.mark.parametrize(
    ("first", "total"),
    [
        ({"max_epochs": 1}, {"max_epochs": 3}),  # a finished run continued to more epochs
        # 3 of the 5 batches per epoch: the saved position is inside an epoch that Lightning has finished
        ({"max_epochs": 1, "limit_train_batches": 0.6}, {"max_epochs": 3, "limit_train_batches": 0.6}),
        # max_steps makes Lightning restore the loader's saved position even at an epoch end
        ({"max_steps": 3, "limit_train_batches": 0.6}, {"max_steps": 9, "limit_train_batches": 0.6}),
    ],
    ids=["epochs", "limit_train_batches", "max_steps"],
)
def test_resume_at_an_epoch_end_serves_the_next_epoch(tmp_path, first, total, loader_epoch):
    reference = _fit_recording(tmp_path / "reference", loader_epoch, **total)
    assert len(reference) == (15 if "limit_train_batches" not in total else 9)
    earlier = _fit_recording(tmp_path / "run", loader_epoch, **first)
    later = _fit_recording(tmp_path / "run", loader_epoch, ckpt_path=tmp_path / "run" / "last.ckpt", **total)
    if loader_epoch:
        assert earlier + later == reference
    elif "max_steps" in first:  # the restored position: the rest of epoch 0, which Lightning had finished
        assert earlier + later != reference and later[:2] == _epoch_batches(0)[3:]
    else:  # a rebuilt loader starts over: epoch 0 again
        assert earlier + later != reference and later[: len(earlier)] == earlier


def _epoch_batches(epoch: int) -> list[list[int]]:
    return [b[0].tolist() for b in InMemoryLoader((torch.arange(23),), 5, True, 3, epoch=epoch)]


def test_set_epoch_keeps_a_loaded_position_of_that_epoch_only():
    loader = InMemoryLoader((torch.arange(23),), batch_size=5, shuffle=True, seed=3)
    loader.load_state_dict({"epoch": 1, "batches_served": 2})
    loader.set_epoch(1)  # a resume inside epoch 1: the rest of epoch 1
    assert [b[0].tolist() for b in loader] == _epoch_batches(1)[2:]
    loader.load_state_dict({"epoch": 1, "batches_served": 2})
    loader.set_epoch(2)  # Lightning finished epoch 1 (limit_train_batches): epoch 2 from its start
    assert [b[0].tolist() for b in loader] == _epoch_batches(2)
    with pytest.raises(ValueError, match="epoch=-1"):
        loader.set_epoch(-1)


def test_resumed_csv_keeps_earlier_rows_but_not_redone_or_test_rows():
    history = [  # as read back from metrics.csv: strings, "" for a missing value
        {"epoch": "0", "step": "7", "train/loss_epoch": "2.5", "val/loss": "", "test/loss": ""},
        {"epoch": "0", "step": "9", "train/loss_epoch": "", "val/loss": "1.5", "test/loss": ""},  # logged after the
        {"epoch": "1", "step": "10", "train/loss_epoch": "", "val/loss": "", "test/loss": "1.4"},  # checkpoint
    ]
    logged = [{"epoch": 0, "step": 9, "val/loss": 1.5}, {"epoch": 1, "step": 19, "val/loss": 0.9}]
    assert merge_rows(history, logged) == [history[0], *logged]
    assert row_key(history[1]) == row_key(logged[0]) == (0, 9, frozenset({"val/loss"}))
